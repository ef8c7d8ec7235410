"""Longest-edge grid schemes (Idefics3, SmolVLM): resize the longest edge, then cut M-pixel tiles plus the image.

A `LongestEdge` reproduces transformers' ``Idefics3ImageProcessor`` and
``SmolVLMImageProcessor`` (the same code, ``models/idefics3/image_processing_idefics3.py``
and ``models/smolvlm/image_processing_smolvlm.py``; the PIL twins agree), with
``M = max_image_size["longest_edge"]`` and ``L = size["longest_edge"]``:

1. ``_resize_output_size_rescale_to_max_len``: with ``ar = w / h`` (a Python float),
   the longest side becomes exactly L, up or down (width first on a square), the
   other ``int(L / ar)`` (``int(L * ar)`` for a tall image), plus 1 when odd, at
   least 1; then ``_resize_output_size_scale_below_upper_bound`` caps the longest
   side at 4096 the same way (without the even rounding);
2. ``resize_for_vision_encoder``: with ``ar`` of that size, the longest side goes up
   to ``ceil(side / M) * M``; the other side is ``int(long' / ar)`` (``int(long' * ar)``)
   rounded up to a multiple of M: the canvas;
3. ``split_images``: a canvas with a side over M is cut into ``(h/M) x (w/M)`` tiles
   of M x M, row-major, and the whole canvas resized to M x M comes last (the
   global image): ``rows*cols + 1`` crops; an M x M canvas is one image, not split
   (the processor reports 0 rows and 0 cols; here it is the grid 1x1, one crop).

Consequence: the long side always has ``ceil(L / M)`` tiles. With the default
``L = 4*M`` every image gives 4 tiles on its long side (1x4 .. 4x4 .. 4x1), and any
other grid needs another L. That is a processor setting, not an image size: a
target ``r x c`` is reached with the override ``size = {"longest_edge": max(r, c)*M}``
(`processor_overrides`) on an image of ``(r*M, c*M)`` (`resolution_for`), which
both resizes leave as it is (for ``c >= r``: ``int(c*M / (c/r))`` is ``r*M`` or, by
float rounding, ``r*M - 1``, which is odd and rounded up to ``r*M``). 1x1 is L = M.

Tokens (``models/idefics3/processing_idefics3.py`` ``replace_image_token``,
``models/smolvlm/processing_smolvlm.py`` ``get_image_prompt_string``): with
``T = image_seq_len`` placeholders per crop, each tile is
``<fake_token_around_image><row_i_col_j>`` + ``<image>`` x T, each row of tiles ends
with ``\\n``, then ``\\n<fake_token_around_image><global-img>`` + ``<image>`` x T +
``<fake_token_around_image>``; an unsplit image is only the last part without its
``\\n``. Image tokens are exactly ``T * crops``. The sequence tokens
``r*c*(T + 2) + r + T + 2 + n`` (unsplit: ``T + 3``) assume a tokenizer with each of
those tags as one token (the released tokenizers have ``<row_i_col_j>`` up to 6x6,
hence ``max_side`` <= 6), ``\\n`` as one token and ``\\n\\n`` (the last row's end and
the global image's start) as ``n`` = `newline_pair_tokens` tokens; the processor's
own count makes the same assumption (``len(tokenizer("\\n\\n")) - 1``).
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
from tilings._config import flat_config
from tilings._records import GridFamilies, SchemeRecord, check_field_names, read_preprocessor_config
from tilings.grids import grid_family
from tilings.types import Geometry, Tiling

# The processor reads sizes from image tensors (int64 shapes); larger sizes are no image at all.
MAX_SIZE = 2**63
# transformers' cap on the resized longest side (image_processing_idefics3.MAX_IMAGE_SIZE).
MAX_IMAGE_SIZE = 4096
# The released tokenizers hold <row_i_col_j> as single tokens for i, j <= 6 (Idefics3Processor looks up 6x6).
ROW_COL_TOKENS = 6
_PROCESSORS = ("Idefics3", "SmolVLM")
_CONFIG_KEYS = frozenset({"size", "max_image_size", "do_image_splitting"})


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LongestEdge(GridFamilies, SchemeRecord):
    """One longest-edge preprocessor's numbers (a grid `tilings.scheme.Scheme` with processor overrides).

    Attributes:
        name: a label carried into results (``"idefics3"``).
        tile_size: M, side of the square tiles and of the global image (``max_image_size["longest_edge"]``;
            the vision tower's ``image_size``).
        longest_edge: L, the processor's ``size["longest_edge"]`` when no override is given (`geometry`).
        max_side: the longest side, in tiles, a target may have (its override is ``max_side * M`` at most).
        patch_size: side of a vision-encoder patch (the model's ``vision_config.patch_size``).
        tokens_per_tile: ``<image>`` placeholders per crop (the processor's ``image_seq_len``,
            ``(M // patch)^2 / scale_factor^2``).
        image_splitting: the processor's ``do_image_splitting``; off, every image is one M x M view.
        newline_pair_tokens: tokens the tokenizer spells ``"\\n\\n"`` with (1 where it merges them).
    """

    SCHEME: ClassVar[str] = "longest-edge"

    name: str
    tile_size: int = 364
    longest_edge: int = 4 * 364
    max_side: int = ROW_COL_TOKENS
    patch_size: int = 14
    tokens_per_tile: int = 169
    image_splitting: bool = True
    newline_pair_tokens: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise UsageError(f"LongestEdge.name must be a non-empty string, got {self.name!r}")
        for field in ("tile_size", "longest_edge", "max_side", "patch_size", "tokens_per_tile"):
            object.__setattr__(self, field, check_positive_int(f"LongestEdge.{field}", getattr(self, field)))
        if not isinstance(self.image_splitting, bool):
            raise UsageError(f"LongestEdge.image_splitting must be true or false, got {self.image_splitting!r}")
        if self.newline_pair_tokens not in (1, 2) or isinstance(self.newline_pair_tokens, bool):
            raise UsageError(
                f"LongestEdge.newline_pair_tokens must be 1 (the tokenizer merges '\\n\\n') or 2, "
                f"got {self.newline_pair_tokens!r}"
            )
        if self.patch_size > self.tile_size:
            raise UsageError(
                f"LongestEdge {self.name!r}: patch_size {self.patch_size} is over tile_size {self.tile_size}; "
                "a tile must hold at least one patch"
            )
        if self.max_side > ROW_COL_TOKENS or self.max_side * self.tile_size > MAX_IMAGE_SIZE:
            most = min(ROW_COL_TOKENS, MAX_IMAGE_SIZE // self.tile_size)
            raise UsageError(
                f"LongestEdge {self.name!r}: max_side {self.max_side} is over {most}: the tokenizers spell "
                f"<row_i_col_j> as one token only up to {ROW_COL_TOKENS}x{ROW_COL_TOKENS}, and the processor caps "
                f"the longest side at {MAX_IMAGE_SIZE} px; pick max_side <= {most}"
            )

    # ----- the processor's arithmetic -----
    @property
    def tile_patches(self) -> int:
        """Encoder patches along one side of a tile (the convolution drops a remainder: 384 // 14 = 27)."""
        return self.tile_size // self.patch_size

    def canvas(self, height: int, width: int) -> tuple[int, int]:
        """The size the processor cuts into tiles: both resizes, the same float operations in the same order.

        Raises:
            UsageError: a size that is not a positive integer.
        """
        height = check_positive_int("height", height, below=MAX_SIZE)
        width = check_positive_int("width", width, below=MAX_SIZE)
        return self._canvas(height, width)

    def _canvas(self, height: int, width: int) -> tuple[int, int]:
        if not self.image_splitting:
            return (self.tile_size, self.tile_size)
        height, width = _rescale_to_max_len(height, width, self.longest_edge)
        height, width = _scale_below_upper_bound(height, width, MAX_IMAGE_SIZE)
        tile = self.tile_size
        aspect_ratio = width / height
        if width >= height:
            width = math.ceil(width / tile) * tile
            height = int(width / aspect_ratio)
            height = math.ceil(height / tile) * tile
        else:
            height = math.ceil(height / tile) * tile
            width = int(height * aspect_ratio)
            width = math.ceil(width / tile) * tile
        return (height, width)

    def _select(self, height: int, width: int) -> Tiling:
        canvas_h, canvas_w = self._canvas(height, width)
        tile = self.tile_size
        if canvas_h > tile or canvas_w > tile:
            return Tiling(math.ceil(canvas_h / tile), math.ceil(canvas_w / tile))
        return Tiling(1, 1)  # not split: the processor's rows = cols = 0, one image

    def select(self, height: int, width: int) -> Tiling:
        """The grid the processor picks for an image of `height` x `width` pixels (at `longest_edge`).

        Raises:
            UsageError: a size that is not a positive integer.
        """
        height = check_positive_int("height", height, below=MAX_SIZE)
        width = check_positive_int("width", width, below=MAX_SIZE)
        return self._select(height, width)

    def grid_geometry(self, tiling: Tiling) -> Geometry:
        """Crops, canvas and token counts of a grid, whatever image size led to it (not checked)."""
        rows, cols = Tiling(*tiling)
        per_tile = self.tokens_per_tile
        split = (rows, cols) != (1, 1)
        crops = rows * cols + 1 if split else 1
        sequence = (rows * cols * (per_tile + 2) + rows + per_tile + 2 + self.newline_pair_tokens if split
                    else per_tile + 3)
        return Geometry(
            tiling=Tiling(rows, cols),
            crops=crops,
            canvas=(rows * self.tile_size, cols * self.tile_size),
            image_tokens=per_tile * crops,
            sequence_tokens=sequence,
            encoder_patches=crops * self.tile_patches**2,
        )

    # ----- the scheme interface (tilings.scheme.Scheme) -----
    @property
    def max_crops(self) -> int:
        return self.max_side**2 if self.image_splitting else 1

    def geometry(self, height: int, width: int) -> Geometry:
        return self.grid_geometry(self.select(height, width))

    def check_target(self, target: Any) -> Tiling:
        """`target` as a `Tiling` the scheme reaches (with its override).

        Raises:
            UsageError: not a pair of positive integers, or a grid with a side over `max_side`.
        """
        if isinstance(target, str) or not isinstance(target, (tuple, list)) or len(target) != 2:
            raise UsageError(f"a tiling is a pair (rows, cols) of positive integers, got {target!r}")
        tiling = Tiling(check_positive_int("tiling rows", target[0]), check_positive_int("tiling cols", target[1]))
        if not self.image_splitting and tiling != (1, 1):
            raise UsageError(
                f"tiling {tiling} is unreachable: scheme {self.name!r} does not split images "
                "(do_image_splitting off), so its only grid is 1x1; pick 1x1 or a scheme with image_splitting on"
            )
        if max(tiling) > self.max_side:
            raise UsageError(
                f"tiling {tiling} is unreachable: scheme {self.name!r} has grids of 1..{self.max_side} tiles a "
                f"side (max_side); pick rows and cols <= {self.max_side}"
            )
        return tiling

    def target_geometry(self, target: Tiling) -> Geometry:
        return self.grid_geometry(self.check_target(target))

    def processor_overrides(self, target: Tiling) -> dict[str, Any]:
        """``{"size": {"longest_edge": max(rows, cols) * M}}``: the only L whose long side has that many tiles
        and leaves the target's image unresized (module docstring).

        Raises:
            UsageError: an unreachable target.
        """
        tiling = self.check_target(target)
        if not self.image_splitting:
            return {}
        return {"size": {"longest_edge": max(tiling) * self.tile_size}}

    def with_processor_overrides(self, overrides: Mapping[str, Any]) -> LongestEdge:
        """This scheme with the processor's ``size`` set to `overrides`' (the only setting it overrides).

        Raises:
            UsageError: another key, or a size that is not ``{"longest_edge": positive int}``.
        """
        unknown = sorted(set(overrides) - {"size"})
        if unknown:
            raise UsageError(
                f"profile {self.name!r} overrides only the processor's size, got {', '.join(map(repr, unknown))}; "
                'pass {"size": {"longest_edge": N}}'
            )
        if "size" not in overrides:
            return self
        size = overrides["size"]
        if not isinstance(size, Mapping) or set(size) != {"longest_edge"}:
            raise UsageError(f'profile {self.name!r}: size override must be {{"longest_edge": N}}, got {size!r}')
        longest = check_positive_int("size longest_edge", size["longest_edge"])
        return dataclasses.replace(self, longest_edge=longest)

    def resolution_for(self, target: Tiling) -> tuple[int, int]:
        """``(rows * M, cols * M)``, the target's canvas itself, to be processed with `processor_overrides`.

        Raises:
            UsageError: an unreachable target (the message says which grids are reachable).
        """
        tiling = self.check_target(target)
        size = (tiling.rows * self.tile_size, tiling.cols * self.tile_size)
        picked = self.with_processor_overrides(self.processor_overrides(tiling))._select(*size)
        if picked != tiling:  # the module docstring proves this never happens
            raise RuntimeError(f"{size} gives {picked}, not {tiling}, in scheme {self.name!r}: a tilings bug")
        return size

    def family_tilings(self, family: str) -> list[Tiling]:
        return grid_family(family, self.targets(), self.max_crops, f"scheme {self.name!r}")

    def points(self, family: str) -> list[tuple[Tiling, tuple[int, int]]]:
        return [(t, self.resolution_for(t)) for t in self.family_tilings(family)]

    def targets(self) -> tuple[Tiling, ...]:
        if not self.image_splitting:
            return (Tiling(1, 1),)
        side = range(1, self.max_side + 1)
        return tuple(Tiling(rows, cols) for rows in side for cols in side)

    def processor_kwargs(self) -> dict[str, Any]:
        """Keyword arguments that configure `transformers.Idefics3ImageProcessor` (or SmolVLM's) to this scheme."""
        return {
            "size": {"longest_edge": self.longest_edge},
            "max_image_size": {"longest_edge": self.tile_size},
            "do_image_splitting": self.image_splitting,
        }

    def text_processor_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `transformers.Idefics3Processor` (or SmolVLM's) besides its image processor and
        tokenizer that decide how many ``<image>`` tokens it writes."""
        return {"image_seq_len": self.tokens_per_tile}

    @classmethod
    def from_preprocessor_config(cls, config: Mapping[str, Any] | str | Path, **overrides: Any) -> LongestEdge:
        """Build a scheme from a checkpoint's ``preprocessor_config.json`` (a dict or a path).

        Reads ``max_image_size`` (the tile), ``size`` (the longest edge) and
        ``do_image_splitting``; a combined ``processor_config.json`` (image processor
        keys nested under ``image_processor``) also gives ``image_seq_len``. Missing
        keys take the preset of the config's processor (``image_processor_type`` or
        ``processor_class``: Idefics3 or SmolVLM; Idefics3 when neither says);
        the patch size and how the tokenizer spells ``"\\n\\n"`` are model and
        tokenizer facts: pass them as ``overrides`` (LongestEdge field names, which
        win over the config).

        Raises:
            UsageError: an unreadable file, another image processor's config or one with none of
                the keys, ``do_resize`` off, or an unknown override.
        """
        check_field_names(LongestEdge, overrides, what="override")
        flat = flat_config(config)
        kind = str(flat.get("image_processor_type") or flat.get("processor_class") or "")
        processor = next((p for p in _PROCESSORS if kind.startswith(p)), _PROCESSORS[0])
        flat = read_preprocessor_config(flat, processor, "an Idefics3 or SmolVLM preprocessor_config.json")
        if not _CONFIG_KEYS & flat.keys():
            raise UsageError(
                f"preprocessor config has none of the Idefics3ImageProcessor keys ({', '.join(sorted(_CONFIG_KEYS))}); "
                "pass an Idefics3 or SmolVLM preprocessor_config.json"
            )
        if flat.get("do_resize") is False:
            raise UsageError(
                "preprocessor config has do_resize false: the processor then never resizes to a longest edge, which "
                "this scheme assumes; set do_resize true"
            )
        base = PRESETS["smolvlm" if processor == "SmolVLM" else "idefics3"]
        fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(cls)}
        if flat.get("max_image_size") is not None:
            fields["tile_size"] = _longest_edge("max_image_size", flat["max_image_size"])
        if flat.get("size") is not None:
            fields["longest_edge"] = _longest_edge("size", flat["size"])
        if flat.get("do_image_splitting") is not None:
            fields["image_splitting"] = flat["do_image_splitting"]
        if flat.get("image_seq_len") is not None:
            fields["tokens_per_tile"] = flat["image_seq_len"]
        merged = {**fields, **overrides}
        if "max_side" not in overrides and isinstance(merged["tile_size"], int) and merged["tile_size"] > 0:
            merged["max_side"] = min(ROW_COL_TOKENS, MAX_IMAGE_SIZE // merged["tile_size"])
        if "name" not in overrides:
            same = cls(**merged) == base
            merged["name"] = base.name if same else f"{base.name}-custom"
        return cls(**merged)


def _rescale_to_max_len(height: int, width: int, max_len: int) -> tuple[int, int]:
    """``_resize_output_size_rescale_to_max_len`` (min_len 1): the longest side to `max_len`, the other even."""
    aspect_ratio = width / height
    if width >= height:
        width = max_len
        height = int(width / aspect_ratio)
        if height % 2 != 0:
            height += 1
    else:
        height = max_len
        width = int(height * aspect_ratio)
        if width % 2 != 0:
            width += 1
    return max(height, 1), max(width, 1)


def _scale_below_upper_bound(height: int, width: int, max_len: int) -> tuple[int, int]:
    """``_resize_output_size_scale_below_upper_bound``: the longest side down to `max_len` where it is over it."""
    aspect_ratio = width / height
    if width >= height and width > max_len:
        width = max_len
        height = int(width / aspect_ratio)
    elif height > width and height > max_len:
        height = max_len
        width = int(height * aspect_ratio)
    return max(height, 1), max(width, 1)


def _longest_edge(key: str, size: Any) -> Any:
    if isinstance(size, Mapping) and "longest_edge" in size:
        return size["longest_edge"]
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        return int(size)
    raise UsageError(f"preprocessor config {key!r} must be {{'longest_edge': N}}, got {size!r}")


PRESETS: dict[str, LongestEdge] = {
    # HuggingFaceM4/Idefics3-8B-Llama3 = transformers' Idefics3ImageProcessor and Idefics3Processor defaults:
    # 364 px tiles, longest edge 4*364, image_seq_len 169 = (364/14)^2 / 2^2 (SigLIP 364/14, scale_factor 2).
    # Llama 3's tokenizer spells "\n\n" as one token.
    "idefics3": LongestEdge(name="idefics3"),
    # HuggingFaceTB/SmolVLM2-2.2B-Instruct: 384 px tiles, longest edge 4*384, image_seq_len 81 = (384 // 14)^2 / 3^2
    # (SigLIP 384/14, scale_factor 3). SmolVLMImageProcessor's and SmolVLMProcessor's class defaults are
    # Idefics3's (364, 4*364, 169): the checkpoints set these in their processor configs.
    "smolvlm": LongestEdge(name="smolvlm", tile_size=384, longest_edge=4 * 384, tokens_per_tile=81),
}
