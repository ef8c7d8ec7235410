"""Forward geometry: image size -> tiling, canvas, crops and token counts, for any scheme."""

from __future__ import annotations

from tilings.profiles import Profile
from tilings.registry import get_profile
from tilings.scheme import Scheme
from tilings.types import Geometry, Tiling


def canvas_for(tiling: Tiling, profile: Profile | str) -> tuple[int, int]:
    """(height, width) a Molmo profile resizes the image to for `tiling`: ``k*W + M`` along a side of k crops."""
    return get_profile(profile).canvas_for(tiling)


def tiling_geometry(tiling: Tiling, profile: Scheme | str) -> Geometry:
    """Crops, canvas and token counts of a target, whatever image size led to it.

    A Molmo profile describes any grid, even one over its crop limit; other schemes
    only their reachable targets.

    Raises:
        UsageError: an unreachable target (schemes other than Molmo's).
    """
    scheme = get_profile(profile)
    if isinstance(scheme, Profile):
        return scheme.grid_geometry(Tiling(*tiling))
    return scheme.target_geometry(Tiling(*tiling))


def geometry(height: int, width: int, profile: Scheme | str) -> Geometry:
    """What the preprocessor of `profile` makes of an image of `height` x `width` pixels.

    Raises:
        UsageError: a size that is not a positive integer, or an unknown profile.
    """
    return get_profile(profile).geometry(height, width)
