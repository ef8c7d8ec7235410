"""The tiled-canvas kernel: least up-scaling over canvases of whole tiles, parameterised by the processor.

Several image processors choose a grid of ``rows x cols`` square tiles of side T the
same way: every grid with at most ``max_tiles`` tiles is a candidate canvas
``(rows*T, cols*T)``; the scale a candidate needs is the one that fits the image in
it without distortion, ``min(rows*T/h, cols*T/w)``; if some candidate needs no
down-scaling (scale >= 1) the one needing the least up-scaling wins, otherwise the
one needing the least down-scaling. They differ in three things, which are the
parameters here:

- **candidate order** (`ORDERS`): the list the processor builds and in which ties
  fall to the first;
- **arithmetic**: torch ``float32`` (Llama 4) or numpy ``float64`` (Cohere2-Vision,
  Mllama): the image side is converted once, correctly rounded, from the integer
  (``int64 -> float32``, ``int64 -> float64``), and the quotient is IEEE-rounded;
- **tie rule**: ``"first"`` (Cohere2-Vision, and Molmo's ``select_tiling``, which
  `tilings.leastupscale` reproduces with its own conversions): when every scale is
  below 1 take the first largest, else replace the scales below 1 by ``10e9`` and
  take the first smallest; ``"min-area"`` (Llama 4's ``get_best_fit``, Mllama's
  ``get_optimal_tiled_canvas``): take the smallest scale >= 1 (else the largest
  below 1), then, of every candidate with exactly that scale, the first of smallest
  area.

The quotient of two float32 numbers is computed as Python's double quotient rounded
to float32: double rounding is innocuous for division (53 >= 2 * 24 + 2, Figueroa
1995). Pure Python: no torch, no numpy.

Shared: Llama 4 and Cohere2-Vision (`tilings.tiled.TiledCanvas`) use it, and
Mllama's ``get_optimal_tiled_canvas`` is the ``float64``/``"min-area"`` setting with
its own candidate order (heights outer, widths inner, unsorted): add that order to
`ORDERS` to use it.
"""

from __future__ import annotations

import functools
import math
import struct
from collections import defaultdict
from collections.abc import Callable, Sequence

from tilings.types import Tiling

FLOAT32 = "float32"
FLOAT64 = "float64"
ARITHMETICS = (FLOAT32, FLOAT64)
FIRST = "first"
MIN_AREA = "min-area"
TIE_RULES = (FIRST, MIN_AREA)
# Processors hold image sizes in int64 (tensor shapes, numpy arrays); larger sizes are no image at all.
MAX_SIZE = 2**63

_F32 = struct.Struct("<f")
_REPLACED = {FLOAT32: _F32.unpack(_F32.pack(10e9))[0], FLOAT64: 10e9}  # where(scale < 1, 10e9, scale) in that dtype


def _round_f32(x: float) -> float:
    """A double rounded to the nearest float32 (ties to even), kept as a Python float."""
    try:
        return _F32.unpack(_F32.pack(x))[0]
    except OverflowError:  # beyond float32's range: IEEE rounds to infinity
        return math.copysign(math.inf, x)


def int_to_float32(n: int) -> float:
    """``int64 -> float32`` as the hardware converts: the integer rounded once to 24 significant bits (ties to
    even). Not ``float32(float(n))``: above 2**53 that rounds twice and can land on the other neighbour."""
    magnitude = abs(n)
    if magnitude.bit_length() <= 24:
        return float(n)
    shift = magnitude.bit_length() - 24
    quotient, remainder = divmod(magnitude, 1 << shift)
    half = 1 << (shift - 1)
    if remainder > half or (remainder == half and quotient & 1):
        quotient += 1
    return math.copysign(float(quotient << shift), n)


def _scale_fn(arithmetic: str) -> Callable[[int, int], float]:
    """``numerator / denominator`` of two integers in the processor's precision."""
    if arithmetic == FLOAT64:
        return lambda num, den: float(num) / float(den)  # int -> double is correctly rounded, as numpy's cast
    return lambda num, den: _round_f32(int_to_float32(num) / int_to_float32(den))


def select_canvas(height: int, width: int, candidates: Sequence[Tiling], tile_size: int, *,
                  arithmetic: str, tie: str) -> Tiling:
    """The grid the processor picks for an image of `height` x `width` pixels (positive, below 2**63).

    Args:
        candidates: the grids in the processor's order (`candidate_grids`).
        tile_size: T, the side of a tile in pixels.
        arithmetic: `FLOAT32` or `FLOAT64`.
        tie: `FIRST` or `MIN_AREA` (the module docstring says what each does).
    """
    divide = _scale_fn(arithmetic)
    scales = [min(divide(t.rows * tile_size, height), divide(t.cols * tile_size, width)) for t in candidates]
    if tie == FIRST:
        if all(s < 1.0 for s in scales):
            return candidates[scales.index(max(scales))]  # index() gives the first, as argmax does
        replaced = _REPLACED[arithmetic]
        scales = [replaced if s < 1.0 else s for s in scales]
        return candidates[scales.index(min(scales))]
    up = [s for s in scales if s >= 1.0]
    chosen = min(up) if up else max(scales)
    tied = [t for t, s in zip(candidates, scales) if s == chosen]
    return min(tied, key=lambda t: t.rows * t.cols)  # min() keeps the first of equal areas, as argmin does


# ----- candidate orders ---------------------------------------------------------------------------


def _llama4(max_tiles: int) -> tuple[Tiling, ...]:
    """Llama 4's ``find_supported_resolutions``: tile counts from `max_tiles` down to 1, each one's factor pairs
    (height, width) with the height ascending, grouped by aspect ratio in the order each ratio first appears."""
    by_ratio: dict[float, list[Tiling]] = defaultdict(list)
    for count in range(max_tiles, 0, -1):
        for rows in sorted(_factors(count)):
            by_ratio[rows / (count // rows)].append(Tiling(rows, count // rows))
    return tuple(t for group in by_ratio.values() for t in group)


def _factors(n: int) -> set[int]:
    return {d for i in range(1, math.isqrt(n) + 1) if n % i == 0 for d in (i, n // i)}


def _cohere2(max_tiles: int) -> tuple[Tiling, ...]:
    """Cohere2-Vision's ``get_all_supported_aspect_ratios`` (width, height) pairs, widths outer and heights inner,
    stably sorted by tile count: within a count, fewer columns first."""
    pairs = [(cols, rows) for cols in range(1, max_tiles + 1) for rows in range(1, max_tiles + 1)
             if cols * rows <= max_tiles]
    pairs.sort(key=lambda p: p[0] * p[1])
    return tuple(Tiling(rows, cols) for cols, rows in pairs)


ORDERS: dict[str, Callable[[int], tuple[Tiling, ...]]] = {"llama4": _llama4, "cohere2": _cohere2}


@functools.lru_cache(maxsize=64)
def candidate_grids(order: str, max_tiles: int) -> tuple[Tiling, ...]:
    """Every grid of at most `max_tiles` tiles, in the processor's order `order` (a key of `ORDERS`)."""
    return ORDERS[order](max_tiles)
