"""Padded-canvas grid schemes (Llama 3.2 Vision's ``MllamaImageProcessor``): exact tilings, constant compute.

A `PaddedCanvas` reproduces transformers' ``MllamaImageProcessor`` (and its PIL twin
``MllamaImageProcessorPil``; ``models/mllama/image_processing_mllama.py``:
``get_all_supported_aspect_ratios``, ``get_optimal_tiled_canvas``,
``get_image_size_fit_to_canvas``, ``pad_batches_and_tiles``):

1. the canvases are ``(a*T, b*T)`` for every ``a*b <= max_image_tiles``, listed
   ``a``-outer ``b``-inner (``a`` is the canvas *height* in tiles: the function's
   docstring calls the pair (width, height), but ``get_optimal_tiled_canvas`` reads
   the first number as the height);
2. in numpy float64, each canvas's scale is ``min(a*T / h, b*T / w)``; if any scale
   is at least 1 the smallest such is taken (least up-scaling), else the largest
   (least down-scaling); among the canvases with exactly that scale, the one of
   smallest area (``argmin``: the first on a tie);
3. the image is resized to fit the canvas (aspect kept, each side clipped to
   ``[T, canvas side]``), padded at the bottom and right to the canvas and cut into
   ``a*b`` tiles of ``T x T``;
4. **``pad_batches_and_tiles`` pads every image to ``max_image_tiles`` tiles** (zero
   tiles, masked by ``aspect_ratio_mask``), and the vision encoder runs on all of them:
   ``pixel_values`` is ``(1, 1, max_image_tiles, 3, T, T)`` whatever the tiling.

So a tiling changes which tiles hold pixels and which embedding rows are read, not
how much is computed: the encoder always embeds ``max_image_tiles`` tiles of
``(T/p)^2`` patches plus a CLS token each, and the language model's cross-attention
layers always attend to ``max_image_tiles * ((T/p)^2 + 1)`` vision states. A sweep
over this scheme's tilings is a constant-compute control (`constant_compute`):
stage times that move with the tiling would be the instrument's error, not the model's.

Tokens. The vision features are not tokens of the text: the processor keeps the one
``<|image|>`` token the prompt holds (``MllamaProcessor.replace_image_token`` returns
it unchanged) and the features enter through cross-attention. So ``image_tokens`` =
``sequence_tokens`` = 1 (exact, with or without a tokenizer: ``<|image|>`` is one
special token), ``crops`` = ``max_image_tiles`` (the tiles the encoder runs on, padding
included) and ``encoder_patches`` = ``max_image_tiles * (T/p)^2``;
`cross_attention_tokens` is the number of vision states the LLM attends to.

The inverse. An image of exactly ``(rows*T, cols*T)`` has scale 1 for its own canvas
and for every canvas that contains it, below 1 for every other; its own canvas is the
smallest of those, so it is picked (every grid within ``max_image_tiles`` is reachable).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from tilesweep.errors import UsageError
from tilings._checks import check_positive_int
from tilings._records import GridFamilies, SchemeRecord, check_field_names, read_preprocessor_config
from tilings.grids import grid_family
from tilings.types import Geometry, Tiling

# The processor holds image sizes in int64 numpy arrays; larger sizes are no image at all.
MAX_SIZE = 2**63
_CONFIG_KEYS = frozenset({"size", "max_image_tiles"})


@functools.lru_cache(maxsize=64)
def _canvases(max_image_tiles: int) -> tuple[Tiling, ...]:
    """``get_all_supported_aspect_ratios`` as (rows, cols): first number outer, second inner."""
    return tuple(Tiling(a, b) for a in range(1, max_image_tiles + 1) for b in range(1, max_image_tiles + 1)
                 if a * b <= max_image_tiles)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PaddedCanvas(GridFamilies, SchemeRecord):
    """One padded-canvas preprocessor's numbers (a grid `tilings.scheme.Scheme`; see the module docstring).

    Attributes:
        name: a label carried into results (``"mllama"``).
        tile_size: T, side of the square tiles, in pixels (the processor's ``size``; the
            model's ``vision_config.image_size``).
        patch_size: side of a vision-encoder patch (the model's ``vision_config.patch_size``).
        max_image_tiles: the most tiles a canvas may have, and the tiles every image is
            padded to (the processor's ``max_image_tiles``; the model's ``max_num_tiles``).
    """

    SCHEME: ClassVar[str] = "padded-canvas"

    name: str
    tile_size: int = 560
    patch_size: int = 14
    max_image_tiles: int = 4

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise UsageError(f"PaddedCanvas.name must be a non-empty string, got {self.name!r}")
        for field in ("tile_size", "patch_size", "max_image_tiles"):
            object.__setattr__(self, field, check_positive_int(f"PaddedCanvas.{field}", getattr(self, field)))
        if self.tile_size % self.patch_size:
            raise UsageError(
                f"PaddedCanvas {self.name!r}: tile_size {self.tile_size} is not a multiple of patch_size "
                f"{self.patch_size}; pick a tile size of whole patches"
            )

    # ----- the processor's arithmetic -----
    @property
    def tile_patches(self) -> int:
        """Encoder patches along one side of a tile."""
        return self.tile_size // self.patch_size

    @property
    def cross_attention_tokens(self) -> int:
        """Vision states the LLM's cross-attention layers attend to: every tile's patches and CLS, padding included."""
        return self.max_image_tiles * (self.tile_patches**2 + 1)

    @property
    def constant_compute(self) -> str:
        """Why this scheme is a constant-compute control (`tilings.scheme.constant_compute`)."""
        return (f"{self.name} pads every image to max_image_tiles = {self.max_image_tiles} tiles of {self.tile_size} px: "
                f"the vision encoder always runs on {self.max_image_tiles} tiles and the LLM's cross-attention "
                f"always attends to {self.cross_attention_tokens} vision states (padding tiles are masked, not "
                "skipped), so stage times should be flat across its tilings")

    def candidates(self) -> tuple[Tiling, ...]:
        """The canvases the processor considers, as (rows, cols) tile grids, in its order."""
        return _canvases(self.max_image_tiles)

    def _select(self, height: int, width: int) -> Tiling:
        """``get_optimal_tiled_canvas`` on checked sizes, in the same float64 operations.

        numpy divides an int64 array by an int64 scalar by converting both to float64
        first; Python's ``float(a) / float(b)`` is the same two roundings and one
        IEEE division.
        """
        tile = self.tile_size
        h, w = float(height), float(width)
        canvases = self.candidates()
        scales = []
        for c in canvases:
            scale_h, scale_w = float(c.rows * tile) / h, float(c.cols * tile) / w
            scales.append(scale_h if scale_w > scale_h else scale_w)  # np.where(scale_w > scale_h, scale_h, scale_w)
        upscaling = [s for s in scales if s >= 1]
        selected = min(upscaling) if upscaling else max(s for s in scales if s < 1)
        chosen = [c for c, s in zip(canvases, scales) if s == selected]
        return min(chosen, key=lambda c: c.rows * c.cols)  # np.argmin over the areas: the first on a tie

    def select(self, height: int, width: int) -> Tiling:
        """The tile grid the processor picks for an image of `height` x `width` pixels.

        Raises:
            UsageError: a size that is not a positive integer.
        """
        height = check_positive_int("height", height, below=MAX_SIZE)
        width = check_positive_int("width", width, below=MAX_SIZE)
        return self._select(height, width)

    def grid_geometry(self, tiling: Tiling) -> Geometry:
        """Crops, canvas and token counts of a grid, whatever image size led to it (not checked)."""
        tiling = Tiling(*tiling)
        return Geometry(
            tiling=tiling,
            crops=self.max_image_tiles,  # padded: the encoder runs on every tile, image or zeros
            canvas=(tiling.rows * self.tile_size, tiling.cols * self.tile_size),
            image_tokens=1,  # <|image|>: the features are cross-attention states, not tokens of the text
            sequence_tokens=1,
            encoder_patches=self.max_image_tiles * self.tile_patches**2,
        )

    # ----- the scheme interface (tilings.scheme.Scheme) -----
    @property
    def max_crops(self) -> int:
        return self.max_image_tiles

    def geometry(self, height: int, width: int) -> Geometry:
        return self.grid_geometry(self.select(height, width))

    def check_target(self, target: Any) -> Tiling:
        """`target` as a `Tiling`, checked against the processor's limit.

        Raises:
            UsageError: not a pair of positive integers, or more tiles than ``max_image_tiles``.
        """
        if isinstance(target, str) or not isinstance(target, (tuple, list)) or len(target) != 2:
            raise UsageError(f"a tiling is a pair (rows, cols) of positive integers, got {target!r}")
        tiling = Tiling(check_positive_int("tiling rows", target[0]), check_positive_int("tiling cols", target[1]))
        if tiling.cells > self.max_image_tiles:
            raise UsageError(
                f"tiling {tiling} has {tiling.cells} tiles, over scheme {self.name!r}'s max_image_tiles "
                f"{self.max_image_tiles}; pick rows*cols <= {self.max_image_tiles}"
            )
        return tiling

    def target_geometry(self, target: Tiling) -> Geometry:
        return self.grid_geometry(self.check_target(target))

    def resolution_for(self, target: Tiling) -> tuple[int, int]:
        """The target's own canvas, ``(rows*T, cols*T)`` (the module docstring says why it is picked).

        Raises:
            UsageError: an unreachable target (the message says the limit).
        """
        tiling = self.check_target(target)
        size = (tiling.rows * self.tile_size, tiling.cols * self.tile_size)
        if self._select(*size) != tiling:  # the module docstring proves this never happens
            raise RuntimeError(f"the canvas of {tiling} does not give {tiling} in scheme {self.name!r}: a tilings bug")
        return size

    def family_tilings(self, family: str) -> list[Tiling]:
        return grid_family(family, self.targets(), self.max_crops, f"scheme {self.name!r}")

    def points(self, family: str) -> list[tuple[Tiling, tuple[int, int]]]:
        return [(t, self.resolution_for(t)) for t in self.family_tilings(family)]

    def targets(self) -> tuple[Tiling, ...]:
        return self.candidates()

    def processor_kwargs(self) -> dict[str, Any]:
        """Keyword arguments that configure `transformers.MllamaImageProcessor` (or its PIL twin) to this scheme."""
        return {"size": {"height": self.tile_size, "width": self.tile_size}, "max_image_tiles": self.max_image_tiles}

    @classmethod
    def from_preprocessor_config(cls, config: Mapping[str, Any] | str | Path, **overrides: Any) -> PaddedCanvas:
        """Build a scheme from a checkpoint's ``preprocessor_config.json`` (a dict or a path).

        Reads ``size`` (square: the tile) and ``max_image_tiles``; missing keys take the
        mllama preset's values. The patch size is a model-config number: pass it as an
        override (PaddedCanvas field names, which win over the config).

        Raises:
            UsageError: an unreadable file, a config of another image processor or with
                none of the keys, a non-square size, or an unknown override.
        """
        check_field_names(PaddedCanvas, overrides, what="override")
        flat = read_preprocessor_config(config, "MllamaImageProcessor", "a Llama 3.2 Vision preprocessor_config.json")
        if not _CONFIG_KEYS & flat.keys():
            raise UsageError(
                f"preprocessor config has none of the MllamaImageProcessor keys ({', '.join(sorted(_CONFIG_KEYS))}); "
                "pass a Llama 3.2 Vision preprocessor_config.json"
            )
        base = PRESETS["mllama"]
        fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(cls)}
        if flat.get("size") is not None:
            fields["tile_size"] = _square_side(flat["size"])
        if flat.get("max_image_tiles") is not None:
            fields["max_image_tiles"] = flat["max_image_tiles"]
        if "name" not in overrides:
            same = cls(**{**fields, **overrides}) == base
            fields["name"] = base.name if same else f"{base.name}-custom"
        return cls(**{**fields, **overrides})


def _square_side(size: Any) -> Any:
    if isinstance(size, Mapping) and {"height", "width"} <= size.keys():
        if size["height"] != size["width"]:
            raise UsageError(f"preprocessor config 'size' must be square, got {size['height']}x{size['width']}; "
                             "MllamaImageProcessor takes square tiles only")
        return size["height"]
    raise UsageError(f"preprocessor config 'size' must be {{'height': N, 'width': N}}, got {size!r}")


PRESETS: dict[str, PaddedCanvas] = {
    # Llama 3.2 Vision (meta-llama/Llama-3.2-11B-Vision and -90B-Vision, preprocessor_config.json): 560 px tiles,
    # at most 4, every image padded to 4; the vision tower's patches are 14 px (40x40 per tile, plus a CLS token).
    "mllama": PaddedCanvas(name="mllama", tile_size=560, patch_size=14, max_image_tiles=4),
    # The tiny CPU model's geometry (workers.mllama): the released 560 px tiles and 4 tiles, so its images are the
    # released sizes, but 56 px patches (10x10 per tile): at 14 px the encoder's attention over 4 x 1608 positions
    # takes seconds on a CPU.
    "mllama-tiny": PaddedCanvas(name="mllama-tiny", tile_size=560, patch_size=56, max_image_tiles=4),
}
