"""Families of targets to sweep, per scheme: grid schemes' 1xk, 2xk, kx1, all; budget schemes' token-grid families."""

from __future__ import annotations

from collections.abc import Iterable

from tilesweep.errors import UsageError
from tilings.registry import PROFILES, get_profile
from tilings.scheme import Scheme
from tilings.types import Tiling

# Every family some registered scheme knows, grid families first.
FAMILIES: tuple[str, ...] = tuple(dict.fromkeys(f for s in PROFILES.values() for f in s.families))


def parse_families(families: Iterable[str] | str, profile: Scheme | str | None = None) -> list[str]:
    """Family names from an iterable or a comma-separated string, checked, in order, without repeats.

    Raises:
        UsageError: a name unknown to `profile` (or to every scheme, without one), or none at all.
    """
    known = get_profile(profile).families if profile is not None else FAMILIES
    if isinstance(families, str):
        families = families.split(",")
    names: list[str] = []
    for raw in families:
        name = str(raw).strip()
        if name not in known:
            where = f" (profile {get_profile(profile).name!r})" if profile is not None else ""
            raise UsageError(f"unknown tiling family {raw!r}; known families: {', '.join(known)}{where}")
        if name not in names:
            names.append(name)
    if not names:
        raise UsageError(f"no tiling family given; pick from {', '.join(known)}")
    return names


def enumerate_tilings(profile: Scheme | str, families: Iterable[str] | str | None = None) -> list[tuple[Tiling, str]]:
    """(target, family) for every target of the families, in family order, each target once.

    A target in several families (1x1 is in all the grid families, 2x1 in 2xk and
    kx1) is listed once, under the first family given that holds it. No families:
    the scheme's defaults.

    Raises:
        UsageError: an unknown profile or family.
    """
    scheme = get_profile(profile)
    names = parse_families(scheme.default_families if families is None else families, scheme)
    seen: set[Tiling] = set()
    out: list[tuple[Tiling, str]] = []
    for family in names:
        for tiling in scheme.family_tilings(family):
            if tiling not in seen:
                seen.add(tiling)
                out.append((tiling, family))
    return out
