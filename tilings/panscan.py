"""Pan-and-scan schemes (Gemma 3): the whole image, plus 2 to 4 crops along its longer side when it is elongated.

A `PanScan` reproduces transformers' ``Gemma3ImageProcessor`` with ``do_pan_and_scan=True``
(``models/gemma3/image_processing_gemma3.py``: ``pan_and_scan_batched``, and its PIL twin's
``pan_and_scan``), with the settings ``Gemma3Processor`` passes it at call time
(``Gemma3Processor.images_kwargs``: min crop 256 px, at most 4 crops, min ratio 1.2;
pan and scan itself is *off* there, so it must be asked for at every call):

1. landscape (``width >= height``, Python ints): no crops when ``width / height < min_ratio``;
   else ``n = floor(width/height + 0.5)``, ``n = min(floor(width/min_crop), n)``,
   ``n = max(2, n)``, ``n = min(max_crops, n)``: one row of ``n`` crops. Portrait
   (``height > width``) is the same with the sides swapped: one column of ``n`` crops;
2. each crop is ``ceil(width/cols)`` x ``ceil(height/rows)`` px, cut from the image at its own
   size; if either side is under ``min_crop`` there are no crops after all;
3. the whole image, then every crop (row-major), are each resized, distorted, to ``V x V``
   (``size``; 896 for Gemma 3): ``1 + n`` views, ``n`` in {0, 2, 3, 4}.

Targets are therefore ``1x1`` (no crops), ``1xn`` and ``nx1`` (``n >= 2``); never ``1`` crop
and never a grid of both rows and columns.

Tokens (``models/gemma3/processing_gemma3.py``, ``Gemma3Processor.__init__`` and
``replace_image_token``): each view becomes ``"\\n\\n<start_of_image>" + "<image_soft_token>" x 256
+ "<end_of_image>\\n\\n"``; with crops, the image is written as ``"Here is the original image "``
+ the whole view + ``" and here are some crops to help you see better "`` + the crop views
joined by spaces. ``image_tokens`` = ``256 x views`` is exact (the model fills one soft token
per pooled feature). ``sequence_tokens`` = ``258 x views`` counts the special tokens only
(start, soft tokens, end: one id each in every Gemma tokenizer), so it assumes no tokenizer;
the ``"\\n\\n"`` around each view and the crop sentence are ordinary text whose token count
depends on the tokenizer and is not in it (with a checkpoint's tokenizer loaded they are in
the measured ``seq_len``).

``canvas`` is ``(rows*V, cols*V)``: the crops side by side as the encoder sees them (each crop
is resized on its own; the processor has no common canvas); ``encoder_patches`` counts every
view's ``(V/patch)^2`` patches.

The inverse. ``(b, n*b)`` with ``b >= min_crop`` has ratio exactly ``n`` and gives ``1xn`` whenever
``n >= min_ratio`` (``b = V``: every crop is exactly one view); a column the same way. Where
``min_ratio`` is above ``n``, only the ``floor(width/min_crop)`` cap can bring the count down to
``n`` (``n < max_crops``): the widest such image, ``(min_crop, (n+1)*min_crop - 1)``, reaches
``1xn`` exactly when any image does (every image that reaches it has at most its ratio, and
it passes every other test), so it decides reachability; ``1 x max_crops`` is reached by any
image of integer ratio ``k >= max(max_crops, min_ratio)`` at ``min_crop`` px high.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from tilesweep.errors import UsageError
from tilings._checks import check_positive_int
from tilings._records import GridFamilies, SchemeRecord, check_field_names, read_preprocessor_config
from tilings.grids import grid_family
from tilings.types import Geometry, Tiling

# The processor reads sizes from image tensors (int64 shapes); larger sizes are no image at all.
MAX_SIZE = 2**63
NO_CROPS = Tiling(1, 1)
# Special tokens around each view's soft tokens: <start_of_image> and <end_of_image>.
VIEW_MARKERS = 2
_CONFIG_KEYS = frozenset({"size", "do_pan_and_scan", "pan_and_scan_min_crop_size", "pan_and_scan_max_num_crops",
                          "pan_and_scan_min_ratio_to_activate", "image_seq_length"})


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PanScan(GridFamilies, SchemeRecord):
    """One pan-and-scan preprocessor's numbers (a grid `tilings.scheme.Scheme`; the module docstring has the rule).

    Attributes:
        name: a label carried into results (``"gemma3"``).
        view_size: V, the side every view (the whole image and each crop) is resized to (the processor's ``size``).
        patch_size: side of a vision-encoder patch, in pixels (the model's ``vision_config.patch_size``).
        pan_and_scan: crop elongated images at all (the processor's ``do_pan_and_scan``); off, every image is one view.
        min_crop_size: the shortest crop side allowed, in pixels (``pan_and_scan_min_crop_size``).
        max_num_crops: the most crops (``pan_and_scan_max_num_crops``), 2 to ``min_crop_size + 1``.
        min_ratio: the aspect ratio (long side / short side) from which crops are cut
            (``pan_and_scan_min_ratio_to_activate``).
        tokens_per_view: soft tokens per view (the processor's ``image_seq_length``, the model's ``mm_tokens_per_image``).
    """

    SCHEME: ClassVar[str] = "pan-and-scan"

    name: str
    view_size: int = 896
    patch_size: int = 14
    pan_and_scan: bool = True
    min_crop_size: int = 256
    max_num_crops: int = 4
    min_ratio: float = 1.2
    tokens_per_view: int = 256

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise UsageError(f"PanScan.name must be a non-empty string, got {self.name!r}")
        for field in ("view_size", "patch_size", "min_crop_size", "max_num_crops", "tokens_per_view"):
            object.__setattr__(self, field, check_positive_int(f"PanScan.{field}", getattr(self, field)))
        if not isinstance(self.pan_and_scan, bool):
            raise UsageError(f"PanScan.pan_and_scan must be true or false, got {self.pan_and_scan!r}")
        if self.view_size % self.patch_size:
            raise UsageError(
                f"PanScan {self.name!r}: view_size {self.view_size} is not a multiple of patch_size "
                f"{self.patch_size}; pick a view of whole patches"
            )
        # Below these bounds the processor can cut an empty crop (a 1 px image into 2 crops; more crops
        # than a crop has pixels), which it cannot resize: no image size would have a geometry.
        if self.min_crop_size < 2:
            raise UsageError(
                f"PanScan {self.name!r}: min_crop_size {self.min_crop_size} is under 2; with 1 px crops the processor "
                "cuts empty ones, pick min_crop_size >= 2 (Gemma 3: 256)"
            )
        if not 2 <= self.max_num_crops <= self.min_crop_size + 1:
            raise UsageError(
                f"PanScan {self.name!r}: max_num_crops {self.max_num_crops} is outside 2..{self.min_crop_size + 1} "
                "(the processor always cuts at least 2 crops, and more than min_crop_size + 1 can leave one empty); "
                "pick max_num_crops in that range (Gemma 3: 4)"
            )
        ratio = self.min_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real) or not math.isfinite(ratio) or ratio <= 0:
            raise UsageError(f"PanScan.min_ratio must be a positive number, got {ratio!r}; Gemma 3's is 1.2")
        object.__setattr__(self, "min_ratio", float(ratio))

    # ----- the processor's arithmetic -----
    def _select(self, height: int, width: int) -> Tiling:
        """``pan_and_scan_batched`` on checked sizes: the same Python float operations in the same order."""
        if not self.pan_and_scan:
            return NO_CROPS
        if width >= height:
            if width / height < self.min_ratio:
                return NO_CROPS
            n = int(math.floor(width / height + 0.5))
            n = min(int(math.floor(width / self.min_crop_size)), n)
            rows, cols = 1, min(self.max_num_crops, max(2, n))
        else:
            if height / width < self.min_ratio:
                return NO_CROPS
            n = int(math.floor(height / width + 0.5))
            n = min(int(math.floor(height / self.min_crop_size)), n)
            rows, cols = min(self.max_num_crops, max(2, n)), 1
        crop_width = int(math.ceil(width / cols))
        crop_height = int(math.ceil(height / rows))
        if min(crop_width, crop_height) < self.min_crop_size:
            return NO_CROPS
        return Tiling(rows, cols)

    def select(self, height: int, width: int) -> Tiling:
        """The crops the processor cuts from an image of `height` x `width` pixels (``1x1``: none).

        Raises:
            UsageError: a size that is not a positive integer.
        """
        height = check_positive_int("height", height, below=MAX_SIZE)
        width = check_positive_int("width", width, below=MAX_SIZE)
        return self._select(height, width)

    @staticmethod
    def crops_of(tiling: Tiling) -> int:
        """Crops a target cuts (the whole image not counted): 0 for ``1x1``, else its cells."""
        return 0 if tiling == NO_CROPS else tiling.cells

    def grid_geometry(self, tiling: Tiling) -> Geometry:
        """Views, canvas and token counts of a target, whatever image size led to it (not checked)."""
        tiling = Tiling(*tiling)
        views = 1 + self.crops_of(tiling)
        return Geometry(
            tiling=tiling,
            crops=views,
            canvas=(tiling.rows * self.view_size, tiling.cols * self.view_size),
            image_tokens=self.tokens_per_view * views,
            sequence_tokens=(self.tokens_per_view + VIEW_MARKERS) * views,
            encoder_patches=views * (self.view_size // self.patch_size) ** 2,
        )

    # ----- the scheme interface (tilings.scheme.Scheme) -----
    @property
    def max_crops(self) -> int:
        return self.max_num_crops if self.pan_and_scan else 1

    def geometry(self, height: int, width: int) -> Geometry:
        return self.grid_geometry(self.select(height, width))

    def _witness(self, tiling: Tiling) -> tuple[int, int]:
        """The image that reaches `tiling` whenever any image does (module docstring): decides reachability."""
        if tiling == NO_CROPS:
            side = self.min_crop_size - 1  # a crop side under min_crop_size: never cropped
            return (side, side)
        n, mc = tiling.cells, self.min_crop_size
        long = (n + 1) * mc - 1 if n < self.max_num_crops else mc * max(n, math.ceil(self.min_ratio))
        return (mc, long) if tiling.rows == 1 else (long, mc)

    def check_target(self, target: Any) -> Tiling:
        """`target` as a `Tiling`, checked against the processor's rule.

        Raises:
            UsageError: not a pair of positive integers, or crops the processor never cuts.
        """
        if isinstance(target, str) or not isinstance(target, (tuple, list)) or len(target) != 2:
            raise UsageError(f"a tiling is a pair (rows, cols) of positive integers, got {target!r}")
        tiling = Tiling(check_positive_int("tiling rows", target[0]), check_positive_int("tiling cols", target[1]))
        if tiling == NO_CROPS:
            return tiling
        where = f"scheme {self.name!r}"
        if not self.pan_and_scan:
            raise UsageError(f"tiling {tiling} is unreachable: {where} has pan and scan off, so its only target is 1x1 "
                             "(no crops); pick 1x1 or a scheme with pan_and_scan on")
        if min(tiling) != 1:
            raise UsageError(f"tiling {tiling} is unreachable: pan and scan cuts one row or one column of crops, never "
                             f"both; pick 1xn or nx1 with n in 2..{self.max_num_crops} ({where})")
        n = tiling.cells
        if not 2 <= n <= self.max_num_crops:
            raise UsageError(f"tiling {tiling} has {n} crop(s), outside {where}'s 2..{self.max_num_crops} (the processor "
                             f"cuts none or 2..max_num_crops); pick 1x1 or 1xn/nx1 with n in 2..{self.max_num_crops}")
        witness = self._witness(tiling)
        if max(witness) >= MAX_SIZE or self._select(*witness) != tiling:
            raise UsageError(
                f"tiling {tiling} is unreachable in {where}: crops start at aspect ratio {self.min_ratio}, and every "
                f"image that elongated and at least {self.min_crop_size} px across gets more than {n} crops; pick a "
                f"target with more crops, or a lower min_ratio"
            )
        return tiling

    def target_geometry(self, target: Tiling) -> Geometry:
        return self.grid_geometry(self.check_target(target))

    def resolution_for(self, target: Tiling) -> tuple[int, int]:
        """``(V, V)`` for ``1x1``; ``(b, n*b)`` for ``1xn`` (``(n*b, b)`` for ``nx1``), ``b = max(V, min_crop_size)``,
        so that each crop is one view exactly; where the scheme's ratio rule refuses those, the witness image
        (module docstring).

        Raises:
            UsageError: an unreachable target (the message says why).
        """
        tiling = self.check_target(target)
        if tiling == NO_CROPS:
            size = (self.view_size, self.view_size)
        else:
            side = max(self.view_size, self.min_crop_size)
            size = (side, tiling.cells * side) if tiling.rows == 1 else (tiling.cells * side, side)
        if self._select(*size) == tiling:
            return size
        return self._witness(tiling)  # check_target verified it

    def family_tilings(self, family: str) -> list[Tiling]:
        return grid_family(family, self.targets(), self.max_crops, f"scheme {self.name!r}")

    def points(self, family: str) -> list[tuple[Tiling, tuple[int, int]]]:
        return [(t, self.resolution_for(t)) for t in self.family_tilings(family)]

    def targets(self) -> tuple[Tiling, ...]:
        """``1x1``, then for each crop count from 2 the row before the column, where reachable."""
        grids = [NO_CROPS]
        for n in range(2, self.max_crops + 1):
            grids += [Tiling(1, n), Tiling(n, 1)]
        return tuple(t for t in grids if self.is_reachable(t))

    def processor_kwargs(self) -> dict[str, Any]:
        """Keyword arguments that configure `transformers.Gemma3ImageProcessor` to this scheme, at construction or
        at call time (`Gemma3Processor` passes its own pan-and-scan defaults, pan and scan off, at every call:
        these must be passed there too)."""
        return {
            "size": {"height": self.view_size, "width": self.view_size},
            "do_pan_and_scan": self.pan_and_scan,
            "pan_and_scan_min_crop_size": self.min_crop_size,
            "pan_and_scan_max_num_crops": self.max_num_crops,
            "pan_and_scan_min_ratio_to_activate": self.min_ratio,
        }

    @classmethod
    def from_preprocessor_config(cls, config: Mapping[str, Any] | str | Path, **overrides: Any) -> PanScan:
        """Build a scheme from a checkpoint's ``preprocessor_config.json`` (a dict or a path).

        Reads ``size`` (square: the view), ``image_seq_length`` (tokens per view) and the
        pan-and-scan keys. The released Gemma 3 configs leave those ``null``: the processor's
        call decides, and `Gemma3Processor` calls with pan and scan off. A ``null`` (or absent)
        ``do_pan_and_scan`` is read as on, because that is what a sweep of crops is for (the
        worker passes it at every call), and ``null`` numbers as `Gemma3Processor`'s defaults
        (256, 4, 1.2, the gemma3 preset's); an explicit ``false`` stays off. The patch size is a
        model-config number: pass it as an override (PanScan field names, which win over the config).

        Raises:
            UsageError: an unreadable file, a config of another image processor or with none of the keys,
                a non-square size, or an unknown override.
        """
        check_field_names(PanScan, overrides, what="override")
        flat = read_preprocessor_config(config, "Gemma3ImageProcessor", "a Gemma 3 preprocessor_config.json")
        if not _CONFIG_KEYS & flat.keys():
            raise UsageError(
                f"preprocessor config has none of the Gemma3ImageProcessor keys ({', '.join(sorted(_CONFIG_KEYS))}); "
                "pass a Gemma 3 preprocessor_config.json"
            )
        base = PRESETS["gemma3"]
        fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(cls)}
        if "size" in flat:
            fields["view_size"] = _view_size(flat["size"])
        keys = {"do_pan_and_scan": "pan_and_scan", "pan_and_scan_min_crop_size": "min_crop_size",
                "pan_and_scan_max_num_crops": "max_num_crops", "pan_and_scan_min_ratio_to_activate": "min_ratio",
                "image_seq_length": "tokens_per_view"}
        for key, field in keys.items():
            if flat.get(key) is not None:
                fields[field] = flat[key]
        if "name" not in overrides:
            same = cls(**{**fields, **overrides}) == base
            fields["name"] = base.name if same else f"{base.name}-custom"
        return cls(**{**fields, **overrides})


def _view_size(size: Any) -> Any:
    if isinstance(size, Mapping) and {"height", "width"} <= size.keys():
        if size["height"] != size["width"]:
            raise UsageError(
                f"preprocessor config 'size' must be square, got {size['height']}x{size['width']}; views are square"
            )
        return size["height"]
    if isinstance(size, int) and not isinstance(size, bool):
        return size
    raise UsageError(f"preprocessor config 'size' must be {{'height': N, 'width': N}} or N, got {size!r}")


PRESETS: dict[str, PanScan] = {
    # Gemma 3 (google/gemma-3-4b-it and its siblings): 896 px views of SigLIP at 14 px patches, pooled
    # 4x4 to 16x16 = 256 soft tokens; pan and scan as Gemma3Processor's defaults set it, turned on.
    "gemma3": PanScan(
        name="gemma3",
        view_size=896,
        patch_size=14,
        pan_and_scan=True,
        min_crop_size=256,
        max_num_crops=4,
        min_ratio=1.2,
        tokens_per_view=256,
    ),
}
