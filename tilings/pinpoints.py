"""Best-fit pinpoint schemes (LLaVA-OneVision "anyres"): a grid of tiles, unpadded and capped tokens.

A `Pinpoints` reproduces transformers' ``LlavaOnevisionImageProcessor`` (single-image
samples) and the token count of ``LlavaOnevisionProcessor``
(``models/llava_onevision/processing_llava_onevision.py``: ``_get_number_of_features``,
``_get_unpadded_features``), which ``LlavaOnevisionModel.pack_image_features`` matches:

1. the candidates are ``image_grid_pinpoints``, (height, width) pairs, in list order
   (``image_processing_utils.select_best_resolution``): with ``scale = min(W/w, H/h)``
   (a Python float) a pinpoint keeps ``effective = min(int(w*scale) * int(h*scale), w*h)``
   pixels and wastes ``H*W - effective``; strictly more effective pixels win, or as
   many and strictly fewer wasted; on a full tie the earlier pinpoint stays;
2. the image is resized to fit the pinpoint, centre-padded to it and cut row-major
   into ``(H/T) x (W/T)`` tiles of T px; crop 0 is the whole image resized to T x T,
   so crops = ``rows*cols + 1`` (``pixel_values`` is ``(1, crops, 3, T, T)``);
3. tokens, with ``P = isqrt(base_tokens)`` (27 = 384 // 14 for SigLIP, no CLS token):
   the tiles' feature map is ``rows*P x cols*P``; unpadding removes the rows (or
   columns) that are only padding, computed from the original aspect ratio with
   ``int(round(x, 7))``; the ``anyres_max_N`` cap then shrinks a map of more than
   ``1.1^2 * N * P^2`` features by ``ratio = sqrt(features / (N*P^2))`` on each side
   (``int(side // ratio)``), and every remaining row gets one ``image_newline``.
   image tokens = ``base_tokens + kept rows*cols + kept rows`` (minus one with the
   ``"default"`` feature strategy); the processor writes exactly that many ``<image>``
   tokens and nothing around them, so sequence tokens = image tokens.

The inverse is the pinpoint itself: at ``(H, W)`` the pinpoint's scale is exactly 1.0,
it keeps every pixel and wastes none; a larger pinpoint keeps as many but wastes some,
and any pinpoint that does not contain the image keeps fewer. Every grid in the list
is reachable, and no other.

Unpadding is a second sweep axis: an image ``H x w`` with ``(c-1)*T < w <= c*T`` still
selects the pinpoint ``(H, c*T)`` (same grid, same crops) while unpadding drops
feature columns, so tokens fall at constant crops (the ``unpad`` family; likewise in
height). Under the cap the feature count is rescaled to about ``N*P^2`` whatever the
aspect, so unpadding only lowers tokens on grids the cap leaves alone (rows*cols <= 10
for OneVision); the family uses such grids.

Multi-image samples (``batch_num_images`` > 1 for one text) are not anyres in
transformers: each image becomes one pad-to-square crop of ``base_tokens + 1`` tokens.
This scheme describes single-image samples only.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from tilesweep.errors import UsageError
from tilings._checks import check_positive_int
from tilings._records import GridFamilies, SchemeRecord, check_field_names, read_preprocessor_config
from tilings.grids import GRID_FAMILIES, grid_family
from tilings.types import Geometry, Tiling

# The processor reads sizes from image tensors (int64 shapes); larger sizes are no image at all.
MAX_SIZE = 2**63
# transformers' default pinpoints for LLaVA-OneVision (image processor and model config): 1..6 x 1..6 tiles of 384.
DEFAULT_PINPOINTS: tuple[tuple[int, int], ...] = tuple((r * 384, c * 384) for r in range(1, 7) for c in range(1, 7))
STRATEGIES = ("full", "default")
UNPAD = "unpad"
# Grids of the unpad family (those the scheme has), the side shrunk in steps of tile_size // 8.
UNPAD_GRIDS: tuple[Tiling, ...] = (Tiling(1, 1), Tiling(2, 2), Tiling(2, 3), Tiling(3, 2), Tiling(3, 3))
UNPAD_SIZES = 5
_ASPECT_RATIO = re.compile(r"anyres_max_([1-9][0-9]*)")
_CONFIG_KEYS = frozenset({"size", "crop_size", "image_grid_pinpoints"})
_PROCESSOR_KEYS = {"num_image_tokens": "base_tokens", "vision_feature_select_strategy": "vision_feature_select_strategy"}


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Pinpoints(GridFamilies, SchemeRecord):
    """One best-fit-pinpoint preprocessor's numbers (a grid `tilings.scheme.Scheme`).

    Attributes:
        name: a label carried into results (``"llava-onevision"``).
        tile_size: T, side of the square tiles and of crop 0, in pixels (the image
            processor's ``size``, which must equal its ``crop_size`` and the vision
            tower's ``image_size``).
        patch_size: side of a vision-encoder patch (the model's ``vision_config.patch_size``).
        pinpoints: the candidate canvases, (height, width) multiples of T, in the
            processor's order (``image_grid_pinpoints``; the model config must hold the same list).
        vision_feature_select_strategy: ``"full"`` (OneVision) or ``"default"`` (one token less per image).
        anyres_max: N of the ``vision_aspect_ratio`` ``"anyres_max_N"`` cap.
        base_tokens: features of one crop, ``(T // patch_size)^2`` (the processor's ``num_image_tokens``).
    """

    SCHEME: ClassVar[str] = "pinpoints"

    name: str
    tile_size: int = 384
    patch_size: int = 14
    pinpoints: tuple[tuple[int, int], ...] = DEFAULT_PINPOINTS
    vision_feature_select_strategy: str = "full"
    anyres_max: int = 9
    base_tokens: int = 729

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise UsageError(f"Pinpoints.name must be a non-empty string, got {self.name!r}")
        for field in ("tile_size", "patch_size", "anyres_max", "base_tokens"):
            object.__setattr__(self, field, check_positive_int(f"Pinpoints.{field}", getattr(self, field)))
        if self.patch_size > self.tile_size:
            raise UsageError(
                f"Pinpoints {self.name!r}: patch_size {self.patch_size} is over tile_size {self.tile_size}; "
                "a tile must hold at least one patch"
            )
        side = self.tile_size // self.patch_size
        if self.base_tokens != side * side:
            raise UsageError(
                f"Pinpoints {self.name!r}: base_tokens {self.base_tokens} is not (tile_size // patch_size)^2 = "
                f"{side * side}; the model raises on that mismatch, pass base_tokens={side * side}"
            )
        if self.vision_feature_select_strategy not in STRATEGIES:
            raise UsageError(
                f"Pinpoints.vision_feature_select_strategy must be one of {', '.join(STRATEGIES)}, "
                f"got {self.vision_feature_select_strategy!r}"
            )
        object.__setattr__(self, "pinpoints", _checked_pinpoints(self.name, self.pinpoints, self.tile_size))

    # ----- the processor's arithmetic -----
    @property
    def tile_patches(self) -> int:
        """Encoder patches along one side of a tile."""
        return self.tile_size // self.patch_size

    @property
    def vision_aspect_ratio(self) -> str:
        """The processor's and the model's ``vision_aspect_ratio`` string."""
        return f"anyres_max_{self.anyres_max}"

    def _select(self, height: int, width: int) -> tuple[int, int]:
        """``select_best_resolution``: the same float operations, in the same order, with the same ties."""
        best_fit = self.pinpoints[0]  # the processor starts from None; the first pinpoint always replaces it
        max_effective_resolution = 0
        min_wasted_resolution = math.inf
        for pin_height, pin_width in self.pinpoints:
            scale = min(pin_width / width, pin_height / height)
            downscaled_width, downscaled_height = int(width * scale), int(height * scale)
            effective_resolution = min(downscaled_width * downscaled_height, width * height)
            wasted_resolution = (pin_width * pin_height) - effective_resolution
            if effective_resolution > max_effective_resolution or (
                effective_resolution == max_effective_resolution and wasted_resolution < min_wasted_resolution
            ):
                max_effective_resolution = effective_resolution
                min_wasted_resolution = wasted_resolution
                best_fit = (pin_height, pin_width)
        return best_fit

    def _image_tokens(self, height: int, width: int, tiling: Tiling) -> int:
        """``_get_number_of_features`` (+ ``_get_unpadded_features``) and ``replace_image_token``'s strategy rule."""
        patches = int(math.sqrt(self.base_tokens))
        current_height = patches * tiling.rows
        current_width = patches * tiling.cols
        original_aspect_ratio = width / height
        current_aspect_ratio = current_width / current_height
        if original_aspect_ratio > current_aspect_ratio:
            new_height = int(round(height * (current_width / width), 7))
            padding = (current_height - new_height) // 2
            current_height -= padding * 2
        else:
            new_width = int(round(width * (current_height / height), 7))
            padding = (current_width - new_width) // 2
            current_width -= padding * 2
        unpadded = current_height * current_width
        newline = current_height
        ratio = math.sqrt(current_height * current_width / (self.anyres_max * patches**2))
        if ratio > 1.1:
            unpadded = int(current_height // ratio) * int(current_width // ratio)
            newline = int(current_height // ratio)
        tokens = unpadded + newline + self.base_tokens
        return tokens - 1 if self.vision_feature_select_strategy == "default" else tokens

    def select(self, height: int, width: int) -> Tiling:
        """The grid the processor picks for an image of `height` x `width` pixels.

        Raises:
            UsageError: a size that is not a positive integer.
        """
        height = check_positive_int("height", height, below=MAX_SIZE)
        width = check_positive_int("width", width, below=MAX_SIZE)
        pin_height, pin_width = self._select(height, width)
        return Tiling(pin_height // self.tile_size, pin_width // self.tile_size)

    # ----- the scheme interface (tilings.scheme.Scheme) -----
    @property
    def families(self) -> tuple[str, ...]:
        return (*GRID_FAMILIES, UNPAD)

    @property
    def max_crops(self) -> int:
        return max(t.cells for t in self.targets())

    def geometry(self, height: int, width: int) -> Geometry:
        tiling = self.select(height, width)
        crops = tiling.cells + 1
        image_tokens = self._image_tokens(int(height), int(width), tiling)
        return Geometry(
            tiling=tiling,
            crops=crops,
            canvas=(tiling.rows * self.tile_size, tiling.cols * self.tile_size),
            image_tokens=image_tokens,
            sequence_tokens=image_tokens,  # the processor adds no start, end or separator tokens
            encoder_patches=crops * self.tile_patches**2,
        )

    def check_target(self, target: Any) -> Tiling:
        """`target` as a `Tiling` the scheme reaches.

        Raises:
            UsageError: not a pair of positive integers, or a grid that is no pinpoint.
        """
        if isinstance(target, str) or not isinstance(target, (tuple, list)) or len(target) != 2:
            raise UsageError(f"a tiling is a pair (rows, cols) of positive integers, got {target!r}")
        tiling = Tiling(check_positive_int("tiling rows", target[0]), check_positive_int("tiling cols", target[1]))
        if tiling not in self.targets():
            grids = " ".join(str(t) for t in self.targets())
            raise UsageError(
                f"tiling {tiling} is unreachable: scheme {self.name!r} only has the grids of its pinpoints ({grids}); "
                f"pick one of them, or add the pinpoint ({tiling.rows * self.tile_size}, "
                f"{tiling.cols * self.tile_size}) to image_grid_pinpoints of both processor and model"
            )
        return tiling

    def target_geometry(self, target: Tiling) -> Geometry:
        return self.geometry(*self.resolution_for(target))

    def resolution_for(self, target: Tiling) -> tuple[int, int]:
        """The pinpoint itself, ``(rows*T, cols*T)``: it keeps every pixel and wastes none (module docstring).

        Raises:
            UsageError: a grid that is not among the pinpoints (the message lists them).
        """
        tiling = self.check_target(target)
        size = (tiling.rows * self.tile_size, tiling.cols * self.tile_size)
        if self._select(*size) != size:  # the module docstring proves this never happens
            raise RuntimeError(f"pinpoint {size} does not select itself in scheme {self.name!r}: a tilings bug")
        return size

    def family_tilings(self, family: str) -> list[Tiling]:
        if family == UNPAD:
            return list(dict.fromkeys(t for t, _ in self.points(UNPAD)))
        return grid_family(family, self.targets(), self.max_crops, f"scheme {self.name!r}", known=self.families)

    def points(self, family: str) -> list[tuple[Tiling, tuple[int, int]]]:
        if family == UNPAD:
            return self._unpad_points()
        return [(t, self.resolution_for(t)) for t in self.family_tilings(family)]

    def _unpad_points(self) -> list[tuple[Tiling, tuple[int, int]]]:
        """Each `UNPAD_GRIDS` grid the scheme has, its pinpoint narrowed (rows > cols: shortened) in steps of
        T // 8; a size is kept only while it gives the grid and fewer tokens than the last one kept."""
        step = max(1, self.tile_size // 8)
        out: list[tuple[Tiling, tuple[int, int]]] = []
        for tiling in UNPAD_GRIDS:
            if tiling not in self.targets():
                continue
            height, width = self.resolution_for(tiling)
            last_tokens = None
            for k in range(UNPAD_SIZES):
                size = (height - k * step, width) if tiling.rows > tiling.cols else (height, width - k * step)
                if min(size) < 1:
                    break
                geo = self.geometry(*size)
                if geo.tiling != tiling or (last_tokens is not None and geo.image_tokens >= last_tokens):
                    continue
                out.append((tiling, size))
                last_tokens = geo.image_tokens
        return out

    def targets(self) -> tuple[Tiling, ...]:
        return tuple(Tiling(h // self.tile_size, w // self.tile_size) for h, w in self.pinpoints)

    def processor_kwargs(self) -> dict[str, Any]:
        """Keyword arguments that configure `transformers.LlavaOnevisionImageProcessor` to this scheme."""
        return {
            "size": {"height": self.tile_size, "width": self.tile_size},
            "crop_size": {"height": self.tile_size, "width": self.tile_size},
            "image_grid_pinpoints": [list(p) for p in self.pinpoints],
        }

    def llava_processor_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `transformers.LlavaOnevisionProcessor` (besides its image processor, video
        processor and tokenizer) that decide how many ``<image>`` tokens it writes."""
        return {
            "num_image_tokens": self.base_tokens,
            "vision_feature_select_strategy": self.vision_feature_select_strategy,
            "vision_aspect_ratio": self.vision_aspect_ratio,
        }

    def model_config_kwargs(self) -> dict[str, Any]:
        """`transformers.LlavaOnevisionConfig` keys that must agree with this scheme (its ``vision_config``
        also needs ``image_size`` = `tile_size` and ``patch_size`` = `patch_size`)."""
        return {
            "image_grid_pinpoints": [list(p) for p in self.pinpoints],
            "vision_feature_select_strategy": self.vision_feature_select_strategy,
            "vision_aspect_ratio": self.vision_aspect_ratio,
        }

    @classmethod
    def from_preprocessor_config(cls, config: Mapping[str, Any] | str | Path, **overrides: Any) -> Pinpoints:
        """Build a scheme from a checkpoint's ``preprocessor_config.json`` (a dict or a path).

        Reads ``size`` (square ``height``/``width``, or ``shortest_edge``: the tile),
        ``crop_size`` (must equal the tile: the processor cuts tiles of ``crop_size``
        but counts tokens with ``size``) and ``image_grid_pinpoints``. A combined
        ``processor_config.json`` (image processor keys nested under
        ``image_processor``) also gives ``num_image_tokens``,
        ``vision_feature_select_strategy`` and ``vision_aspect_ratio``. Missing keys
        take the llava-onevision preset's values; the patch size, strategy and cap
        are model-config numbers: pass them as ``overrides`` (Pinpoints field names,
        which win over the config).

        Raises:
            UsageError: an unreadable file, a config of another image processor or
                with none of the keys, a non-square or inconsistent size, or an unknown override.
        """
        check_field_names(Pinpoints, overrides, what="override")
        flat = read_preprocessor_config(config, "LlavaOnevisionImageProcessor",
                                        "a LLaVA-OneVision preprocessor_config.json")
        if not _CONFIG_KEYS & flat.keys():
            raise UsageError(
                f"preprocessor config has none of the LlavaOnevisionImageProcessor keys ({', '.join(sorted(_CONFIG_KEYS))}); "
                "pass a LLaVA-OneVision preprocessor_config.json"
            )
        base = PRESETS["llava-onevision"]
        fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(cls)}
        if flat.get("size") is not None:
            fields["tile_size"] = _square_side("size", flat["size"])
        if flat.get("crop_size") is not None:
            crop = _square_side("crop_size", flat["crop_size"])
            if crop != fields["tile_size"]:
                raise UsageError(
                    f"preprocessor config crop_size {crop} disagrees with size {fields['tile_size']}: the processor "
                    "would cut tiles of one and count tokens with the other; fix the config (make them equal)"
                )
        if flat.get("image_grid_pinpoints") is not None:
            fields["pinpoints"] = flat["image_grid_pinpoints"]
        for key, field in _PROCESSOR_KEYS.items():
            if flat.get(key) is not None:
                fields[field] = flat[key]
        if flat.get("vision_aspect_ratio") is not None:
            fields["anyres_max"] = parse_vision_aspect_ratio(flat["vision_aspect_ratio"])
        merged = {**fields, **overrides}
        if "base_tokens" not in overrides and "num_image_tokens" not in flat:
            # Not stated anywhere: the features of one tile, (T // patch)^2 (checked by the constructor otherwise).
            tile, patch = merged["tile_size"], merged["patch_size"]
            if all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (tile, patch)):
                merged["base_tokens"] = (tile // patch) ** 2
        if "name" not in overrides:
            same = cls(**merged) == base
            merged["name"] = base.name if same else f"{base.name}-custom"
        return cls(**merged)


def parse_vision_aspect_ratio(value: Any) -> int:
    """N of ``"anyres_max_N"`` (the processor reads it as ``int(value.strip("anyres_max_"))``).

    Raises:
        UsageError: any other value.
    """
    match = _ASPECT_RATIO.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise UsageError(
            f"vision_aspect_ratio must be 'anyres_max_N' with N a positive integer, got {value!r}; "
            "LLaVA-OneVision uses 'anyres_max_9'"
        )
    return int(match.group(1))


def _checked_pinpoints(name: str, pinpoints: Any, tile: int) -> tuple[tuple[int, int], ...]:
    """`pinpoints` as a tuple of (height, width) int pairs, each a multiple of `tile`, none repeated."""
    if isinstance(pinpoints, (str, bytes)) or not isinstance(pinpoints, Sequence) or not pinpoints:
        raise UsageError(
            f"Pinpoints {name!r}: pinpoints must be a non-empty list of (height, width) pairs, got {pinpoints!r}"
        )
    out: list[tuple[int, int]] = []
    for pair in pinpoints:
        if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise UsageError(f"Pinpoints {name!r}: a pinpoint is a pair (height, width), got {pair!r}")
        height = check_positive_int("pinpoint height", pair[0])
        width = check_positive_int("pinpoint width", pair[1])
        if height % tile or width % tile:
            raise UsageError(
                f"Pinpoints {name!r}: pinpoint ({height}, {width}) is not a multiple of tile_size {tile}; "
                "the processor would cut partial tiles, pick multiples of the tile"
            )
        if (height, width) in out:
            raise UsageError(f"Pinpoints {name!r}: pinpoint ({height}, {width}) is listed twice; list each once")
        out.append((height, width))
    return tuple(out)


def _square_side(key: str, size: Any) -> Any:
    """The side of a square ``size``/``crop_size`` (``{"height", "width"}``, ``{"shortest_edge"}`` or an int)."""
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        return int(size)
    if isinstance(size, Mapping):
        if {"height", "width"} <= size.keys():
            if size["height"] != size["width"]:
                raise UsageError(
                    f"preprocessor config {key!r} must be square, got {size['height']}x{size['width']}; tiles are square"
                )
            return size["height"]
        if "shortest_edge" in size:
            return size["shortest_edge"]
    raise UsageError(
        f"preprocessor config {key!r} must be {{'height': T, 'width': T}} or {{'shortest_edge': T}}, got {size!r}"
    )



PRESETS: dict[str, Pinpoints] = {
    # llava-hf/llava-onevision-qwen2-*-ov-hf: SigLIP 384/14 (27x27 = 729 features a crop, no CLS), the 36 pinpoints
    # 1..6 x 1..6 tiles, feature strategy "full", vision_aspect_ratio "anyres_max_9".
    "llava-onevision": Pinpoints(name="llava-onevision"),
}
