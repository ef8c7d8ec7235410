"""Tiling profiles: the numbers of one image preprocessor, frozen.

A `Profile` holds what decides the tiling and the token count of an image in a
Molmo-style preprocessor: the square crop size, the ViT patch size, the overlap
margins (in patches), the maximum number of high-resolution crops, the pooling
window of the vision adapter and the token layout around the pooled patches.
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


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
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
        base = PROFILES[family]
        merged = {**{f.name: getattr(base, f.name) for f in dataclasses.fields(cls)}, **fields}
        _check_stated_grid(cls(**merged), stated)
        if "name" not in overrides:
            candidate = cls(**{**merged, **overrides, "name": base.name})
            merged["name"] = base.name if candidate == base else f"{base.name}-custom"
        return cls(**{**merged, **overrides})


PROFILES: dict[str, Profile] = {
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


def get_profile(profile: Profile | str) -> Profile:
    """A `Profile` as given, or the preset of that name.

    Raises:
        UsageError: an unknown name (the message lists the presets).
    """
    if isinstance(profile, Profile):
        return profile
    if isinstance(profile, str) and profile in PROFILES:
        return PROFILES[profile]
    raise UsageError(
        f"unknown profile {profile!r}; known profiles: {', '.join(PROFILES)} "
        "(or build one with Profile.from_preprocessor_config)"
    )


def resolve_profile(profile: Profile | str) -> Profile:
    """A `Profile` as given, a preset by name, or one read from a ``preprocessor_config.json`` path.

    Raises:
        UsageError: an unknown name that is not a path either, or a config that cannot be read.
    """
    if isinstance(profile, Profile) or profile in PROFILES:
        return get_profile(profile)
    if str(profile).endswith(".json") or Path(profile).is_file():
        return Profile.from_preprocessor_config(profile)
    return get_profile(profile)  # raises the error that lists the presets


def _check_stated_grid(profile: Profile, stated: Mapping[str, Any]) -> None:
    """A Molmo v1 config states its pooled low-res grid; it must agree with the numbers that decide it."""
    for key, expected in zip(("image_token_length_h", "image_token_length_w"), profile.low_res_grid):
        if key in stated and stated[key] != expected:
            raise UsageError(
                f"preprocessor config {key}={stated[key]!r} disagrees with its crop {profile.crop_size} px, "
                f"patch {profile.patch_size} px and pooling {profile.pooling} (= {expected}); fix the config"
            )
