"""Families of tilings to sweep: one row of k crops, two rows, one column, or all of them."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from tilesweep.errors import UsageError
from tilings.profiles import Profile, get_profile
from tilings.select import candidate_tilings
from tilings.types import Tiling

FAMILIES: tuple[str, ...] = ("1xk", "2xk", "kx1", "all")

_MEMBERS: dict[str, Callable[[int], list[Tiling]]] = {
    "1xk": lambda m: [Tiling(1, k) for k in range(1, m + 1)],
    "2xk": lambda m: [Tiling(2, k) for k in range(1, m // 2 + 1)],
    "kx1": lambda m: [Tiling(k, 1) for k in range(1, m + 1)],
    # Every rows x cols <= max_crops, in the processor's candidate order.
    "all": lambda m: list(candidate_tilings(m)),
}
assert set(_MEMBERS) == set(FAMILIES)


def parse_families(families: Iterable[str] | str) -> list[str]:
    """Family names from an iterable or a comma-separated string, checked, in order, without repeats.

    Raises:
        UsageError: an unknown family name, or none at all.
    """
    if isinstance(families, str):
        families = families.split(",")
    names: list[str] = []
    for raw in families:
        name = str(raw).strip()
        if name not in _MEMBERS:
            raise UsageError(f"unknown tiling family {raw!r}; known families: {', '.join(FAMILIES)}")
        if name not in names:
            names.append(name)
    if not names:
        raise UsageError(f"no tiling family given; pick from {', '.join(FAMILIES)}")
    return names


def enumerate_tilings(profile: Profile | str, families: Iterable[str] | str = ("1xk", "2xk", "kx1")) -> list[tuple[Tiling, str]]:
    """(tiling, family) for every tiling of the families, in family order, each tiling once.

    A tiling in several families (1x1 is in all of them, 2x1 in 2xk and kx1) is
    listed once, under the first family given that holds it.

    Raises:
        UsageError: an unknown profile or family.
    """
    profile = get_profile(profile)
    seen: set[Tiling] = set()
    out: list[tuple[Tiling, str]] = []
    for family in parse_families(families):
        for tiling in _MEMBERS[family](profile.max_crops):
            if tiling not in seen:
                seen.add(tiling)
                out.append((tiling, family))
    return out
