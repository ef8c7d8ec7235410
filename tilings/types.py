"""The two records every tilings function speaks in: `Tiling` and `Geometry`."""

from __future__ import annotations

from typing import NamedTuple


class Tiling(NamedTuple):
    """A target grid: `rows` x `cols` tiles (grid schemes; the global view not counted), or the
    grid of merged tokens of a budget scheme (`tilings.scheme`).

    A NamedTuple so that ``Tiling(2, 4) == (2, 4)`` and it unpacks like the
    processor's ``(tiling_h, tiling_w)``.
    """

    rows: int
    cols: int

    @property
    def crops(self) -> int:
        """Tiles plus one global view: the crops of a Molmo-style grid (other schemes: `Geometry.crops`)."""
        return self.rows * self.cols + 1

    @property
    def cells(self) -> int:
        """``rows * cols``: tiles of a grid, or merged tokens of a token grid."""
        return self.rows * self.cols

    def __str__(self) -> str:
        return f"{self.rows}x{self.cols}"


class Geometry(NamedTuple):
    """What a preprocessor makes of one image size, in the vocabulary every scheme shares.

    ``low_res_grid`` and ``high_res_grid`` are Molmo's pooled (rows, cols) grids, i.e.
    its processor's ``image_grids`` row ``[low_h, low_w, high_h, high_w]``; other
    schemes leave them None.
    """

    tiling: Tiling  # the target grid (tiles, or merged tokens for budget schemes)
    crops: int  # images the vision encoder runs on, global view or thumbnail included
    canvas: tuple[int, int]  # (height, width) the image is resized to before tiling
    image_tokens: int  # placeholder tokens the model fills with vision features
    sequence_tokens: int  # every token the image adds to the text: separators, start/end included
    low_res_grid: tuple[int, int] | None = None
    high_res_grid: tuple[int, int] | None = None
    encoder_patches: int = 0  # patches the vision encoder processes, padding included
