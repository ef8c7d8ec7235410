"""Molmo's scheme: least up-scaling over overlapping canvases, the numbers of one preprocessor, frozen.

A `Profile` holds what decides the tiling and the token count of an image in a
Molmo-style preprocessor: the square crop size, the ViT patch size, the overlap
margins (in patches), the maximum number of high-resolution crops, the pooling
window of the vision adapter and the token layout around the pooled patches. It
is a grid `tilings.scheme.Scheme`: for ``rows x cols`` windows the canvas is
``(rows*W + M) x (cols*W + M)``, and that canvas is its own exact inverse.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tilesweep.errors import UsageError
from tilings._checks import check_positive_int
from tilings._config import profile_fields_from_config
from tilings._records import GridFamilies, SchemeRecord
from tilings.grids import grid_family
from tilings.leastupscale import MAX_SIZE, candidate_tilings, select_tiling_raw
from tilings.types import Geometry, Tiling


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Profile(GridFamilies, SchemeRecord):
    """One preprocessor's tiling numbers and token layout.

    Attributes:
        name: a label carried into results (``"molmo2"``, ``"molmo-v1"``, ...).
        crop_size: side of the square crops, in pixels.
        patch_size: side of a ViT patch, in pixels.
        overlap_margins: (left, right) overlap between neighbouring crops, in patches.
        max_crops: most high-resolution crops a tiling may have (global crop not counted).
        pooling: (h, w) patches pooled into one image token.
        high_res_col_tokens: a column token ends every pooled row of the high-res view.
        low_res_col_tokens: a column token ends every pooled row of the low-res view.
        low_res_start_token: the low-res view opens with ``<low_res_im_start>``
            (Molmo2) rather than ``<im_start>`` (Molmo v1); the count is the same.
    """

    name: str
    crop_size: int
    patch_size: int
    overlap_margins: tuple[int, int]
    max_crops: int
    pooling: tuple[int, int]
    high_res_col_tokens: bool
    low_res_col_tokens: bool
    low_res_start_token: bool

    def __post_init__(self) -> None:
        for field in ("crop_size", "patch_size", "max_crops"):
            check_positive_int(f"Profile.{field}", getattr(self, field))
        margins = tuple(self.overlap_margins)
        if len(margins) != 2 or any(isinstance(m, bool) or not isinstance(m, int) or m < 0 for m in margins):
            raise UsageError(
                f"Profile.overlap_margins must be two non-negative integers (left, right), got {self.overlap_margins!r}"
            )
        pooling = tuple(self.pooling)
        if len(pooling) != 2:
            raise UsageError(f"Profile.pooling must be two positive integers (h, w), got {self.pooling!r}")
        for p in pooling:
            check_positive_int("Profile.pooling", p)
        # Lists from JSON become tuples so that the profile stays hashable.
        object.__setattr__(self, "overlap_margins", margins)
        object.__setattr__(self, "pooling", pooling)
        if self.window_patches < 1:
            raise UsageError(
                f"Profile {self.name!r}: overlap margins {margins} leave no window inside a crop of "
                f"{self.crop_patches} patches; margins must sum to less than crop_size // patch_size"
            )

    @property
    def crop_patches(self) -> int:
        """Patches along one side of a crop."""
        return self.crop_size // self.patch_size

    @property
    def window_patches(self) -> int:
        """Patches along one side of a crop that no neighbour overlaps."""
        return self.crop_patches - sum(self.overlap_margins)

    @property
    def window_size(self) -> int:
        """W: the step between neighbouring crops, in pixels."""
        return self.window_patches * self.patch_size

    @property
    def margin_size(self) -> int:
        """M: the total overlap margin, in pixels (the canvas is ``k*W + M`` along a side of k crops)."""
        return sum(self.overlap_margins) * self.patch_size

    @property
    def low_res_grid(self) -> tuple[int, int]:
        """Pooled (rows, cols) of the global crop; the same for every image."""
        return (math.ceil(self.crop_patches / self.pooling[0]), math.ceil(self.crop_patches / self.pooling[1]))

    # ----- the scheme interface (tilings.scheme.Scheme) -----
    def canvas_for(self, tiling: Tiling) -> tuple[int, int]:
        """(height, width) the image is resized to for `tiling`: ``k*W + M`` along a side of k crops."""
        return (tiling[0] * self.window_size + self.margin_size, tiling[1] * self.window_size + self.margin_size)

    def select(self, height: int, width: int) -> Tiling:
        """The processor's ``select_tiling`` on an image of `height` x `width` pixels.

        Raises:
            UsageError: a size that is not a positive integer.
        """
        height = check_positive_int("height", height, below=MAX_SIZE)
        width = check_positive_int("width", width, below=MAX_SIZE)
        margin = self.margin_size
        return select_tiling_raw(height - margin, width - margin, self.window_size, self.max_crops)

    def geometry(self, height: int, width: int) -> Geometry:
        return self.grid_geometry(self.select(height, width))

    def grid_geometry(self, tiling: Tiling) -> Geometry:
        """Crops, canvas and token counts of a tiling, whatever image size led to it (not checked against max_crops)."""
        tiling = Tiling(*tiling)
        canvas = self.canvas_for(tiling)
        pool_h, pool_w = self.pooling
        high = (
            math.ceil((canvas[0] // self.patch_size) / pool_h),
            math.ceil((canvas[1] // self.patch_size) / pool_w),
        )
        low = self.low_res_grid
        # Each view: a start token, one row of patches (plus a column token) per pooled row, an end token.
        low_seq = 2 + low[0] * (low[1] + int(self.low_res_col_tokens))
        high_seq = 2 + high[0] * (high[1] + int(self.high_res_col_tokens))
        crops = tiling.rows * tiling.cols + 1
        return Geometry(
            tiling=tiling, crops=crops, canvas=canvas, image_tokens=low[0] * low[1] + high[0] * high[1],
            sequence_tokens=low_seq + high_seq, low_res_grid=low, high_res_grid=high,
            encoder_patches=crops * self.crop_patches**2,
        )

    def check_target(self, tiling: Any) -> Tiling:
        """`tiling` as a `Tiling`, checked against the crop limit.

        Raises:
            UsageError: not a pair of positive integers, or more crops than `max_crops`.
        """
        if isinstance(tiling, str) or not isinstance(tiling, (tuple, list)) or len(tiling) != 2:
            raise UsageError(f"a tiling is a pair (rows, cols) of positive integers, got {tiling!r}")
        rows = check_positive_int("tiling rows", tiling[0])
        cols = check_positive_int("tiling cols", tiling[1])
        if rows * cols > self.max_crops:
            # Crops count the global crop, as everywhere else in tilesweep.
            raise UsageError(
                f"tiling {rows}x{cols} has {rows * cols + 1} crops ({rows * cols} tiles + the global crop), over "
                f"the {self.max_crops + 1} of profile {self.name!r} (max_crops {self.max_crops} tiles + the global "
                f"crop); pick rows*cols in 1..{self.max_crops}"
            )
        return Tiling(rows, cols)

    def target_geometry(self, target: Tiling) -> Geometry:
        return self.grid_geometry(self.check_target(target))

    def resolution_for(self, target: Tiling) -> tuple[int, int]:
        """The tiling's own canvas: there it needs a scale of exactly 1, and every other
        tiling either down-scales or needs more crops (the processor prefers fewer crops on a tie)."""
        return self.canvas_for(self.check_target(target))

    def family_tilings(self, family: str) -> list[Tiling]:
        return grid_family(family, self.targets(), self.max_crops, f"profile {self.name!r}")

    def points(self, family: str) -> list[tuple[Tiling, tuple[int, int]]]:
        return [(t, self.canvas_for(t)) for t in self.family_tilings(family)]

    def targets(self) -> tuple[Tiling, ...]:
        return candidate_tilings(self.max_crops)

    def to_dict(self) -> dict[str, Any]:
        """The profile's numbers: the same dict the run manifests and config ids have always held (no "scheme")."""
        d = dataclasses.asdict(self)
        d["overlap_margins"] = list(self.overlap_margins)
        d["pooling"] = list(self.pooling)
        return d

    def processor_kwargs(self) -> dict[str, Any]:
        """Keyword arguments that configure `transformers.Molmo2ImageProcessor` to this profile."""
        return {
            "size": {"height": self.crop_size, "width": self.crop_size},
            "max_crops": self.max_crops,
            "overlap_margins": list(self.overlap_margins),
            "patch_size": self.patch_size,
            "pooling_size": list(self.pooling),
        }

    @classmethod
    def from_preprocessor_config(cls, config: Mapping[str, Any] | str | Path, **overrides: Any) -> Profile:
        """Build a profile from a model's ``preprocessor_config.json`` (a dict or a path).

        Both key families are read: Molmo2's (``size``, ``max_crops``,
        ``overlap_margins``, ``patch_size``, ``pooling_size``, and the token-layout
        flags of its processor config) and Molmo v1's remote code
        (``base_image_input_size``, ``image_patch_size``, ``image_pooling_h/w``,
        ``image_token_length_h/w``, ``max_crops``, ``overlap_margins``). Keys the
        config lacks take the family's preset value. ``overrides`` are Profile
        field names and win over the config.

        Raises:
            UsageError: an unreadable file, a config of neither family, inconsistent
                values, or an override that is not a Profile field.
        """
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            allowed = ", ".join(f.name for f in dataclasses.fields(cls))
            raise UsageError(f"unknown Profile override(s) {', '.join(unknown)}; allowed: {allowed}")
        fields, family, stated = profile_fields_from_config(config)
        base = PRESETS[family]
        merged = {**{f.name: getattr(base, f.name) for f in dataclasses.fields(cls)}, **fields}
        _check_stated_grid(cls(**merged), stated)
        if "name" not in overrides:
            candidate = cls(**{**merged, **overrides, "name": base.name})
            merged["name"] = base.name if candidate == base else f"{base.name}-custom"
        return cls(**{**merged, **overrides})


PRESETS: dict[str, Profile] = {
    # Molmo-7B-D-0924 (remote code): 336 px crops, 12 crops, column tokens on both views.
    "molmo-v1": Profile(
        name="molmo-v1",
        crop_size=336,
        patch_size=14,
        overlap_margins=(4, 4),
        max_crops=12,
        pooling=(2, 2),
        high_res_col_tokens=True,
        low_res_col_tokens=True,
        low_res_start_token=False,
    ),
    # Molmo2-8B (native transformers): 378 px crops, 8 crops, column tokens on the high-res view only.
    "molmo2": Profile(
        name="molmo2",
        crop_size=378,
        patch_size=14,
        overlap_margins=(4, 4),
        max_crops=8,
        pooling=(2, 2),
        high_res_col_tokens=True,
        low_res_col_tokens=False,
        low_res_start_token=True,
    ),
}


def _check_stated_grid(profile: Profile, stated: Mapping[str, Any]) -> None:
    """A Molmo v1 config states its pooled low-res grid; it must agree with the numbers that decide it."""
    for key, expected in zip(("image_token_length_h", "image_token_length_w"), profile.low_res_grid):
        if key in stated and stated[key] != expected:
            raise UsageError(
                f"preprocessor config {key}={stated[key]!r} disagrees with its crop {profile.crop_size} px, "
                f"patch {profile.patch_size} px and pooling {profile.pooling} (= {expected}); fix the config"
            )
