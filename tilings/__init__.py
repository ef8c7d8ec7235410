"""tilings: the exact geometry of VLM image preprocessors, in pure Python.

One vocabulary for every scheme (`tilings.scheme`): forward (image size -> grid,
crops, tokens), inverse (grid -> the exact image size; crop or token count ->
grids) and families of grids to sweep, reproducing the preprocessors in
transformers bit for bit. Imports neither torch, numpy nor ray, so planners and
drivers can use it anywhere.
"""

from tilings.aspect import ClosestAspect
from tilings.budget import PixelBudget
from tilings.ceiling import CeilingGrid
from tilings.families import FAMILIES, enumerate_tilings, parse_families
from tilings.geometry import canvas_for, geometry, tiling_geometry
from tilings.inverse import crop_counts, crop_range, resolution_for, tilings_for_crops, tilings_for_tokens
from tilings.longestedge import LongestEdge
from tilings.nativeres import NativeResolution
from tilings.panscan import PanScan
from tilings.pinpoints import Pinpoints
from tilings.profiles import Profile
from tilings.registry import PROFILES, get_profile, resolve_profile, scheme_from_dict
from tilings.scheme import BUDGET, GRID, Scheme
from tilings.select import candidate_tilings, select_tiling
from tilings.tiled import TiledCanvas
from tilings.types import Geometry, Tiling

__all__ = [
    "BUDGET",
    "CeilingGrid",
    "ClosestAspect",
    "FAMILIES",
    "GRID",
    "NativeResolution",
    "PanScan",
    "PROFILES",
    "Geometry",
    "LongestEdge",
    "Pinpoints",
    "PixelBudget",
    "Profile",
    "Scheme",
    "TiledCanvas",
    "Tiling",
    "candidate_tilings",
    "canvas_for",
    "crop_counts",
    "crop_range",
    "enumerate_tilings",
    "geometry",
    "get_profile",
    "parse_families",
    "resolution_for",
    "resolve_profile",
    "scheme_from_dict",
    "select_tiling",
    "tiling_geometry",
    "tilings_for_crops",
    "tilings_for_tokens",
]
