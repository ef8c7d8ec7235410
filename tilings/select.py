"""`select_tiling`: the tiling a grid scheme picks for an image size (Molmo's kernel: `tilings.leastupscale`)."""

from __future__ import annotations

from tilings.leastupscale import MAX_SIZE, candidate_tilings, select_tiling_raw
from tilings.registry import get_profile
from tilings.scheme import Scheme
from tilings.types import Tiling

__all__ = ["MAX_SIZE", "candidate_tilings", "select_tiling", "select_tiling_raw"]


def select_tiling(height: int, width: int, profile: Scheme | str) -> Tiling:
    """The tiling the preprocessor of `profile` picks for an image of `height` x `width` pixels.

    Raises:
        UsageError: a size that is not a positive integer, or an unknown profile.
    """
    return get_profile(profile).geometry(height, width).tiling
