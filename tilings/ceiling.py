"""Ceiling-grid schemes (Phi-4-multimodal's image processor): one tile per started tile of the image, padding masked.

A `CeilingGrid` reproduces transformers' ``Phi4MultimodalImageProcessor``
(``models/phi4_multimodal/image_processing_phi4_multimodal.py``: ``dynamic_preprocess``,
``find_closest_aspect_ratio`` and the token count in ``_preprocess``), with T the
tile (``size``), p the patch (``patch_size``) and N the tile limit (``dynamic_hd``):

1. the grid is ``ceil(h / T) x ceil(w / T)`` (as ``math.ceil(x / float(T))``) when it has
   at most N tiles: no aspect-ratio search at all;
2. otherwise the closest aspect ratio among every ``(cols, rows)`` with ``1 <= cols*rows
   <= N``, in the order of a Python ``set`` built by the processor's comprehension and
   stably sorted by tiles; a strictly smaller ``abs(w/h - cols/rows)`` wins, and on an
   exact tie the later candidate wins iff ``w*h > 0.5*T*T*cols*rows`` (InternVL's rule);
3. the image is resized, keeping its aspect ratio, to fit the canvas ``(rows*T, cols*T)``
   (the side with the smaller scale fills it, the other is ``int(side * scale)``) and
   padded right or bottom with white; an image whose resized side (or canvas side) is
   under 10 px is refused (``ValueError``: "the aspect ratio is very extreme");
4. a patch mask of ``(rows*T/p) x (cols*T/p)`` marks the padding: the last
   ``floor(padding / p)`` patch columns (or rows) are zero, only from ``p`` px of padding on;
5. crops = ``rows*cols + 1``: the global view (the whole canvas resized to T x T) comes
   first, then the tiles row-major; ``image_attention_mask`` has one mask per crop.

Tokens (``_preprocess``; the processor writes ``<|image|>`` that many times and nothing
around it, so sequence tokens = image tokens, whatever the tokenizer). Each crop's mask is
subsampled every second patch row and column; with ``vr`` and ``vc`` the valid rows and
columns of the subsampled mask of the whole grid, image tokens = ``256 + 1 + vr*vc + vr +
16``: the global view's 16 x 16 features plus one separator per row, one separator between
views, and the tiles' valid features plus one separator per valid row. The 256 and 16 are
hard-coded in the processor, so they hold for T/p = 32 only (448/14, the released model,
whose image embedding makes exactly these features); the scheme reproduces the processor's
count for any setting. Without padding: ``273 + 256*rows*cols + 16*rows``.

The inverse is the canvas itself: ``(rows*T, cols*T)`` has the ceiling grid ``rows x cols``
(``rows*T / T`` is exactly ``rows``), at most N tiles, scale 1 and no padding. Every grid of
at most N tiles is reachable, and no other.

Padding is a second sweep axis (the ``pad`` family): an image ``rows*T x w`` with
``(cols-1)*T < w <= cols*T`` keeps the grid and its crops while the mask drops feature
columns, so tokens fall at constant crops (likewise in height).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from tilesweep.errors import UsageError
from tilings._checks import check_positive_int
from tilings._records import GridFamilies, SchemeRecord, check_field_names, read_preprocessor_config
from tilings.grids import GRID_FAMILIES, grid_family
from tilings.types import Geometry, Tiling

# The processor reads sizes from image tensors (int64 shapes); larger sizes are no image at all.
MAX_SIZE = 2**63
# The processor refuses an image whose resized side (or canvas side) is under this many pixels.
MIN_RESIZED_SIDE = 10
# Hard-coded in the processor's count: the global view's 16 x 16 features, its 16 row separators and the one
# separator between the global view and the tiles (256 + 1 + 16).
GLOBAL_TOKENS = 256 + 1 + 16
# The processor's tie rule: on equal aspect-ratio differences the later grid wins while the image area exceeds
# this fraction of the grid's tile area.
TIE_AREA_FRACTION = 0.5
PAD = "pad"
# Grids of the pad family (those the scheme has), one side shrunk in steps of tile_size // 8.
PAD_GRIDS: tuple[Tiling, ...] = (Tiling(1, 1), Tiling(2, 2), Tiling(2, 3), Tiling(3, 2), Tiling(3, 3))
PAD_SIZES = 5
_CONFIG_KEYS = frozenset({"size", "patch_size", "dynamic_hd"})


@functools.lru_cache(maxsize=16)
def _overflow_candidates(max_num: int, min_num: int = 1) -> tuple[tuple[int, int], ...]:
    """``dynamic_preprocess``'s ``target_ratios``: (cols, rows) pairs built as the same set, by the same
    comprehension in the same order (so it iterates as the processor's does), stably sorted by tiles."""
    target_ratios = {
        (i, j)
        for n in range(min_num, max_num + 1)
        for i in range(1, n + 1)
        for j in range(1, n + 1)
        if i * j <= max_num and i * j >= min_num
    }
    return tuple(sorted(target_ratios, key=lambda x: x[0] * x[1]))


@dataclasses.dataclass(frozen=True, slots=True)
class _Resized:
    """One image through ``dynamic_preprocess``: the grid, the resized size and the padding."""

    tiling: Tiling
    new_height: int
    new_width: int
    pad_height: int
    pad_width: int


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CeilingGrid(GridFamilies, SchemeRecord):
    """One ceiling-grid preprocessor's numbers (a grid `tilings.scheme.Scheme`).

    Attributes:
        name: a label carried into results (``"phi4-mm"``).
        tile_size: T, side of the square tiles and of the global view, in pixels (the processor's ``size``).
        patch_size: side of a mask patch, in pixels (the processor's ``patch_size``; the vision
            tower's ``patch_size`` must equal it).
        dynamic_hd: N, the most tiles a grid may have (the processor's ``dynamic_hd``).
    """

    SCHEME: ClassVar[str] = "ceiling-grid"

    name: str
    tile_size: int = 448
    patch_size: int = 14
    dynamic_hd: int = 36

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise UsageError(f"CeilingGrid.name must be a non-empty string, got {self.name!r}")
        for field in ("tile_size", "patch_size", "dynamic_hd"):
            object.__setattr__(self, field, check_positive_int(f"CeilingGrid.{field}", getattr(self, field)))
        if self.tile_size < MIN_RESIZED_SIDE or self.tile_size % self.patch_size:
            raise UsageError(
                f"CeilingGrid {self.name!r}: tile_size {self.tile_size} must be at least {MIN_RESIZED_SIDE} and a "
                f"multiple of patch_size {self.patch_size}; pick a tile of whole patches (Phi-4-multimodal: 448/14)"
            )

    # ----- the processor's arithmetic -----
    @property
    def tile_patches(self) -> int:
        """Mask patches along one side of a tile (the processor's ``mask_size``)."""
        return self.tile_size // self.patch_size

    def _resize(self, height: int, width: int) -> _Resized:
        """``dynamic_preprocess`` on checked sizes: the same float operations, in the same order.

        Raises:
            UsageError: an image the processor refuses (a resized side under 10 px).
        """
        image_size = self.tile_size
        w_crop_num = math.ceil(width / float(image_size))
        h_crop_num = math.ceil(height / float(image_size))
        if w_crop_num * h_crop_num > self.dynamic_hd:
            aspect_ratio = width / height
            cols, rows = self._closest_aspect_ratio(aspect_ratio, width, height)
        else:
            cols, rows = w_crop_num, h_crop_num
        target_width, target_height = image_size * cols, image_size * rows
        ratio_width = target_width / width
        ratio_height = target_height / height
        if ratio_width < ratio_height:
            new_width, new_height = target_width, int(height * ratio_width)
            pad_width, pad_height = 0, target_height - int(height * ratio_width)
        else:
            new_width, new_height = int(width * ratio_height), target_height
            pad_width, pad_height = target_width - int(width * ratio_height), 0
        if min(new_height, target_height) < MIN_RESIZED_SIDE or min(new_width, target_width) < MIN_RESIZED_SIDE:
            raise UsageError(
                f"scheme {self.name!r} refuses an image of {height}x{width}: it would be resized to "
                f"{new_height}x{new_width}, a side under {MIN_RESIZED_SIDE} px (the processor's 'aspect ratio is "
                "very extreme' error); pick a less extreme aspect ratio"
            )
        return _Resized(Tiling(rows, cols), new_height, new_width, pad_height, pad_width)

    def _closest_aspect_ratio(self, aspect_ratio: float, width: int, height: int) -> tuple[int, int]:
        """``find_closest_aspect_ratio``: (cols, rows)."""
        image_size = self.tile_size
        best_ratio_diff = float("inf")
        best_ratio = (1, 1)
        area = width * height
        for ratio in _overflow_candidates(self.dynamic_hd):
            target_aspect_ratio = ratio[0] / ratio[1]
            ratio_diff = abs(aspect_ratio - target_aspect_ratio)
            if ratio_diff < best_ratio_diff:
                best_ratio_diff = ratio_diff
                best_ratio = ratio
            elif ratio_diff == best_ratio_diff:
                if area > TIE_AREA_FRACTION * image_size * image_size * ratio[0] * ratio[1]:
                    best_ratio = ratio
        return best_ratio

    def _valid_subsampled(self, tiles: int, padding: int) -> int:
        """Valid rows (columns) of the subsampled mask along a side of `tiles` tiles with `padding` px of padding.

        The mask zeroes its last ``floor(padding / p)`` patch rows (from ``p`` px on); each tile keeps its
        rows ``0, 2, 4, ...`` (counted per tile: T/p may be odd), so whole valid tiles keep ``ceil(T/p / 2)``
        and the tile the padding starts in keeps ``ceil(valid rows in it / 2)``."""
        per_tile = self.tile_patches
        masked = math.floor(padding / self.patch_size) if padding >= self.patch_size else 0
        whole, rest = divmod(max(0, tiles * per_tile - masked), per_tile)
        return whole * ((per_tile + 1) // 2) + (rest + 1) // 2

    def _geometry(self, resized: _Resized) -> Geometry:
        tiling = resized.tiling
        valid_rows = self._valid_subsampled(tiling.rows, resized.pad_height)
        valid_cols = self._valid_subsampled(tiling.cols, resized.pad_width)
        image_tokens = GLOBAL_TOKENS + valid_rows * valid_cols + valid_rows
        crops = tiling.cells + 1
        return Geometry(
            tiling=tiling,
            crops=crops,
            canvas=(tiling.rows * self.tile_size, tiling.cols * self.tile_size),
            image_tokens=image_tokens,
            sequence_tokens=image_tokens,  # the processor writes <|image|> x N and nothing around it
            encoder_patches=crops * self.tile_patches**2,  # padding included: the mask does not shorten the input
        )

    def select(self, height: int, width: int) -> Tiling:
        """The grid the processor picks for an image of `height` x `width` pixels.

        Raises:
            UsageError: a size that is not a positive integer, or one the processor refuses.
        """
        return self._resize(*self._checked(height, width)).tiling

    @staticmethod
    def _checked(height: int, width: int) -> tuple[int, int]:
        return (check_positive_int("height", height, below=MAX_SIZE), check_positive_int("width", width, below=MAX_SIZE))

    # ----- the scheme interface (tilings.scheme.Scheme) -----
    @property
    def families(self) -> tuple[str, ...]:
        return (*GRID_FAMILIES, PAD)

    @property
    def max_crops(self) -> int:
        return self.dynamic_hd

    def geometry(self, height: int, width: int) -> Geometry:
        return self._geometry(self._resize(*self._checked(height, width)))

    def check_target(self, target: Any) -> Tiling:
        """`target` as a `Tiling` of at most `dynamic_hd` tiles.

        Raises:
            UsageError: not a pair of positive integers, or too many tiles.
        """
        if isinstance(target, str) or not isinstance(target, (tuple, list)) or len(target) != 2:
            raise UsageError(f"a tiling is a pair (rows, cols) of positive integers, got {target!r}")
        tiling = Tiling(check_positive_int("tiling rows", target[0]), check_positive_int("tiling cols", target[1]))
        if tiling.cells > self.dynamic_hd:
            raise UsageError(
                f"tiling {tiling} is unreachable: it has {tiling.cells} tiles, over scheme {self.name!r}'s "
                f"dynamic_hd {self.dynamic_hd}; pick rows*cols <= {self.dynamic_hd}"
            )
        return tiling

    def target_geometry(self, target: Tiling) -> Geometry:
        return self.geometry(*self.resolution_for(target))

    def resolution_for(self, target: Tiling) -> tuple[int, int]:
        """The canvas itself, ``(rows*T, cols*T)``: its ceiling grid, no padding (module docstring).

        Raises:
            UsageError: a malformed target or one of more than `dynamic_hd` tiles.
        """
        tiling = self.check_target(target)
        size = (tiling.rows * self.tile_size, tiling.cols * self.tile_size)
        resized = self._resize(*size)
        if resized.tiling != tiling or resized.pad_height or resized.pad_width:  # the docstring proves it never is
            raise RuntimeError(f"canvas {size} does not give {tiling} unpadded in scheme {self.name!r}: a tilings bug")
        return size

    def family_tilings(self, family: str) -> list[Tiling]:
        if family == PAD:
            return list(dict.fromkeys(t for t, _ in self.points(PAD)))
        return grid_family(family, self.targets(), self.max_crops, f"scheme {self.name!r}", known=self.families)

    def points(self, family: str) -> list[tuple[Tiling, tuple[int, int]]]:
        if family == PAD:
            return self._pad_points()
        return [(t, self.resolution_for(t)) for t in self.family_tilings(family)]

    def _pad_points(self) -> list[tuple[Tiling, tuple[int, int]]]:
        """Each `PAD_GRIDS` grid the scheme has, its canvas narrowed (rows > cols: shortened) in steps of
        T // 8; a size is kept only while it gives the grid and fewer tokens than the last one kept."""
        step = max(1, self.tile_size // 8)
        out: list[tuple[Tiling, tuple[int, int]]] = []
        for tiling in PAD_GRIDS:
            if not self.is_reachable(tiling):
                continue
            height, width = self.resolution_for(tiling)
            last_tokens = None
            for k in range(PAD_SIZES):
                size = (height - k * step, width) if tiling.rows > tiling.cols else (height, width - k * step)
                try:
                    geo = self.geometry(*size)
                except UsageError:  # a size the processor refuses
                    break
                if geo.tiling != tiling or (last_tokens is not None and geo.image_tokens >= last_tokens):
                    continue
                out.append((tiling, size))
                last_tokens = geo.image_tokens
        return out

    def targets(self) -> tuple[Tiling, ...]:
        """Every grid of at most `dynamic_hd` tiles, row-major (fewest rows first)."""
        n = self.dynamic_hd
        return tuple(Tiling(rows, cols) for rows in range(1, n + 1) for cols in range(1, n // rows + 1))

    def processor_kwargs(self) -> dict[str, Any]:
        """Keyword arguments that configure `transformers.Phi4MultimodalImageProcessor` to this scheme."""
        return {
            "size": {"height": self.tile_size, "width": self.tile_size},
            "patch_size": self.patch_size,
            "dynamic_hd": self.dynamic_hd,
        }

    @classmethod
    def from_preprocessor_config(cls, config: Mapping[str, Any] | str | Path, **overrides: Any) -> CeilingGrid:
        """Build a scheme from a checkpoint's ``preprocessor_config.json`` (a dict or a path).

        Reads ``size`` (square ``height``/``width``, or an int: the tile), ``patch_size``
        and ``dynamic_hd``; a combined ``processor_config.json`` (the keys nested under
        ``image_processor``) reads the same. Missing keys take the phi4-mm preset's values;
        ``overrides`` (CeilingGrid field names) win over the config.

        Raises:
            UsageError: an unreadable file, a config of another image processor or with
                none of the keys, a non-square size, or an unknown override.
        """
        check_field_names(CeilingGrid, overrides, what="override")
        flat = read_preprocessor_config(config, "Phi4MultimodalImageProcessor",
                                        "a Phi-4-multimodal preprocessor_config.json")
        if not _CONFIG_KEYS & flat.keys():
            raise UsageError(
                f"preprocessor config has none of the Phi4MultimodalImageProcessor keys "
                f"({', '.join(sorted(_CONFIG_KEYS))}); pass a Phi-4-multimodal preprocessor_config.json"
            )
        base = PRESETS["phi4-mm"]
        fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(cls)}
        if flat.get("size") is not None:
            fields["tile_size"] = _square_side(flat["size"])
        for key in ("patch_size", "dynamic_hd"):
            if flat.get(key) is not None:
                fields[key] = flat[key]
        merged = {**fields, **overrides}
        if "name" not in overrides:
            merged["name"] = base.name if cls(**merged) == base else f"{base.name}-custom"
        return cls(**merged)


def _square_side(size: Any) -> Any:
    """The side of a square ``size`` (``{"height": T, "width": T}`` or an int T)."""
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        return int(size)
    if isinstance(size, Mapping) and {"height", "width"} <= size.keys():
        if size["height"] != size["width"]:
            raise UsageError(
                f"preprocessor config 'size' must be square, got {size['height']}x{size['width']}; the processor "
                "only takes square tiles"
            )
        return size["height"]
    raise UsageError(f"preprocessor config 'size' must be {{'height': T, 'width': T}} or T, got {size!r}")


PRESETS: dict[str, CeilingGrid] = {
    # microsoft/Phi-4-multimodal-instruct (transformers' Phi4MultimodalImageProcessor defaults): 448 px tiles,
    # 14 px patches (32 x 32 a tile, 16 x 16 features after the 2x2 pooling), at most 36 tiles.
    "phi4-mm": CeilingGrid(name="phi4-mm", tile_size=448, patch_size=14, dynamic_hd=36),
}
