"""Inverse geometry: tiling -> the exact image size that makes the processor pick it; crops -> tilings."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

from tilesweep.errors import UsageError
from tilings._checks import check_positive_int
from tilings.geometry import canvas_for
from tilings.profiles import Profile, get_profile
from tilings.select import candidate_tilings
from tilings.types import Tiling


def as_tiling(tiling: Tiling | Sequence[int], profile: Profile) -> Tiling:
    """`tiling` as a `Tiling`, checked against the profile's crop limit.

    Raises:
        UsageError: not a pair of positive integers, or more crops than `profile.max_crops`.
    """
    if isinstance(tiling, str) or not isinstance(tiling, Sequence) or len(tiling) != 2:
        raise UsageError(f"a tiling is a pair (rows, cols) of positive integers, got {tiling!r}")
    rows = check_positive_int("tiling rows", tiling[0])
    cols = check_positive_int("tiling cols", tiling[1])
    if rows * cols > profile.max_crops:
        raise UsageError(
            f"tiling {rows}x{cols} has {rows * cols} crops, over profile {profile.name!r}'s max_crops "
            f"{profile.max_crops}; pick rows*cols in 1..{profile.max_crops}"
        )
    return Tiling(rows, cols)


def resolution_for(tiling: Tiling | Sequence[int], profile: Profile | str) -> tuple[int, int]:
    """(height, width) of an image that the processor tiles exactly as `tiling`, with no resizing.

    It is the tiling's own canvas, ``(rows*W + M, cols*W + M)``: there the tiling
    needs a scale of exactly 1, and every other tiling either down-scales or needs
    more crops (the processor prefers fewer crops on a tie).

    Raises:
        UsageError: a malformed tiling, one over `max_crops`, or an unknown profile.
    """
    profile = get_profile(profile)
    return canvas_for(as_tiling(tiling, profile), profile)


def crop_range(profile: Profile) -> range:
    """Crop counts (global crop included) that some tiling reaches: 2 .. max_crops + 1."""
    return range(2, profile.max_crops + 2)


def tilings_for_crops(n: int, profile: Profile | str) -> list[Tiling]:
    """Every tiling giving `n` crops (the global crop included), fewest rows first.

    Raises:
        UsageError: `n` outside ``2 .. max_crops + 1`` or not an integer, or an unknown profile.
    """
    profile = get_profile(profile)
    reach = crop_range(profile)
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise UsageError(
            f"crop count must be an integer from {reach.start} to {reach.stop - 1} with profile {profile.name!r}, "
            f"got {n!r} ({type(n).__name__})"
        )
    n = int(n)
    if n not in reach:
        raise UsageError(
            f"crop count {n} is unreachable with profile {profile.name!r}; crop counts (global crop included) "
            f"run from {reach.start} to {reach.stop - 1}"
        )
    return [t for t in candidate_tilings(profile.max_crops) if t.rows * t.cols == n - 1]
