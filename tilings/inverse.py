"""Inverse geometry: target -> the exact image size that makes the processor pick it; crops or tokens -> targets."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

from tilesweep.errors import UsageError
from tilings.profiles import Profile
from tilings.registry import get_profile
from tilings.scheme import BUDGET, Scheme
from tilings.types import Tiling


def as_tiling(tiling: Tiling | Sequence[int], profile: Profile) -> Tiling:
    """`tiling` as a `Tiling`, checked against a Molmo profile's crop limit.

    Raises:
        UsageError: not a pair of positive integers, or more crops than `profile.max_crops`.
    """
    return profile.check_target(tiling)


def resolution_for(tiling: Tiling | Sequence[int], profile: Scheme | str) -> tuple[int, int]:
    """(height, width) of an image that the processor turns into exactly `tiling`.

    For a Molmo profile it is the tiling's own canvas, ``(rows*W + M, cols*W + M)``;
    every scheme documents its own (`tilings.scheme.Scheme.resolution_for`).

    Raises:
        UsageError: a malformed or unreachable target, or an unknown profile.
    """
    scheme = get_profile(profile)
    if isinstance(tiling, str) or not isinstance(tiling, Sequence) or len(tiling) != 2:
        raise UsageError(f"a tiling is a pair (rows, cols) of positive integers, got {tiling!r}")
    return scheme.resolution_for(Tiling(*tiling))


def crop_counts(profile: Scheme | str) -> list[int]:
    """Crop counts (global view included) that some target reaches, ascending (budget schemes: ``[1]``)."""
    scheme = get_profile(profile)
    if scheme.kind == BUDGET:
        return [1]
    return sorted({scheme.target_geometry(t).crops for t in scheme.targets()})


def crop_range(profile: Scheme | str) -> range:
    """From the fewest to the most crops (global view included) a target reaches; Molmo: 2 .. max_crops + 1."""
    counts = crop_counts(profile)
    return range(counts[0], counts[-1] + 1)


def tilings_for_crops(n: int, profile: Scheme | str) -> list[Tiling]:
    """Every target giving `n` crops (the global view included), fewest rows first.

    Raises:
        UsageError: `n` is not an integer or no target gives it (budget schemes have no crops to choose).
    """
    scheme = get_profile(profile)
    reach = crop_range(scheme)
    if scheme.kind == BUDGET:
        raise UsageError(f"profile {scheme.name!r} resizes to a pixel budget and has no crops to choose; "
                         "pick token counts instead (--tokens), or a grid scheme")
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise UsageError(
            f"crop count must be an integer from {reach.start} to {reach.stop - 1} with profile {scheme.name!r}, "
            f"got {n!r} ({type(n).__name__})"
        )
    n = int(n)
    found = sorted((t for t in scheme.targets() if scheme.target_geometry(t).crops == n),
                   key=lambda t: (t.rows, t.cols))
    if not found:
        counts = crop_counts(scheme)
        reachable = (f"run from {reach.start} to {reach.stop - 1}" if counts == list(reach)
                     else f"are {', '.join(map(str, counts))}")
        raise UsageError(f"crop count {n} is unreachable with profile {scheme.name!r}; crop counts (global crop "
                         f"included) {reachable}")
    return found


def tilings_for_tokens(n: int, profile: Scheme | str) -> list[Tiling]:
    """Every target whose image tokens are exactly `n`, fewest rows first.

    Budget schemes: the token grids ``a x b`` with ``a*b == n`` that the budget admits.

    Raises:
        UsageError: `n` is not a positive integer, or no target gives it.
    """
    scheme = get_profile(profile)
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise UsageError(f"a token count must be a positive integer, got {n!r}")
    n = int(n)
    if scheme.kind == BUDGET:
        found = [Tiling(a, n // a) for a in range(1, n + 1) if n % a == 0 and scheme.is_reachable(Tiling(a, n // a))]
    else:
        found = sorted((t for t in scheme.targets() if scheme.target_geometry(t).image_tokens == n),
                       key=lambda t: (t.rows, t.cols))
    if not found:
        raise UsageError(f"no target of profile {scheme.name!r} gives exactly {n} image tokens; "
                         "`tilesweep plan --profile NAME --family all` lists the token counts it reaches")
    return found
