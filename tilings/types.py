"""The two records every tilings function speaks in: `Tiling` and `Geometry`."""

from __future__ import annotations

from typing import NamedTuple


class Tiling(NamedTuple):
    """A grid of `rows` x `cols` high-resolution crops (the global crop not counted).

    A NamedTuple so that ``Tiling(2, 4) == (2, 4)`` and it unpacks like the
    processor's ``(tiling_h, tiling_w)``.
    """

    rows: int
    cols: int

    @property
    def crops(self) -> int:
        """Crops the processor feeds the vision encoder: the tiles plus the global crop."""
        return self.rows * self.cols + 1

    def __str__(self) -> str:
        return f"{self.rows}x{self.cols}"


class Geometry(NamedTuple):
    """What a preprocessor makes of one image size.

    ``low_res_grid`` and ``high_res_grid`` are the pooled (rows, cols) grids, i.e.
    the processor's ``image_grids`` row ``[low_h, low_w, high_h, high_w]``.
    """

    tiling: Tiling
    crops: int  # including the global (low-res) crop
    canvas: tuple[int, int]  # (height, width) the image is resized to before tiling
    image_tokens: int  # pooled patch tokens, low-res + high-res
    sequence_tokens: int  # every image token inserted: patches, column and start/end tokens
    low_res_grid: tuple[int, int]
    high_res_grid: tuple[int, int]
