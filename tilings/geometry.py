"""Forward geometry: image size -> tiling, canvas, crops and token counts."""

from __future__ import annotations

import math

from tilings.profiles import Profile, get_profile
from tilings.select import select_tiling
from tilings.types import Geometry, Tiling


def canvas_for(tiling: Tiling, profile: Profile) -> tuple[int, int]:
    """(height, width) the image is resized to for `tiling`: ``k*W + M`` along a side of k crops."""
    window, margin = profile.window_size, profile.margin_size
    return (tiling.rows * window + margin, tiling.cols * window + margin)


def tiling_geometry(tiling: Tiling, profile: Profile) -> Geometry:
    """Crops, canvas and token counts of a tiling, whatever image size led to it."""
    canvas = canvas_for(tiling, profile)
    pool_h, pool_w = profile.pooling
    high = (
        math.ceil((canvas[0] // profile.patch_size) / pool_h),
        math.ceil((canvas[1] // profile.patch_size) / pool_w),
    )
    low = profile.low_res_grid
    image_tokens = low[0] * low[1] + high[0] * high[1]
    # Each view: a start token, one row of patches (plus a column token) per pooled row, an end token.
    low_seq = 2 + low[0] * (low[1] + int(profile.low_res_col_tokens))
    high_seq = 2 + high[0] * (high[1] + int(profile.high_res_col_tokens))
    return Geometry(
        tiling=tiling,
        crops=tiling.rows * tiling.cols + 1,
        canvas=canvas,
        image_tokens=image_tokens,
        sequence_tokens=low_seq + high_seq,
        low_res_grid=low,
        high_res_grid=high,
    )


def geometry(height: int, width: int, profile: Profile | str) -> Geometry:
    """What the preprocessor of `profile` makes of an image of `height` x `width` pixels.

    Raises:
        UsageError: a size that is not a positive integer, or an unknown profile.
    """
    profile = get_profile(profile)
    return tiling_geometry(select_tiling(height, width, profile), profile)
