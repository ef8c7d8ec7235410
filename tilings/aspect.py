"""Closest-aspect-ratio grid schemes (InternVL's GotOcr2 image processor): tiles plus a thumbnail.

A `ClosestAspect` reproduces transformers' ``GotOcr2ImageProcessor`` with
``crop_to_patches=True`` (``models/got_ocr2/image_processing_got_ocr2.py``:
``get_all_supported_aspect_ratios``, ``get_optimal_tiled_canvas``,
``crop_image_to_patches``, ``get_number_of_image_patches``), the image processor
of InternVL (and Aya Vision), whose processors force ``crop_to_patches=True``:

1. candidates are the grids ``(cols, rows)`` with ``min <= cols*rows <= max``,
   listed cols-outer rows-inner, then stably sorted by ``cols*rows``;
2. with ``aspect = width / height`` (a Python float), a candidate whose
   ``abs(aspect - cols/rows)`` is strictly smaller than the best so far wins; on an
   exact tie the later candidate wins iff ``width*height > 0.5*T*T*cols*rows``
   (more tiles while the image is more than half their area);
3. the image is resized, distorted, to ``(rows*T, cols*T)`` and cut row-major into
   ``rows*cols`` tiles of ``T x T``; a grid of more than one tile gets one more
   image, the whole picture resized to ``T x T`` (the thumbnail).

Tokens (``models/internvl/processing_internvl.py``, ``replace_image_token``): each
image becomes ``<img>`` + ``<IMG_CONTEXT>`` x (``image_seq_length`` x crops) +
``</img>``; ``image_seq_length`` = 256 = (448/14)^2 * 0.5^2 (pixel shuffle,
``downsample_ratio`` 0.5). Tokens are a linear function of crops: 1x8 and 2x4 cost
the same tokens.

The inverse. An image of exactly ``(r0*u, c0*u)`` pixels, ``(r0, c0)`` the grid's
reduced ratio, has ``aspect == c0/r0`` bit for bit (Python rounds an integer
quotient correctly), so every grid of that ratio, ``k*(r0, c0)``, ties at a
difference of exactly 0 and the tie rule picks the largest ``k`` with
``(r0*u)*(c0*u) > 0.5*T^2*k^2*r0*c0``, i.e. ``u > k*T/sqrt(2)``. The grid
``g*(r0, c0)`` is picked iff ``g*T/sqrt(2) < u <= (g+1)*T/sqrt(2)`` (each bound
only where that neighbouring grid is a candidate): an interval of length
``T/sqrt(2) > 1``, so every grid within the limits has a size. Tiles of exactly
``T`` px (``u = g*T``) fail once ``(g+1)^2*r0*c0 <= max`` and ``g >= 3`` (3x3 becomes
4x4 from 16 tiles on); tiles of ``ceil(0.75*T)`` px satisfy both bounds for every
``g <= 16`` at ``T = 448``. `resolution_for` takes that tile size where it works and
the middle of the interval where it does not.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from tilesweep.errors import UsageError
from tilings._checks import check_positive_int
from tilings._records import GridFamilies, SchemeRecord, check_field_names, read_preprocessor_config
from tilings.grids import grid_family
from tilings.types import Geometry, Tiling

# The processor reads sizes from image tensors (int64 shapes); larger sizes are no image at all.
MAX_SIZE = 2**63
# The processor's tie rule: on equal aspect-ratio differences, the later (larger) grid wins
# while the image area exceeds this fraction of the grid's tile area (hard-coded in transformers).
PROCESSOR_TIE_AREA_FRACTION = 0.5
# Processors whose call forces ``crop_to_patches=True`` whatever the image processor's config says.
_FORCING_PROCESSORS = frozenset({"InternVLProcessor", "AyaVisionProcessor", "QianfanOCRProcessor"})
_CONFIG_KEYS = frozenset({"size", "min_patches", "max_patches", "crop_to_patches"})


@functools.lru_cache(maxsize=64)
def _candidates(min_patches: int, max_patches: int) -> tuple[tuple[int, int], ...]:
    """``get_all_supported_aspect_ratios``: (cols, rows) pairs, cols-outer rows-inner, stably sorted by tiles."""
    grids = [
        (cols, rows)
        for cols in range(1, max_patches + 1)
        for rows in range(1, max_patches + 1)
        if min_patches <= cols * rows <= max_patches
    ]
    return tuple(sorted(grids, key=lambda g: g[0] * g[1]))


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ClosestAspect(GridFamilies, SchemeRecord):
    """One closest-aspect-ratio preprocessor's numbers (a grid `tilings.scheme.Scheme`).

    Attributes:
        name: a label carried into results (``"internvl3"``).
        tile_size: T, side of the square tiles and of the thumbnail, in pixels (the processor's ``size``).
        patch_size: side of a vision-encoder patch, in pixels (the model's ``vision_config.patch_size``).
        min_patches: fewest tiles a grid may have (the processor's ``min_patches``).
        max_patches: most tiles a grid may have (the processor's ``max_patches``).
        crop_to_patches: cut the image into tiles; off, every image is one T x T view.
        thumbnail: a grid of more than one tile also sends the whole image at T x T
            (transformers always does; off only describes other implementations).
        tokens_per_tile: placeholder tokens per image sent to the encoder (the model's ``image_seq_length``).
        tie_area_fraction: on an exact aspect-ratio tie the larger grid wins while
            ``width*height > tie_area_fraction * T^2 * tiles`` (transformers: 0.5).
    """

    SCHEME: ClassVar[str] = "closest-aspect"

    name: str
    tile_size: int = 448
    patch_size: int = 14
    min_patches: int = 1
    max_patches: int = 12
    crop_to_patches: bool = True
    thumbnail: bool = True
    tokens_per_tile: int = 256
    tie_area_fraction: float = PROCESSOR_TIE_AREA_FRACTION

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise UsageError(f"ClosestAspect.name must be a non-empty string, got {self.name!r}")
        for field in ("tile_size", "patch_size", "min_patches", "max_patches", "tokens_per_tile"):
            object.__setattr__(self, field, check_positive_int(f"ClosestAspect.{field}", getattr(self, field)))
        for field in ("crop_to_patches", "thumbnail"):
            if not isinstance(getattr(self, field), bool):
                raise UsageError(f"ClosestAspect.{field} must be true or false, got {getattr(self, field)!r}")
        if self.tile_size < 2 or self.tile_size % self.patch_size:
            raise UsageError(
                f"ClosestAspect {self.name!r}: tile_size {self.tile_size} must be at least 2 and a multiple of "
                f"patch_size {self.patch_size}; pick a tile size of whole patches"
            )
        if self.min_patches > self.max_patches:
            raise UsageError(
                f"ClosestAspect {self.name!r}: min_patches {self.min_patches} is over max_patches "
                f"{self.max_patches}; no grid would be allowed, pick min_patches <= max_patches"
            )
        fraction = self.tie_area_fraction
        if (isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not math.isfinite(fraction)
                or fraction <= 0 or fraction * self.tile_size**2 < 1):
            raise UsageError(
                f"ClosestAspect.tie_area_fraction must be a positive number with tie_area_fraction*tile_size^2 "
                f">= 1, got {fraction!r}; the processor's is {PROCESSOR_TIE_AREA_FRACTION}"
            )
        object.__setattr__(self, "tie_area_fraction", float(fraction))

    # ----- the processor's arithmetic -----
    @property
    def tile_patches(self) -> int:
        """Encoder patches along one side of a tile."""
        return self.tile_size // self.patch_size

    def candidates(self) -> tuple[Tiling, ...]:
        """The grids the processor considers, in its order (only 1x1 without cropping)."""
        if not self.crop_to_patches:
            return (Tiling(1, 1),)
        return tuple(Tiling(rows, cols) for cols, rows in _candidates(self.min_patches, self.max_patches))

    def _select(self, height: int, width: int) -> Tiling:
        """``get_optimal_tiled_canvas`` on checked sizes, the same float operations in the same order."""
        if not self.crop_to_patches:
            return Tiling(1, 1)
        tile = self.tile_size
        aspect_ratio = width / height
        area = width * height
        best_ratio_diff = math.inf
        best = (1, 1)
        for cols, rows in _candidates(self.min_patches, self.max_patches):
            ratio_diff = abs(aspect_ratio - cols / rows)
            if ratio_diff < best_ratio_diff:
                best_ratio_diff = ratio_diff
                best = (cols, rows)
            elif ratio_diff == best_ratio_diff and area > self.tie_area_fraction * tile * tile * cols * rows:
                best = (cols, rows)
        return Tiling(best[1], best[0])

    def select(self, height: int, width: int) -> Tiling:
        """The grid the processor picks for an image of `height` x `width` pixels.

        Raises:
            UsageError: a size that is not a positive integer.
        """
        height = check_positive_int("height", height, below=MAX_SIZE)
        width = check_positive_int("width", width, below=MAX_SIZE)
        return self._select(height, width)

    def grid_geometry(self, tiling: Tiling) -> Geometry:
        """Crops, canvas and token counts of a grid, whatever image size led to it (not checked)."""
        tiling = Tiling(*tiling)
        crops = tiling.cells + int(self.thumbnail and tiling.cells != 1)
        image_tokens = self.tokens_per_tile * crops
        return Geometry(
            tiling=tiling,
            crops=crops,
            canvas=(tiling.rows * self.tile_size, tiling.cols * self.tile_size),
            image_tokens=image_tokens,
            sequence_tokens=image_tokens + 2,  # <img> ... </img>
            encoder_patches=crops * self.tile_patches**2,
        )

    # ----- the scheme interface (tilings.scheme.Scheme) -----
    @property
    def max_crops(self) -> int:
        return self.max_patches if self.crop_to_patches else 1

    def geometry(self, height: int, width: int) -> Geometry:
        return self.grid_geometry(self.select(height, width))

    def check_target(self, target: Any) -> Tiling:
        """`target` as a `Tiling`, checked against the processor's limits.

        Raises:
            UsageError: not a pair of positive integers, or a grid the processor never picks.
        """
        if isinstance(target, str) or not isinstance(target, (tuple, list)) or len(target) != 2:
            raise UsageError(f"a tiling is a pair (rows, cols) of positive integers, got {target!r}")
        tiling = Tiling(check_positive_int("tiling rows", target[0]), check_positive_int("tiling cols", target[1]))
        if not self.crop_to_patches and tiling != (1, 1):
            raise UsageError(
                f"tiling {tiling} is unreachable: scheme {self.name!r} does not crop (crop_to_patches off), "
                "so its only grid is 1x1; pick 1x1 or a scheme with crop_to_patches on"
            )
        if not self.min_patches <= tiling.cells <= self.max_patches:
            raise UsageError(
                f"tiling {tiling} has {tiling.cells} tiles, outside scheme {self.name!r}'s "
                f"{self.min_patches}..{self.max_patches} (min_patches..max_patches); "
                f"pick rows*cols in {self.min_patches}..{self.max_patches}"
            )
        return tiling

    def target_geometry(self, target: Tiling) -> Geometry:
        return self.grid_geometry(self.check_target(target))

    def resolution_for(self, target: Tiling) -> tuple[int, int]:
        """``(r0*u, c0*u)`` for the target ``g*(r0, c0)``: tiles of ``ceil(0.75*T)`` px (``u = g*ceil(0.75*T)``)
        where that picks the target, else the middle of the interval of ``u`` that does (module docstring).

        Raises:
            UsageError: an unreachable target (the message says which grids are reachable).
        """
        tiling = self.check_target(target)
        side = -(-3 * self.tile_size // 4)
        if not self.crop_to_patches:
            return (side, side)
        g = math.gcd(tiling.rows, tiling.cols)
        r0, c0 = tiling.rows // g, tiling.cols // g

        def multiple(u: int) -> int:  # which grid k*(r0, c0) an image of (r0*u, c0*u) gives
            picked = self._select(r0 * u, c0 * u)
            return picked.rows // r0

        low = _first(lambda u: multiple(u) >= g, 1)
        high = _first(lambda u: multiple(u) > g, low) - 1 if (g + 1) ** 2 * r0 * c0 <= self.max_patches else None
        u = g * side
        if not (low <= u and (high is None or u <= high)):
            u = (low + high) // 2 if high is not None else max(low, g * self.tile_size)
        size = (r0 * u, c0 * u)
        if self._select(*size) != tiling:  # the module docstring proves this never happens
            raise RuntimeError(f"no exact-ratio size gives {tiling} in scheme {self.name!r}: a tilings bug")
        return size

    def family_tilings(self, family: str) -> list[Tiling]:
        return grid_family(family, self.targets(), self.max_crops, f"scheme {self.name!r}")

    def points(self, family: str) -> list[tuple[Tiling, tuple[int, int]]]:
        return [(t, self.resolution_for(t)) for t in self.family_tilings(family)]

    def targets(self) -> tuple[Tiling, ...]:
        return self.candidates()

    def processor_kwargs(self) -> dict[str, Any]:
        """Keyword arguments that configure `transformers.GotOcr2ImageProcessor` to this scheme.

        Raises:
            UsageError: a scheme no processor setting reproduces (no thumbnail, or another tie rule).
        """
        if not self.thumbnail or self.tie_area_fraction != PROCESSOR_TIE_AREA_FRACTION:
            raise UsageError(
                f"scheme {self.name!r} (thumbnail={self.thumbnail}, tie_area_fraction={self.tie_area_fraction}) "
                "has no GotOcr2ImageProcessor setting: it always adds a thumbnail and breaks ties at "
                f"{PROCESSOR_TIE_AREA_FRACTION}; use thumbnail=True, tie_area_fraction={PROCESSOR_TIE_AREA_FRACTION}"
            )
        return {
            "size": {"height": self.tile_size, "width": self.tile_size},
            "crop_to_patches": self.crop_to_patches,
            "min_patches": self.min_patches,
            "max_patches": self.max_patches,
        }

    @classmethod
    def from_preprocessor_config(cls, config: Mapping[str, Any] | str | Path, **overrides: Any) -> ClosestAspect:
        """Build a scheme from a checkpoint's ``preprocessor_config.json`` (a dict or a path).

        Reads ``size`` (square: the tile), ``min_patches``, ``max_patches`` and
        ``crop_to_patches``; a combined ``processor_config.json`` (the keys nested
        under ``image_processor``) also gives ``image_seq_length``, the tokens per
        tile. ``crop_to_patches`` is taken as on when ``processor_class`` is a
        processor that forces it at call time (InternVL, Aya Vision): InternVL
        checkpoints store ``false`` and crop anyway. ``use_thumbnail`` is ignored, as
        transformers ignores it. Missing keys take the internvl3 preset's values;
        tokens per tile and patch size are model-config numbers: pass them as
        ``overrides`` (ClosestAspect field names, which win over the config).

        Raises:
            UsageError: an unreadable file, a config of another image processor or
                with none of the keys, a non-square size, or an unknown override.
        """
        check_field_names(ClosestAspect, overrides, what="override")
        flat = read_preprocessor_config(config, "GotOcr2ImageProcessor",
                                        "an InternVL (or Aya Vision, GOT-OCR2) preprocessor_config.json")
        if not _CONFIG_KEYS & flat.keys():
            raise UsageError(
                f"preprocessor config has none of the GotOcr2ImageProcessor keys ({', '.join(sorted(_CONFIG_KEYS))}); "
                "pass an InternVL preprocessor_config.json"
            )
        base = PRESETS["internvl3"]
        fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(cls)}
        if "size" in flat:
            fields["tile_size"] = _tile_size(flat["size"])
        for key in ("min_patches", "max_patches"):
            if key in flat:
                fields[key] = flat[key]
        if flat.get("processor_class") in _FORCING_PROCESSORS:
            fields["crop_to_patches"] = True
        elif "crop_to_patches" in flat:
            fields["crop_to_patches"] = flat["crop_to_patches"]
        if flat.get("image_seq_length") is not None:
            fields["tokens_per_tile"] = flat["image_seq_length"]
        if "name" not in overrides:
            same = cls(**{**fields, **overrides}) == base
            fields["name"] = base.name if same else f"{base.name}-custom"
        return cls(**{**fields, **overrides})


def _first(holds: Callable[[int], bool], start: int) -> int:
    """The smallest integer u >= `start` where the nondecreasing predicate `holds` is true (exponential + binary search)."""
    if holds(start):
        return start
    low, step = start, 1
    while not holds(low + step):
        low += step
        step *= 2
        if step > MAX_SIZE:
            raise RuntimeError("no size found: a tilings bug")
    high = low + step  # holds(high); not holds(low)
    while high - low > 1:
        mid = (low + high) // 2
        if holds(mid):
            high = mid
        else:
            low = mid
    return high



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


PRESETS: dict[str, ClosestAspect] = {
    # InternVL3 (-hf checkpoints, transformers' InternVLProcessor): 448 px tiles, 1..12 tiles plus a
    # thumbnail when more than one, 256 tokens per tile = (448/14)^2 * 0.5^2.
    "internvl3": ClosestAspect(
        name="internvl3",
        tile_size=448,
        patch_size=14,
        min_patches=1,
        max_patches=12,
        crop_to_patches=True,
        thumbnail=True,
        tokens_per_tile=256,
    ),
}
