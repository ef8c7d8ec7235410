"""Native-resolution schemes (Pixtral, Mistral 3): the longest edge capped, each side rounded up to a token.

A `NativeResolution` reproduces transformers' ``PixtralImageProcessor``
(``models/pixtral/image_processing_pixtral.py``: ``get_resize_output_image_size``,
``_num_image_tokens``, ``resize``; the PIL backend ``PixtralImageProcessorPil`` carries a
verbatim copy of both functions), the image processor of Pixtral and Mistral 3
(``models/auto/image_processing_auto.py``), as ``PixtralProcessor`` drives it
(``models/pixtral/processing_pixtral.py``). The processor calls the image processor with
``patch_size = patch_size * spatial_merge_size``; with that ``F`` (Pixtral-12B: 16 * 1;
Mistral 3: 14 * 2 = 28) and the cap ``L = size["longest_edge"]``, in Python floats:

1. ``ratio = max(h / L, w / L)``; if ``ratio > 1``: ``h = floor(h / ratio)``,
   ``w = floor(w / ratio)`` (a downscale that keeps the aspect ratio; never an upscale);
2. each side is rounded **up** to a multiple of F: ``rows = (h - 1) // F + 1``, the same
   for ``cols``; the image is resized (slightly distorted) to ``(rows*F, cols*F)``. One
   image, no crops. A side that step 1 floors to 0 px (an image thinner than ``1/L`` of
   its length) makes the processor raise: refused here too.

Vocabulary (`tilings.scheme`): the target is the token grid ``(rows, cols)``; the
processor's ``replace_image_token`` writes ``([IMG] * cols + [IMG_BREAK]) * rows`` with
the last ``[IMG_BREAK]`` replaced by ``[IMG_END]``, so ``image_tokens = rows*cols`` (the
``[IMG]`` placeholders the features fill) and ``sequence_tokens = rows*(cols + 1)``
(placeholders, a break per row but the last, the end). The three are special tokens, one
id each, so neither count depends on a tokenizer's vocabulary. ``encoder_patches`` is
``(rows*merge) * (cols*merge)``: the vision tower runs on every ``patch_size`` patch of
the resized image, and Mistral 3's patch merger folds ``merge x merge`` of them into one
token (``Mistral3PatchMerger``: ``unfold`` with stride ``spatial_merge_size``). ``crops`` is 1.

The inverse. An image at most ``L`` a side is never scaled, and a side of ``s <= L``
pixels becomes ``ceil(s / F)`` tokens; a scaled side ends at most ``L`` px. So the
reachable grids are ``1 <= rows, cols <= S = ceil(L / F)`` (Pixtral-12B: 1024/16 = 64;
Mistral 3: 1540/28 = 55), and ``(min(rows*F, L), min(cols*F, L))`` gives each one exactly
(``min`` matters only where ``L`` is not a multiple of F).

Families: the token-grid families of `tilings.budget` (square, wide, tall: ladders up to
the first rung at or over 4,096 tokens or the largest reachable one; equal: one token
count in several shapes), with ``min_tokens = 1`` and ``max_tokens = S*S``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from tilesweep.errors import UsageError
from tilings._checks import check_positive_int
from tilings._records import SchemeRecord, check_field_names, read_preprocessor_config
from tilings.budget import TokenGridFamilies
from tilings.types import Geometry, Tiling

# The processor reads sizes from image tensors (int64 shapes); larger sizes are no image at all.
MAX_SIZE = 2**63

# PixtralImageProcessor's and PixtralProcessor's class defaults: what a config without the key gets.
_PROCESSOR_DEFAULTS: dict[str, int] = {"patch_size": 16, "merge_size": 1, "longest_edge": 1024}
_CONFIG_KEYS = frozenset({"patch_size", "size", "spatial_merge_size"})


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class NativeResolution(TokenGridFamilies, SchemeRecord):
    """One native-resolution preprocessor's numbers (a budget `tilings.scheme.Scheme`).

    Attributes:
        name: a label carried into results (``"pixtral"``, ``"mistral3"``).
        patch_size: side of a vision-encoder patch, in pixels (the vision tower's ``patch_size``).
        merge_size: patches merged into one token along each side (Mistral 3's ``spatial_merge_size``;
            1 for Pixtral-12B, whose every patch is a token).
        longest_edge: L, the cap on the longer side, in pixels (``size["longest_edge"]``).
    """

    SCHEME: ClassVar[str] = "native-resolution"

    name: str
    patch_size: int = 16
    merge_size: int = 1
    longest_edge: int = 1024

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise UsageError(f"NativeResolution.name must be a non-empty string, got {self.name!r}")
        for field in ("patch_size", "merge_size", "longest_edge"):
            object.__setattr__(self, field, check_positive_int(f"NativeResolution.{field}", getattr(self, field)))

    # ----- the processor's arithmetic -----
    @property
    def factor(self) -> int:
        """F: pixels along one side of a token (``patch_size * merge_size``, what the processor rounds to)."""
        return self.patch_size * self.merge_size

    @property
    def max_side_tokens(self) -> int:
        """S: most tokens along one side, ``ceil(longest_edge / F)``."""
        return -(-self.longest_edge // self.factor)

    @property
    def min_tokens(self) -> int:
        return 1

    @property
    def max_tokens(self) -> int:
        return self.max_side_tokens**2

    def _resize(self, height: int, width: int) -> tuple[int, int]:
        """``get_resize_output_image_size`` on checked sizes: the same Python float operations in the same order."""
        ratio = max(height / self.longest_edge, width / self.longest_edge)
        if ratio > 1:
            scaled = (int(math.floor(height / ratio)), int(math.floor(width / ratio)))
            if min(scaled) == 0:
                raise UsageError(
                    f"image {height}x{width} px scales by 1/{ratio:g} to fit scheme {self.name!r}'s longest edge of "
                    f"{self.longest_edge} px, which floors it to {scaled[0]}x{scaled[1]} px, a side of 0 px (the "
                    f"processor raises); pick a size with min(height, width) >= max(height, width) / "
                    f"{self.longest_edge}"
                )
            height, width = scaled
        f = self.factor
        return ((height - 1) // f + 1) * f, ((width - 1) // f + 1) * f

    def resize(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) the processor resizes an image of `height` x `width` pixels to.

        Raises:
            UsageError: a size that is not a positive integer, or one whose shorter side scales to 0 px.
        """
        height = check_positive_int("height", height, below=MAX_SIZE)
        width = check_positive_int("width", width, below=MAX_SIZE)
        return self._resize(height, width)

    def canvas_geometry(self, height: int, width: int) -> Geometry:
        """Geometry of an image already resized to `height` x `width` (multiples of F; not checked)."""
        rows, cols = height // self.factor, width // self.factor
        return Geometry(
            tiling=Tiling(rows, cols),
            crops=1,
            canvas=(height, width),
            image_tokens=rows * cols,
            sequence_tokens=rows * (cols + 1),  # [IMG] x cols + [IMG_BREAK] per row, the last one [IMG_END]
            encoder_patches=(height // self.patch_size) * (width // self.patch_size),
        )

    # ----- the scheme interface (tilings.scheme.Scheme; kind and families from TokenGridFamilies) -----
    def geometry(self, height: int, width: int) -> Geometry:
        return self.canvas_geometry(*self.resize(height, width))

    def check_target(self, target: Any) -> Tiling:
        """`target` as a `Tiling`, checked to be a grid this scheme reaches.

        Raises:
            UsageError: not a pair of positive integers, or a side over ``ceil(longest_edge / F)`` tokens.
        """
        if isinstance(target, str) or not isinstance(target, (tuple, list)) or len(target) != 2:
            raise UsageError(f"a token grid is a pair (rows, cols) of positive integers, got {target!r}")
        tiling = Tiling(check_positive_int("token grid rows", target[0]),
                        check_positive_int("token grid cols", target[1]))
        most = self.max_side_tokens
        if max(tiling) > most:
            raise UsageError(
                f"token grid {tiling} is unreachable with scheme {self.name!r}: a side of {max(tiling)} tokens is "
                f"over the {most} that its longest edge of {self.longest_edge} px holds; pick rows and cols from 1 "
                f"to {most} (each token is {self.factor}x{self.factor} px)"
            )
        return tiling

    def target_geometry(self, target: Tiling) -> Geometry:
        return self.canvas_geometry(*self.resize(*self.resolution_for(target)))

    def resolution_for(self, target: Tiling) -> tuple[int, int]:
        """``(min(rows*F, L), min(cols*F, L))``: never scaled, each side rounds up to its token count.

        Raises:
            UsageError: an unreachable target (the message says which grids are reachable).
        """
        tiling = self.check_target(target)
        return (min(tiling.rows * self.factor, self.longest_edge), min(tiling.cols * self.factor, self.longest_edge))

    def processor_kwargs(self) -> dict[str, Any]:
        """Keyword arguments that configure `transformers.PixtralImageProcessor` to this scheme on its own.

        ``patch_size`` is F, what ``PixtralProcessor`` hands the image processor at every call
        (``patch_size * spatial_merge_size``); a checkpoint's image processor states the vision patch instead.
        """
        return {"patch_size": {"height": self.factor, "width": self.factor},
                "size": {"longest_edge": self.longest_edge}}

    def pixtral_processor_kwargs(self) -> dict[str, int]:
        """The token settings of `transformers.PixtralProcessor` for this scheme."""
        return {"patch_size": self.patch_size, "spatial_merge_size": self.merge_size}

    @classmethod
    def from_preprocessor_config(cls, config: Mapping[str, Any] | str | Path, **overrides: Any) -> NativeResolution:
        """Build a scheme from a Pixtral / Mistral 3 ``preprocessor_config.json`` (a dict or a path).

        Reads ``size["longest_edge"]`` and ``patch_size`` (an int or ``{"height", "width"}``) as
        ``PixtralImageProcessor`` does, and ``spatial_merge_size``, which only a combined
        ``processor_config.json`` (or the model's config) states: a Mistral 3
        ``preprocessor_config.json`` alone reads as merge 1, so pass ``merge_size=2`` (the model
        loaders take it from the model config). A key the config lacks takes the class default
        (patch 16, merge 1, longest edge 1,024). The name is the preset the numbers equal, else
        ``native-resolution-custom``; ``overrides`` are field names and win over the config.

        Raises:
            UsageError: an unreadable file, another image processor's config or one with none of the
                keys, ``do_resize`` off, a ``size`` without ``longest_edge``, a non-square patch, or an
                unknown override.
        """
        check_field_names(cls, overrides, what="override")
        flat = read_preprocessor_config(config, "PixtralImageProcessor",
                                        "a Pixtral or Mistral 3 preprocessor_config.json")
        if not _CONFIG_KEYS & flat.keys():
            raise UsageError(
                f"preprocessor config has none of the PixtralImageProcessor keys ({', '.join(sorted(_CONFIG_KEYS))}); "
                "pass a Pixtral or Mistral 3 preprocessor_config.json"
            )
        if flat.get("do_resize") is False:
            raise UsageError(
                "preprocessor config has do_resize false: images keep their size and must already be multiples of "
                "the patch, which no native-resolution scheme describes; pass a config with do_resize true"
            )
        fields: dict[str, Any] = dict(_PROCESSOR_DEFAULTS)
        if flat.get("patch_size") is not None:
            fields["patch_size"] = _square_patch(flat["patch_size"])
        if flat.get("spatial_merge_size") is not None:
            fields["merge_size"] = flat["spatial_merge_size"]
        if flat.get("size") is not None:
            size = flat["size"]
            if not isinstance(size, Mapping) or size.get("longest_edge") is None:
                raise UsageError(
                    f"preprocessor config 'size' must be {{'longest_edge': PIXELS}}, got {size!r}; PixtralProcessor "
                    "counts tokens from size['longest_edge'] only"
                )
            fields["longest_edge"] = size["longest_edge"]
        if "name" not in overrides:
            candidate = cls(**{**fields, **overrides, "name": "candidate"})
            same = [n for n, p in PRESETS.items() if dataclasses.replace(p, name="candidate") == candidate]
            fields["name"] = same[0] if same else "native-resolution-custom"
        return cls(**{**fields, **overrides})


def _square_patch(value: Any) -> Any:
    """``patch_size`` as an int: ``N`` or ``{"height": N, "width": N}`` (the processor takes either)."""
    if isinstance(value, Mapping):
        height, width = value.get("height"), value.get("width")
        if height is None or height != width:
            raise UsageError(f"preprocessor config 'patch_size' must be N or {{'height': N, 'width': N}} with equal "
                             f"sides, got {dict(value)!r}; tokens are square")
        return height
    return value


PRESETS: dict[str, NativeResolution] = {
    # mistral-community/pixtral-12b: PixtralImageProcessor patch 16, size {longest_edge: 1024}; PixtralProcessor
    # patch 16, spatial_merge_size 1 (the default): a 1024 px image is 64 x 64 tokens.
    "pixtral": NativeResolution(name="pixtral", patch_size=16, merge_size=1, longest_edge=1024),
    # mistralai/Mistral-Small-3.1-24B-Instruct-2503: patch 14, spatial_merge_size 2, longest edge 1540 (its
    # params.json max_image_size; vision image_size 1540): tokens of 28 px, at most 55 x 55.
    "mistral3": NativeResolution(name="mistral3", patch_size=14, merge_size=2, longest_edge=1540),
}
