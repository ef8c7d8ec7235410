"""tilings: the exact geometry of Molmo-style image tiling, in pure Python.

Forward (image size -> tiling, canvas, crops, tokens), inverse (tiling -> the
exact image size; crop count -> tilings) and enumeration of tiling families,
reproducing the preprocessors in transformers bit for bit. Imports neither torch
nor ray, so planners and drivers can use it anywhere.
"""

from tilings.families import FAMILIES, enumerate_tilings, parse_families
from tilings.geometry import canvas_for, geometry, tiling_geometry
from tilings.inverse import crop_range, resolution_for, tilings_for_crops
from tilings.profiles import PROFILES, Profile, get_profile, resolve_profile
from tilings.select import candidate_tilings, select_tiling
from tilings.types import Geometry, Tiling

__all__ = [
    "FAMILIES",
    "PROFILES",
    "Geometry",
    "Profile",
    "Tiling",
    "candidate_tilings",
    "canvas_for",
    "crop_range",
    "enumerate_tilings",
    "geometry",
    "get_profile",
    "parse_families",
    "resolution_for",
    "resolve_profile",
    "select_tiling",
    "tiling_geometry",
    "tilings_for_crops",
]
