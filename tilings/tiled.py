"""Tiled-canvas schemes (Llama 4, Cohere2-Vision): the least-up-scaling grid of square tiles, plus a global view.

A `TiledCanvas` reproduces an image processor that picks its grid with the tiled-canvas
kernel (`tilings.canvas`: least up-scaling over the canvases ``(rows*T, cols*T)`` with at
most ``max_tiles`` tiles), cuts the canvas into ``rows x cols`` tiles of T px and, for
more than one tile, adds the whole image at T x T:

- ``llama4``: transformers' ``Llama4ImageProcessor`` (``models/llama4/image_processing_llama4.py``:
  ``find_supported_resolutions``, ``get_best_fit``, ``_preprocess``), T = 336, at most 16 tiles,
  scales in torch float32, the smallest area on a tie of scales; the image is resized
  within the canvas without distortion (never up-scaled past T), padded bottom and right,
  cut into tiles, and a multi-tile grid gets the global tile last. Tokens
  (``Llama4Processor._prompt_split_image``): ``<|image_start|>``, per tile 144 ``<|patch|>``
  (``(336/14)^2`` patches pixel-shuffled by 0.5, i.e. /4) with ``<|tile_x_separator|>``
  between the tiles of a row and ``<|tile_y_separator|>`` after each row (multi-tile
  grids only), then ``<|image|>`` and the global tile's 144 ``<|patch|>``, then
  ``<|image_end|>``: 144 image tokens per crop, 147 sequence tokens for 1x1 and
  ``145*r*c + 147`` for more tiles. The model fills the ``<|patch|>`` tokens.
- ``cohere2-vision``: transformers' ``Cohere2VisionImageProcessor``
  (``models/cohere2_vision/image_processing_cohere2_vision.py``: ``get_all_supported_aspect_ratios``,
  ``get_optimal_tiled_canvas``, ``crop_image_to_patches``), T = 512, at most 12 tiles, scales in
  numpy float64 over (cols, rows) candidates stably sorted by area (within an area, fewer
  columns first), the first on a tie; the image is resized, distorted, to the canvas, cut
  into tiles, and a multi-tile grid gets the thumbnail last. Tokens
  (``Cohere2VisionProcessor.replace_image_token``): ``<|START_OF_IMG|>``, per crop
  ``patch_size^2`` = 256 ``<|IMG_PATCH|>`` and one ``<|IMG_LINE_BREAK|>``, then
  ``<|END_OF_IMG|>``: 256 image tokens and 257 sequence tokens per crop, plus 2.

Every token of both spans is a special token of its tokenizer, so the sequence count
assumes no tokenizer: it is exact for any tokenizer that has those tokens.

The inverse is the canvas itself. At ``(r*T, c*T)`` the target needs a scale of exactly
1.0 (in either precision: ``x/x``), and a grid ``(a, b)`` needs ``min(a/r, b/c)``, which
is at least 1 only when ``a >= r`` and ``b >= c``; those of scale exactly 1 have more
tiles than the target (a larger area, and later in both processors' area order); every
other scale >= 1 is at least ``1 + 1/max_tiles``, far from 1 in float32. So every grid of
at most ``max_tiles`` tiles is reachable, at its canvas, and no other grid is.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from tilesweep.errors import UsageError
from tilings._checks import check_positive_int
from tilings._config import flat_config
from tilings._records import GridFamilies, SchemeRecord, check_field_names
from tilings.canvas import (
    ARITHMETICS,
    FIRST,
    FLOAT32,
    FLOAT64,
    MAX_SIZE,
    MIN_AREA,
    ORDERS,
    TIE_RULES,
    candidate_grids,
    select_canvas,
)
from tilings.grids import grid_family
from tilings.types import Geometry, Tiling


@dataclasses.dataclass(frozen=True, slots=True)
class _Processor:
    """A transformers image processor that uses the kernel: its class and the kernel settings it has."""

    image_processor: str
    arithmetic: str
    tie: str
    preset: str


# The candidate order names the processor; the other kernel settings must be that processor's.
PROCESSORS: dict[str, _Processor] = {
    "llama4": _Processor("Llama4ImageProcessor", FLOAT32, MIN_AREA, "llama4"),
    "cohere2": _Processor("Cohere2VisionImageProcessor", FLOAT64, FIRST, "cohere2-vision"),
}
_CONFIG_KEYS = frozenset({"size", "max_patches", "resize_to_max_canvas", "crop_to_patches"})


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TiledCanvas(GridFamilies, SchemeRecord):
    """One tiled-canvas preprocessor's numbers (a grid `tilings.scheme.Scheme`; the module docstring has both).

    Attributes:
        name: a label carried into results (``"llama4"``).
        tile_size: T, side of the square tiles and of the global view, in pixels (the processor's ``size``).
        patch_size: side of a vision-encoder patch, in pixels (the model's ``vision_config.patch_size``).
        max_tiles: most tiles a grid may have (the processor's ``max_patches``).
        order: the processor's candidate order, a key of `tilings.canvas.ORDERS` (``"llama4"``, ``"cohere2"``).
        arithmetic: ``"float32"`` (torch) or ``"float64"`` (numpy): the precision of the scales.
        tie: ``"min-area"`` or ``"first"`` (`tilings.canvas`).
        thumbnail: a grid of more than one tile also sends the whole image at T x T.
        tokens_per_tile: placeholder tokens per image the encoder runs on.
        frame_tokens: tokens around the whole image (Llama 4: start, ``<|image|>``, end; Cohere2: begin, end).
        crop_end_tokens: tokens after each crop's placeholders (Cohere2: one line break).
        tile_separators: a multi-tile grid has one separator per tile (Llama 4: x between the tiles of a row,
            y after each row).
    """

    SCHEME: ClassVar[str] = "tiled-canvas"

    name: str
    tile_size: int = 336
    patch_size: int = 14
    max_tiles: int = 16
    order: str = "llama4"
    arithmetic: str = FLOAT32
    tie: str = MIN_AREA
    thumbnail: bool = True
    tokens_per_tile: int = 144
    frame_tokens: int = 3
    crop_end_tokens: int = 0
    tile_separators: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise UsageError(f"TiledCanvas.name must be a non-empty string, got {self.name!r}")
        for field in ("tile_size", "patch_size", "max_tiles", "tokens_per_tile"):
            object.__setattr__(self, field, check_positive_int(f"TiledCanvas.{field}", getattr(self, field)))
        for field in ("frame_tokens", "crop_end_tokens"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise UsageError(f"TiledCanvas.{field} must be a whole number >= 0, got {value!r}")
            object.__setattr__(self, field, int(value))
        for field in ("thumbnail", "tile_separators"):
            if not isinstance(getattr(self, field), bool):
                raise UsageError(f"TiledCanvas.{field} must be true or false, got {getattr(self, field)!r}")
        for field, allowed in (("order", tuple(ORDERS)), ("arithmetic", ARITHMETICS), ("tie", TIE_RULES)):
            if getattr(self, field) not in allowed:
                raise UsageError(
                    f"TiledCanvas.{field} must be one of {', '.join(allowed)}, got {getattr(self, field)!r}"
                )
        if self.tile_size % self.patch_size:
            raise UsageError(
                f"TiledCanvas {self.name!r}: tile_size {self.tile_size} is not a multiple of patch_size "
                f"{self.patch_size}; pick a tile size of whole patches"
            )

    # ----- the processor's arithmetic -----
    @property
    def tile_patches(self) -> int:
        """Encoder patches along one side of a tile."""
        return self.tile_size // self.patch_size

    def candidates(self) -> tuple[Tiling, ...]:
        """The grids the processor considers, in its order."""
        return candidate_grids(self.order, self.max_tiles)

    def select(self, height: int, width: int) -> Tiling:
        """The grid the processor picks for an image of `height` x `width` pixels.

        Raises:
            UsageError: a size that is not a positive integer below 2**63.
        """
        height = check_positive_int("height", height, below=MAX_SIZE)
        width = check_positive_int("width", width, below=MAX_SIZE)
        return select_canvas(height, width, self.candidates(), self.tile_size, arithmetic=self.arithmetic,
                             tie=self.tie)

    def grid_geometry(self, tiling: Tiling) -> Geometry:
        """Crops, canvas and token counts of a grid, whatever image size led to it (not checked)."""
        tiling = Tiling(*tiling)
        several = tiling.cells > 1
        crops = tiling.cells + int(self.thumbnail and several)
        image_tokens = self.tokens_per_tile * crops
        separators = tiling.cells if self.tile_separators and several else 0
        return Geometry(
            tiling=tiling,
            crops=crops,
            canvas=(tiling.rows * self.tile_size, tiling.cols * self.tile_size),
            image_tokens=image_tokens,
            sequence_tokens=image_tokens + self.frame_tokens + self.crop_end_tokens * crops + separators,
            encoder_patches=crops * self.tile_patches**2,
        )

    # ----- the scheme interface (tilings.scheme.Scheme) -----
    @property
    def max_crops(self) -> int:
        return self.max_tiles

    def geometry(self, height: int, width: int) -> Geometry:
        return self.grid_geometry(self.select(height, width))

    def check_target(self, target: Any) -> Tiling:
        """`target` as a `Tiling`, checked against the processor's limit.

        Raises:
            UsageError: not a pair of positive integers, or more tiles than the processor allows.
        """
        if isinstance(target, str) or not isinstance(target, (tuple, list)) or len(target) != 2:
            raise UsageError(f"a tiling is a pair (rows, cols) of positive integers, got {target!r}")
        tiling = Tiling(check_positive_int("tiling rows", target[0]), check_positive_int("tiling cols", target[1]))
        if tiling.cells > self.max_tiles:
            raise UsageError(
                f"tiling {tiling} has {tiling.cells} tiles, over scheme {self.name!r}'s {self.max_tiles} "
                f"(max_patches); pick rows*cols <= {self.max_tiles}"
            )
        return tiling

    def target_geometry(self, target: Tiling) -> Geometry:
        return self.grid_geometry(self.check_target(target))

    def resolution_for(self, target: Tiling) -> tuple[int, int]:
        """The canvas itself, ``(rows*T, cols*T)`` (module docstring).

        Raises:
            UsageError: more tiles than the processor allows.
        """
        tiling = self.check_target(target)
        size = (tiling.rows * self.tile_size, tiling.cols * self.tile_size)
        if self.select(*size) != tiling:  # the module docstring proves this never happens
            raise RuntimeError(f"canvas {size} does not select {tiling} in scheme {self.name!r}: a tilings bug")
        return size

    def family_tilings(self, family: str) -> list[Tiling]:
        return grid_family(family, self.targets(), self.max_crops, f"scheme {self.name!r}")

    def points(self, family: str) -> list[tuple[Tiling, tuple[int, int]]]:
        return [(t, self.resolution_for(t)) for t in self.family_tilings(family)]

    def targets(self) -> tuple[Tiling, ...]:
        return self.candidates()

    @property
    def image_processor_class(self) -> str:
        """The transformers image processor this scheme reproduces."""
        return PROCESSORS[self.order].image_processor

    def processor_kwargs(self) -> dict[str, Any]:
        """Keyword arguments that configure `image_processor_class` to this scheme.

        Raises:
            UsageError: kernel settings no processor has (another precision, tie rule, or no global view).
        """
        proc = PROCESSORS[self.order]
        if (self.arithmetic, self.tie, self.thumbnail) != (proc.arithmetic, proc.tie, True):
            raise UsageError(
                f"scheme {self.name!r} (order {self.order}, {self.arithmetic}, tie {self.tie}, thumbnail "
                f"{self.thumbnail}) has no {proc.image_processor} setting: it computes in {proc.arithmetic}, breaks "
                f"ties by {proc.tie} and adds the global view; use arithmetic={proc.arithmetic!r}, tie={proc.tie!r}, "
                "thumbnail=True"
            )
        size = {"height": self.tile_size, "width": self.tile_size}
        if self.order == "llama4":
            return {"size": size, "max_patches": self.max_tiles, "resize_to_max_canvas": False}
        return {"size": size, "crop_to_patches": True, "min_patches": 1, "max_patches": self.max_tiles}

    @classmethod
    def from_preprocessor_config(cls, config: Mapping[str, Any] | str | Path, **overrides: Any) -> TiledCanvas:
        """Build a scheme from a Llama 4 or Cohere2-Vision ``preprocessor_config.json`` (a dict or a path).

        The ``image_processor_type`` says which (``Llama4ImageProcessor[Fast]``,
        ``Cohere2VisionImageProcessor[Fast]``; without it, ``resize_to_max_canvas`` says
        Llama 4). Reads ``size`` (square: the tile) and ``max_patches``; Cohere2's
        ``crop_to_patches`` false is ``max_patches`` 1 (one T x T image either way).
        A combined ``processor_config.json`` (image processor keys nested under
        ``image_processor``) also gives the tokens per tile: Llama 4's ``patch_size``
        and ``pixel_shuffle_ratio`` (``(T/patch)^2 / round(1/ratio^2)``), Cohere2's image
        processor ``patch_size`` (tokens per side). Missing keys take the family
        preset's values; ``overrides`` (TiledCanvas field names) win over the config.

        Raises:
            UsageError: an unreadable file, another image processor's config or none of the keys, a non-square
                size, Llama 4's ``resize_to_max_canvas`` on (another selection rule), or an unknown override.
        """
        check_field_names(TiledCanvas, overrides, what="override")
        flat = flat_config(config)
        kind = str(flat.get("image_processor_type") or "")
        if kind.startswith("Llama4") or (not kind and "resize_to_max_canvas" in flat):
            order = "llama4"
        elif kind.startswith("Cohere2Vision") or (not kind and _CONFIG_KEYS & flat.keys()):
            order = "cohere2"
        else:
            raise UsageError(
                f"preprocessor config is for {kind or 'no known image processor'!r}, not Llama4ImageProcessor or "
                "Cohere2VisionImageProcessor; pass a Llama 4 or Cohere2-Vision preprocessor_config.json"
            )
        if flat.get("resize_to_max_canvas"):
            raise UsageError(
                "preprocessor config has resize_to_max_canvas true: Llama 4 then picks the largest canvas, a rule "
                "this scheme does not reproduce; use a config with resize_to_max_canvas false"
            )
        base = PRESETS[PROCESSORS[order].preset]
        fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(cls)}
        if flat.get("size") is not None:
            fields["tile_size"] = _tile_size(flat["size"])
        if flat.get("max_patches") is not None:
            fields["max_tiles"] = flat["max_patches"]
        if order == "cohere2" and flat.get("crop_to_patches") is False:
            fields["max_tiles"] = 1
        fields.update(_tokens_per_tile(order, flat, {**fields, **overrides}))
        if "name" not in overrides:
            same = cls(**{**fields, **overrides}) == base
            fields["name"] = base.name if same else f"{base.name}-custom"
        return cls(**{**fields, **overrides})


def _tokens_per_tile(order: str, flat: Mapping[str, Any], fields: Mapping[str, Any]) -> dict[str, Any]:
    """The tokens per tile a combined processor config states, if it does."""
    patch = flat.get("patch_size")
    if not isinstance(patch, int) or isinstance(patch, bool) or patch < 1:
        return {}
    if order == "cohere2":
        return {"tokens_per_tile": patch * patch}  # replace_image_token: patch_size ** 2 (tokens per side)
    ratio = flat.get("pixel_shuffle_ratio", 0.5)
    tile = fields["tile_size"]
    if not isinstance(ratio, (int, float)) or ratio <= 0 or not isinstance(tile, int):
        return {}
    return {"tokens_per_tile": (tile // patch) ** 2 // int(round(1.0 / ratio**2)), "patch_size": patch}


def _tile_size(size: Any) -> Any:
    if isinstance(size, Mapping) and {"height", "width"} <= size.keys():
        if size["height"] != size["width"]:
            raise UsageError(
                f"preprocessor config 'size' must be square, got {size['height']}x{size['width']}; tiles are square"
            )
        return size["height"]
    if isinstance(size, int) and not isinstance(size, bool):
        return size
    raise UsageError(f"preprocessor config 'size' must be {{'height': N, 'width': N}} or N, got {size!r}")


PRESETS: dict[str, TiledCanvas] = {
    # meta-llama/Llama-4-Scout-17B-16E(-Instruct) and Maverick: Llama4ImageProcessor defaults (336 px tiles, 16 at
    # most, resize_to_max_canvas off); Llama4Processor patch_size 14, pixel_shuffle_ratio 0.5: (336/14)^2 / 4 = 144.
    "llama4": TiledCanvas(name="llama4"),
    # CohereLabs/command-a-vision-07-2025: Cohere2VisionImageProcessor defaults (512 px tiles, 1..12, cropping on),
    # its patch_size 16 tokens a side = 256 a tile (SigLIP 512/16 = 32 patches a side, pixel-shuffled by 2).
    "cohere2-vision": TiledCanvas(
        name="cohere2-vision", tile_size=512, patch_size=16, max_tiles=12, order="cohere2", arithmetic=FLOAT64,
        tie=FIRST, thumbnail=True, tokens_per_tile=256, frame_tokens=2, crop_end_tokens=1, tile_separators=False,
    ),
}
