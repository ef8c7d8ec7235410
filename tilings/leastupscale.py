"""The least-up-scaling kernel: Molmo's ``select_tiling``, reproduced bit for bit without torch.

The processor (``select_tiling`` in transformers' ``image_processing_molmo2.py``,
the same function in Molmo v1's remote code) does, on the image size minus the
overlap margin:

1. list every ``(rows, cols)`` with ``rows * cols <= max_crops``, sorted by
   ``(rows * cols, rows)`` so that ties go to fewer crops, then fewer rows;
2. compute, in float32, the scale each candidate needs:
   ``min(rows * W / h, cols * W / w)``;
3. when every scale is below 1 (the image is larger than every candidate), take
   the largest scale (least down-scaling); otherwise replace the scales below 1
   by ``10e9`` and take the smallest (least up-scaling). Both argmax and argmin
   return the first index on a tie.

The arithmetic is float32, so it is emulated here: every operand is an integer
rounded to float32, and a float32 quotient is computed as Python's double
quotient rounded to float32. That double rounding is innocuous for division:
a binary64 quotient of two binary32 numbers, rounded again to binary32, is the
correctly rounded binary32 quotient because 53 >= 2 * 24 + 2 (Figueroa, 1995).
"""

from __future__ import annotations

import functools
import math
import struct

from tilings.types import Tiling

_F32 = struct.Struct("<f")
_INF = math.inf
# torch.where(scale < 1.0, 10e9, scale) writes 10e9 into a float32 tensor.
_REPLACED = _F32.unpack(_F32.pack(10e9))[0]
# The processor holds image sizes in int64 tensors; larger sizes are no image at all.
MAX_SIZE = 2**63


def _f32(x: float) -> float:
    """Round a double to the nearest float32 (ties to even), kept as a Python float.

    Integers above 2**53 reach here already rounded to a double, as they do in
    torch, which converts Python integers for a float32 tensor through a double.
    """
    if math.isinf(x):
        return x
    try:
        return _F32.unpack(_F32.pack(x))[0]
    except OverflowError:  # beyond float32's range: IEEE rounds to infinity
        return math.copysign(_INF, x)


def _div_f32(numerator: float, denominator: float) -> float:
    """float32 ``numerator / denominator`` as torch computes it, including IEEE division by zero."""
    if denominator == 0.0:
        # Only positive numerators occur (candidate sizes); the processor's zero is +0.0.
        return math.copysign(_INF, numerator)
    return _f32(numerator / denominator)


@functools.lru_cache(maxsize=64)
def candidate_tilings(max_crops: int) -> tuple[Tiling, ...]:
    """Every tiling of at most `max_crops` crops, in the processor's order ``(rows*cols, rows)``."""
    tilings = [Tiling(r, c) for r in range(1, max_crops + 1) for c in range(1, max_crops + 1) if r * c <= max_crops]
    tilings.sort(key=lambda t: (t.rows * t.cols, t.rows))
    return tuple(tilings)


def select_tiling_raw(height: int, width: int, window_size: int, max_crops: int) -> Tiling:
    """The processor's ``select_tiling`` on a size with the margin already removed.

    `height` and `width` may be zero or negative here (an image no larger than the
    margin); the processor does not guard against that and neither does this, so
    that the result matches it: a zero side gives +inf scales, a negative side
    negative ones.
    """
    original = (_f32(float(height)), _f32(float(width)))
    candidates = candidate_tilings(max_crops)
    scales = []
    for tiling in candidates:
        scale_h = _div_f32(_f32(float(tiling.rows * window_size)), original[0])
        scale_w = _div_f32(_f32(float(tiling.cols * window_size)), original[1])
        scales.append(min(scale_h, scale_w))
    if all(s < 1.0 for s in scales):
        best = max(scales)  # least down-scaling; index() gives the first on a tie, as argmax does
    else:
        scales = [_REPLACED if s < 1.0 else s for s in scales]
        best = min(scales)  # least up-scaling
    return candidates[scales.index(best)]
