"""Every scheme by name (`PROFILES`), and turning a name, a path or a stored dict back into one.

One registry for every kernel's presets, so everything above `tilings` asks for a
scheme by name and never needs to know its class.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tilesweep.errors import UsageError
from tilings import aspect, budget, ceiling, longestedge, mllama, nativeres, panscan, pinpoints, profiles, tiled
from tilings._config import flat_config
from tilings.profiles import Profile
from tilings.scheme import Scheme, scheme_kind_key

PROFILES: dict[str, Scheme] = {
    **profiles.PRESETS, **budget.PRESETS, **aspect.PRESETS, **pinpoints.PRESETS,  # Schemes I
    **panscan.PRESETS, **longestedge.PRESETS, **ceiling.PRESETS, **tiled.PRESETS, **nativeres.PRESETS,
    **mllama.PRESETS,
}
# to_dict()["scheme"] -> the class that reads it back (Molmo profiles carry no "scheme" entry).
_CLASSES: dict[str, Any] = {cls.SCHEME: cls for cls in {type(s) for s in PROFILES.values()} if hasattr(cls, "SCHEME")}


def get_profile(profile: Scheme | str) -> Scheme:
    """A scheme as given, or the preset of that name.

    Raises:
        UsageError: an unknown name (the message lists the presets).
    """
    if isinstance(profile, Scheme):
        return profile
    if isinstance(profile, str) and profile in PROFILES:
        return PROFILES[profile]
    raise UsageError(
        f"unknown profile {profile!r}; known profiles: {', '.join(PROFILES)} "
        "(or build one with Profile.from_preprocessor_config)"
    )


def resolve_profile(profile: Scheme | str) -> Scheme:
    """A scheme as given, a preset by name, or one read from a ``preprocessor_config.json`` path.

    Raises:
        UsageError: an unknown name that is not a path either, or a config that cannot be read.
    """
    if isinstance(profile, Scheme) or profile in PROFILES:
        return get_profile(profile)
    if str(profile).endswith(".json") or Path(profile).is_file():
        data = flat_config(profile)
        return _config_class(data).from_preprocessor_config(data)
    return get_profile(profile)  # raises the error that lists the presets


def _config_class(data: Mapping[str, Any]) -> Any:
    """The scheme class that reads this preprocessor config: by its image processor type, else by its keys."""
    flat = data
    kind = str(flat.get("image_processor_type") or "")
    if kind.startswith(("Llama4", "Cohere2Vision")) or "resize_to_max_canvas" in flat:
        return tiled.TiledCanvas  # before GotOcr2: their configs also hold max_patches
    if kind.startswith("Mllama") or "max_image_tiles" in flat:
        return mllama.PaddedCanvas
    if kind.startswith(("Idefics3", "SmolVLM")) or "max_image_size" in flat:
        return longestedge.LongestEdge
    if kind.startswith("GotOcr2") or "max_patches" in flat:
        return aspect.ClosestAspect
    if kind.startswith("Gemma3") or "pan_and_scan_min_crop_size" in flat or "do_pan_and_scan" in flat:
        return panscan.PanScan
    if kind.startswith("Phi4Multimodal") or "dynamic_hd" in flat:
        return ceiling.CeilingGrid
    if kind.startswith("LlavaOnevision") or "image_grid_pinpoints" in flat:
        return pinpoints.Pinpoints
    if kind.startswith("Pixtral") or "spatial_merge_size" in flat:
        return nativeres.NativeResolution
    if kind.startswith("Qwen2VL") or "temporal_patch_size" in flat or "merge_size" in flat:
        return budget.PixelBudget
    return Profile  # Molmo's, in either of its key families


def scheme_from_dict(data: Mapping[str, Any]) -> Scheme:
    """The scheme whose `to_dict` is `data` (a run manifest's ``profile``).

    Raises:
        UsageError: a dict no scheme class reads.
    """
    kind = scheme_kind_key(data)
    try:
        if kind is None:
            return Profile(**data)
        if kind in _CLASSES:
            return _CLASSES[kind].from_dict(data)
    except TypeError as exc:
        raise UsageError(f"cannot read the tiling profile {dict(data)!r} ({exc}); it was written by another "
                         "tilesweep version") from None
    raise UsageError(f"unknown tiling scheme {kind!r} in {dict(data)!r}; known: {', '.join(_CLASSES) or 'none'}")
