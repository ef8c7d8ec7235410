"""Pixel-budget schemes (Qwen2-VL's ``smart_resize`` and its copies): no crops, a grid of merged tokens.

A `PixelBudget` reproduces transformers' ``Qwen2VLImageProcessor``
(``models/qwen2_vl/image_processing_qwen2_vl.py``: ``smart_resize``, ``resize``,
``patchify``, ``_preprocess``, ``get_number_of_image_patches``; the PIL backend
``Qwen2VLImageProcessorPil`` carries a verbatim copy of ``smart_resize``), the image
processor of Qwen2-VL, Qwen2.5-VL, Qwen3-VL and Qwen3.5 (``models/auto/image_processing_auto.py``).
With ``F = patch_size * merge_size`` (28 for patch 14, 32 for Qwen3-VL's patch 16) and
Python floats throughout:

1. an image whose ``max(h, w) / min(h, w)`` is over 200 is refused (``ValueError``);
2. ``h_bar = round(h / F) * F`` and ``w_bar = round(w / F) * F`` (``round`` is half to
   even: 42 px -> 56, 70 px -> 56, 98 px -> 112 at F = 28; under 14 px -> 0);
3. if ``h_bar * w_bar > max_pixels``: ``beta = sqrt(h*w / max_pixels)``,
   ``h_bar = max(F, floor(h / beta / F) * F)`` (same for w); elif it is under
   ``min_pixels``: ``beta = sqrt(min_pixels / (h*w))``, ``h_bar = ceil(h * beta / F) * F``
   (same for w). No other clamp: a thin image can end a little outside the budget;
4. the image is resized (distorted) to ``h_bar x w_bar`` and cut into
   ``(h_bar/P) x (w_bar/P)`` patches, one image, no crops: ``image_grid_thw`` is
   ``[1, h_bar/P, w_bar/P]`` (``grid_t`` is 1 for an image whatever
   ``temporal_patch_size``: the frame is repeated inside each patch vector, so
   ``pixel_values`` is ``(grid_h*grid_w, 3*temporal_patch_size*P*P)``).

Vocabulary (`tilings.scheme`): the target is the grid of merged tokens
``(h_bar/F, w_bar/F)``; ``image_tokens = prod(image_grid_thw) // merge_size**2``, the
``<|image_pad|>`` tokens that ``replace_image_token`` writes (Qwen2-VL, Qwen2.5-VL and
Qwen3-VL processors alike); ``sequence_tokens = image_tokens + 2``: the chat template
writes an image as ``<|vision_start|><|image_pad|><|vision_end|>`` and the processor
only expands the pad (neither processor adds the pair itself); ``encoder_patches =
grid_h * grid_w``, the rows of ``pixel_values`` (``merge_size**2`` per token);
``crops`` is 1.

The inverse. The image ``(a*F, b*F)`` is its own ``h_bar x w_bar`` exactly when
``min_pixels <= a*b*F*F <= max_pixels`` and ``max(a, b) / min(a, b) <= 200``: the round
step keeps it, and outside the budget the floor (ceil) step takes a strictly
smaller (larger) grid. Those fixed points are this scheme's targets (`is_reachable`,
`resolution_for`). The processor also makes a few grids that are not their own size,
from images near the aspect limit whose short side rounds down (41 x 8200 px ->
1 x 293 tokens, a ratio of 293); tilesweep never targets them.

Families (token grids, so the names differ from the grid schemes' ``1xk``...):
``square`` (n x n), ``wide`` (n x 2n), ``tall`` (2n x n): ladders with sides
1, 2, 3, 4, 6, 8, 12, ... from the smallest grid of that shape the budget admits to
the first at or over 4,096 tokens (or 64x the budget's minimum, if more), capped at
the budget's maximum; ``equal``: 1,024 tokens (or the nearest power of four in the
budget at which s x s and both 1:4 shapes are reachable) as s x s, s/2 x 2s, 2s x s/2,
s/4 x 4s and 4s x s/4, those of them that are reachable. `TokenGridFamilies` holds these
families for every scheme whose targets are token grids (`tilings.nativeres` too).
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
from tilings.scheme import BUDGET
from tilings.types import Geometry, Tiling

# The processor reads sizes from image tensors (int64 shapes); larger sizes are no image at all.
MAX_SIZE = 2**63
# smart_resize refuses images whose longer side is more than this many times the shorter (hard-coded).
PROCESSOR_MAX_ASPECT_RATIO = 200
# <|vision_start|> and <|vision_end|> around the <|image_pad|> run (the chat template's, not the processor's).
SPAN_TOKENS = 2

SQUARE, WIDE, TALL, EQUAL = "square", "wide", "tall", "equal"
BUDGET_FAMILIES: tuple[str, ...] = (SQUARE, WIDE, TALL, EQUAL)
DEFAULT_BUDGET_FAMILIES: tuple[str, ...] = (SQUARE, WIDE, TALL)
# A ladder climbs to the first rung with at least this many tokens (or 64x the budget's minimum).
LADDER_TOP_TOKENS = 4096
# The token count the `equal` family lays out in several shapes (when the budget admits it).
EQUAL_TOKENS = 1024
# (rows, cols) of one rung of each ladder, times its side n.
_LADDER_SHAPES: dict[str, tuple[int, int]] = {SQUARE: (1, 1), WIDE: (1, 2), TALL: (2, 1)}

# Qwen2VLImageProcessor's class defaults: what a preprocessor config without the key gets.
_PROCESSOR_DEFAULTS: dict[str, int] = {
    "patch_size": 14,
    "merge_size": 2,
    "temporal_patch_size": 2,
    "min_pixels": 56 * 56,  # size["shortest_edge"]
    "max_pixels": 28 * 28 * 1280,  # size["longest_edge"]
}
_CONFIG_KEYS = frozenset({"patch_size", "merge_size", "temporal_patch_size", "min_pixels", "max_pixels", "size"})
# processor_class -> the preset a config of that model starts from (for the name only).
_PROCESSOR_PRESETS = {"Qwen2VLProcessor": "qwen2-vl", "Qwen2_5_VLProcessor": "qwen2.5-vl",
                      "Qwen3VLProcessor": "qwen3-vl"}


class TokenGridFamilies:
    """The budget kind and its token-grid families (square, wide, tall, equal), for any scheme whose
    targets are grids of merged tokens.

    A mixin with no state (``__slots__ = ()``): the scheme gives ``name``, ``min_tokens`` and
    ``max_tokens`` (the fewest and most tokens a target may have), ``is_reachable`` and
    ``resolution_for``; the ladders and the equal-token shapes follow the module docstring.
    `PixelBudget` (Qwen) and `tilings.nativeres.NativeResolution` (Pixtral, Mistral 3) share it.
    """

    __slots__ = ()

    @property
    def kind(self) -> str:
        return BUDGET

    @property
    def families(self) -> tuple[str, ...]:
        return BUDGET_FAMILIES

    @property
    def default_families(self) -> tuple[str, ...]:
        return DEFAULT_BUDGET_FAMILIES

    @property
    def max_crops(self) -> None:
        return None

    def _ladder(self, rows: int, cols: int) -> list[Tiling]:
        """Grids ``n*rows x n*cols``, n on the 1, 2, 3, 4, 6, 8, 12... ladder (module docstring)."""
        per_side = rows * cols
        low = max(1, math.isqrt(-(-self.min_tokens // per_side) - 1) + 1)  # smallest n with n^2*rc >= min
        while low * low * per_side <= self.max_tokens and not self.is_reachable(Tiling(low * rows, low * cols)):
            low += 1
        high = math.isqrt(self.max_tokens // per_side)  # largest n with n^2*rc <= max
        while high >= low and not self.is_reachable(Tiling(high * rows, high * cols)):
            high -= 1
        if high < low:
            return []
        top_tokens = max(LADDER_TOP_TOKENS, 64 * self.min_tokens)
        sides = [low]
        for n in _nice_numbers():
            if sides[-1] ** 2 * per_side >= top_tokens or n > high:
                break
            if n > sides[-1]:
                sides.append(n)
        if sides[-1] ** 2 * per_side < top_tokens and sides[-1] < high:
            sides.append(high)  # the budget ends between two rungs: finish at its largest grid
        return [Tiling(n * rows, n * cols) for n in sides]

    def _equal_tokens(self) -> int | None:
        """The token count of the `equal` family: the power of four nearest 1,024 at which the square and
        both 1:4 shapes are reachable (any power of four in a pixel budget; a longest-edge cap rules out
        the long thin shapes of the larger ones), else the nearest whose square is."""
        powers = [4**j for j in range(64) if self.min_tokens <= 4**j <= self.max_tokens]

        def reachable(n: int, with_thin: bool) -> bool:
            side = math.isqrt(n)
            shapes = [(side, side)] + ([(side // 2, side * 2), (side * 2, side // 2)] if with_thin else [])
            return (not with_thin or side % 2 == 0) and all(self.is_reachable(Tiling(*s)) for s in shapes)

        candidates = [n for n in powers if reachable(n, True)] or [n for n in powers if reachable(n, False)]
        if not candidates:
            return None
        return min(candidates, key=lambda n: (abs(math.log(n / EQUAL_TOKENS)), n))

    def _equal(self) -> list[Tiling]:
        n = self._equal_tokens()
        if n is None:
            return []
        side = math.isqrt(n)
        shapes = [(side, side)]
        for k in (2, 4):
            if side % k == 0:
                shapes += [(side // k, side * k), (side * k, side // k)]
        return [Tiling(*s) for s in shapes if self.is_reachable(Tiling(*s))]

    def family_tilings(self, family: str) -> list[Tiling]:
        if family in _LADDER_SHAPES:
            return self._ladder(*_LADDER_SHAPES[family])
        if family == EQUAL:
            return self._equal()
        raise UsageError(
            f"unknown tiling family {family!r}; known families: {', '.join(self.families)} (scheme {self.name!r})"
        )

    def points(self, family: str) -> list[tuple[Tiling, tuple[int, int]]]:
        return [(t, self.resolution_for(t)) for t in self.family_tilings(family)]

    def targets(self) -> tuple[Tiling, ...]:
        """The union of the families, in family order, each grid once."""
        return tuple(dict.fromkeys(t for f in self.families for t in self.family_tilings(f)))


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PixelBudget(TokenGridFamilies, SchemeRecord):
    """One pixel-budget preprocessor's numbers (a budget `tilings.scheme.Scheme`).

    Attributes:
        name: a label carried into results (``"qwen2.5-vl"``, ...).
        patch_size: P, side of a vision-encoder patch, in pixels.
        merge_size: patches merged into one token along each side (the model's ``spatial_merge_size``).
        temporal_patch_size: frames per patch (an image is repeated to fill them; no effect on sizes).
        min_pixels: the budget's floor, ``size["shortest_edge"]`` (a pixel count, not an edge).
        max_pixels: the budget's ceiling, ``size["longest_edge"]`` (a pixel count, not an edge).
        max_aspect_ratio: longest over shortest side an image may have (transformers: 200).
    """

    SCHEME: ClassVar[str] = "pixel-budget"

    name: str
    patch_size: int = 14
    merge_size: int = 2
    temporal_patch_size: int = 2
    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 1280
    max_aspect_ratio: int = PROCESSOR_MAX_ASPECT_RATIO

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise UsageError(f"PixelBudget.name must be a non-empty string, got {self.name!r}")
        for field in ("patch_size", "merge_size", "temporal_patch_size", "min_pixels", "max_pixels",
                      "max_aspect_ratio"):
            object.__setattr__(self, field, check_positive_int(f"PixelBudget.{field}", getattr(self, field)))
        if self.min_tokens > self.max_tokens:
            raise UsageError(
                f"PixelBudget {self.name!r}: min_pixels {self.min_pixels} to max_pixels {self.max_pixels} holds no "
                f"whole token of {self.factor}x{self.factor} px; pick a min_pixels..max_pixels range that holds a "
                f"multiple of {self.factor * self.factor}"
            )

    # ----- the processor's arithmetic -----
    @property
    def factor(self) -> int:
        """F: pixels along one side of a merged token (``patch_size * merge_size``)."""
        return self.patch_size * self.merge_size

    @property
    def min_tokens(self) -> int:
        """Fewest merged tokens a target may have: ``ceil(min_pixels / F^2)``."""
        return -(-self.min_pixels // self.factor**2)

    @property
    def max_tokens(self) -> int:
        """Most merged tokens a target may have: ``floor(max_pixels / F^2)``."""
        return self.max_pixels // self.factor**2

    def _resize(self, height: int, width: int) -> tuple[int, int]:
        """``smart_resize`` on checked sizes: the same Python float operations in the same order."""
        factor = self.factor
        if max(height, width) / min(height, width) > self.max_aspect_ratio:
            raise UsageError(
                f"image {height}x{width} px has an aspect ratio of {max(height, width) / min(height, width):g}, over "
                f"the {self.max_aspect_ratio} that scheme {self.name!r}'s processor accepts (smart_resize raises); "
                f"pick a size with max(height, width) / min(height, width) <= {self.max_aspect_ratio}"
            )
        h_bar = round(height / factor) * factor
        w_bar = round(width / factor) * factor
        if h_bar * w_bar > self.max_pixels:
            beta = math.sqrt((height * width) / self.max_pixels)
            h_bar = max(factor, math.floor(height / beta / factor) * factor)
            w_bar = max(factor, math.floor(width / beta / factor) * factor)
        elif h_bar * w_bar < self.min_pixels:
            beta = math.sqrt(self.min_pixels / (height * width))
            h_bar = math.ceil(height * beta / factor) * factor
            w_bar = math.ceil(width * beta / factor) * factor
        return h_bar, w_bar

    def resize(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) the processor resizes an image of `height` x `width` pixels to.

        Raises:
            UsageError: a size that is not a positive integer, or an aspect ratio over `max_aspect_ratio`.
        """
        height = check_positive_int("height", height, below=MAX_SIZE)
        width = check_positive_int("width", width, below=MAX_SIZE)
        return self._resize(height, width)

    def canvas_geometry(self, height: int, width: int) -> Geometry:
        """Geometry of an image already resized to `height` x `width` (multiples of F; not checked)."""
        grid_h, grid_w = height // self.patch_size, width // self.patch_size
        patches = grid_h * grid_w  # grid_t is 1 for an image
        image_tokens = patches // self.merge_size**2
        return Geometry(
            tiling=Tiling(height // self.factor, width // self.factor),
            crops=1,
            canvas=(height, width),
            image_tokens=image_tokens,
            sequence_tokens=image_tokens + SPAN_TOKENS,
            encoder_patches=patches,
        )

    # ----- the scheme interface (tilings.scheme.Scheme) -----
    def geometry(self, height: int, width: int) -> Geometry:
        return self.canvas_geometry(*self.resize(height, width))

    def _unreachable_because(self, rows: int, cols: int) -> str | None:
        """Why the grid is not its own exact size (None: it is a target)."""
        tokens = rows * cols
        if tokens < self.min_tokens:
            return f"{tokens} tokens is under the budget's {self.min_tokens} (min_pixels {self.min_pixels})"
        if tokens > self.max_tokens:
            return f"{tokens} tokens is over the budget's {self.max_tokens} (max_pixels {self.max_pixels})"
        if max(rows, cols) / min(rows, cols) > self.max_aspect_ratio:
            return f"its aspect ratio {max(rows, cols) / min(rows, cols):g} is over {self.max_aspect_ratio}"
        size = (rows * self.factor, cols * self.factor)
        if self._resize(*size) != size:  # the module docstring proves this never happens
            return f"the processor does not keep {size[0]}x{size[1]} px"
        return None

    def check_target(self, target: Any) -> Tiling:
        """`target` as a `Tiling`, checked to be a grid this scheme reaches at its own size.

        Raises:
            UsageError: not a pair of positive integers, or a grid outside the budget or the aspect limit.
        """
        if isinstance(target, str) or not isinstance(target, (tuple, list)) or len(target) != 2:
            raise UsageError(f"a token grid is a pair (rows, cols) of positive integers, got {target!r}")
        tiling = Tiling(check_positive_int("token grid rows", target[0]), check_positive_int("token grid cols",
                                                                                             target[1]))
        why = self._unreachable_because(*tiling)
        if why is not None:
            raise UsageError(
                f"token grid {tiling} is unreachable with scheme {self.name!r}: {why}; pick rows x cols with "
                f"rows*cols from {self.min_tokens} to {self.max_tokens} tokens and max(rows, cols) / "
                f"min(rows, cols) <= {self.max_aspect_ratio} (each token is {self.factor}x{self.factor} px)"
            )
        return tiling

    def target_geometry(self, target: Tiling) -> Geometry:
        return self.canvas_geometry(*self.resolution_for(target))

    def resolution_for(self, target: Tiling) -> tuple[int, int]:
        """``(rows*F, cols*F)``: the processor keeps that size as it is (module docstring).

        Raises:
            UsageError: an unreachable target (the message says which grids are reachable).
        """
        tiling = self.check_target(target)
        return (tiling.rows * self.factor, tiling.cols * self.factor)

    def processor_kwargs(self) -> dict[str, Any]:
        """Keyword arguments that configure `transformers.Qwen2VLImageProcessor` to this scheme.

        The budget goes in ``size`` (``shortest_edge``/``longest_edge`` are pixel counts):
        ``min_pixels``/``max_pixels`` keywords would override any ``size`` a caller merges in.

        Raises:
            UsageError: a scheme no processor setting reproduces (another aspect-ratio limit).
        """
        if self.max_aspect_ratio != PROCESSOR_MAX_ASPECT_RATIO:
            raise UsageError(
                f"scheme {self.name!r} (max_aspect_ratio={self.max_aspect_ratio}) has no Qwen2VLImageProcessor "
                f"setting: smart_resize's limit is fixed at {PROCESSOR_MAX_ASPECT_RATIO}; use "
                f"max_aspect_ratio={PROCESSOR_MAX_ASPECT_RATIO}"
            )
        return {
            "size": {"shortest_edge": self.min_pixels, "longest_edge": self.max_pixels},
            "patch_size": self.patch_size,
            "merge_size": self.merge_size,
            "temporal_patch_size": self.temporal_patch_size,
        }

    @classmethod
    def from_preprocessor_config(cls, config: Mapping[str, Any] | str | Path, **overrides: Any) -> PixelBudget:
        """Build a scheme from a Qwen-VL ``preprocessor_config.json`` (a dict or a path).

        Reads the keys as ``Qwen2VLImageProcessor.__init__`` does: ``size``
        (``shortest_edge`` = min pixels, ``longest_edge`` = max pixels; Qwen3-VL's form),
        then ``min_pixels``/``max_pixels`` (Qwen2-VL's and Qwen2.5-VL's form), which win
        over ``size``; ``patch_size``, ``merge_size``, ``temporal_patch_size``. A key the
        config lacks takes the processor's class default (patch 14, merge 2, temporal 2,
        ``size`` 3,136 to 1,003,520 px: not a preset's 12,845,056), as ``from_pretrained``
        would. A combined ``processor_config.json`` (keys under ``image_processor``) is
        read too. The name is the preset the numbers equal (the one of the config's
        ``processor_class`` first), else ``<preset>-custom``; ``overrides`` are PixelBudget
        field names and win over the config.

        Raises:
            UsageError: an unreadable file, a config of another image processor or with none
                of the keys, ``do_resize`` off, a ``size`` without both edges, or an unknown override.
        """
        check_field_names(PixelBudget, overrides, what="override")
        flat = read_preprocessor_config(config, "Qwen2VLImageProcessor",
                                        "a Qwen2-VL, Qwen2.5-VL or Qwen3-VL preprocessor_config.json")
        if not _CONFIG_KEYS & flat.keys():
            raise UsageError(
                f"preprocessor config has none of the Qwen2VLImageProcessor keys ({', '.join(sorted(_CONFIG_KEYS))}); "
                "pass a Qwen-VL preprocessor_config.json"
            )
        if flat.get("do_resize") is False:
            raise UsageError(
                "preprocessor config has do_resize false: images keep their size and must already be multiples of "
                "patch_size*merge_size, which no pixel-budget scheme describes; pass a config with do_resize true"
            )
        fields: dict[str, Any] = {key: flat[key] if flat.get(key) is not None else default
                                  for key, default in _PROCESSOR_DEFAULTS.items()
                                  if key not in ("min_pixels", "max_pixels")}
        fields["min_pixels"], fields["max_pixels"] = _budget_from_config(flat)
        processor_class = flat.get("processor_class")
        preferred = _PROCESSOR_PRESETS.get(str(processor_class)) if processor_class is not None else None
        if "name" not in overrides:
            candidate = cls(**{**fields, **overrides, "name": "candidate"})
            order = [preferred] if preferred else []
            order += [n for n in PRESETS if n != preferred]
            same = [n for n in order if dataclasses.replace(PRESETS[n], name="candidate") == candidate]
            fields["name"] = same[0] if same else f"{preferred or 'pixel-budget'}-custom"
        return cls(**{**fields, **overrides})


def _nice_numbers():
    """1, 2, 3, 4, 6, 8, 12, 16, 24, ...: powers of two and three times them, ascending, forever."""
    yield 1
    power = 2
    while True:
        yield power
        yield power * 3 // 2
        power *= 2


def _budget_from_config(flat: Mapping[str, Any]) -> tuple[Any, Any]:
    """(min_pixels, max_pixels) as ``Qwen2VLImageProcessor.__init__`` resolves them from a config."""
    size = flat.get("size")
    if size is None:
        size = {"shortest_edge": _PROCESSOR_DEFAULTS["min_pixels"], "longest_edge": _PROCESSOR_DEFAULTS["max_pixels"]}
    if not isinstance(size, Mapping):
        raise UsageError(
            f"preprocessor config 'size' must be {{'shortest_edge': MIN_PIXELS, 'longest_edge': MAX_PIXELS}}, got "
            f"{size!r}"
        )
    size = dict(size)
    if flat.get("min_pixels") is not None:
        size["shortest_edge"] = flat["min_pixels"]
    if flat.get("max_pixels") is not None:
        size["longest_edge"] = flat["max_pixels"]
    if not size.get("shortest_edge") or not size.get("longest_edge"):
        raise UsageError(
            f"preprocessor config 'size' {flat.get('size')!r} lacks shortest_edge or longest_edge (and min_pixels/"
            "max_pixels do not fill it in), so the processor refuses every image; give both pixel counts"
        )
    return size["shortest_edge"], size["longest_edge"]



PRESETS: dict[str, PixelBudget] = {
    # Qwen/Qwen2-VL-7B-Instruct: min_pixels 56*56 (4 tokens), max_pixels 28*28*16384 (16,384 tokens).
    "qwen2-vl": PixelBudget(name="qwen2-vl", patch_size=14, merge_size=2, temporal_patch_size=2,
                            min_pixels=3136, max_pixels=12845056),
    # Qwen/Qwen2.5-VL-7B-Instruct: the same processor numbers (the model differs: windowed attention).
    "qwen2.5-vl": PixelBudget(name="qwen2.5-vl", patch_size=14, merge_size=2, temporal_patch_size=2,
                              min_pixels=3136, max_pixels=12845056),
    # Qwen/Qwen3-VL-*: size {shortest_edge: 65536, longest_edge: 16777216} px = 64 to 16,384 tokens of 32x32 px.
    "qwen3-vl": PixelBudget(name="qwen3-vl", patch_size=16, merge_size=2, temporal_patch_size=2,
                            min_pixels=65536, max_pixels=16777216),
}
