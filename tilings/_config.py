"""Reading a model's preprocessor config into Profile fields (both Molmo key families)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tilesweep.errors import UsageError

# Keys that only one family's config uses; their presence says which family it is.
_V1_KEYS = frozenset(
    {"base_image_input_size", "image_patch_size", "image_pooling_h", "image_pooling_w",
     "image_token_length_h", "image_token_length_w"}
)
_MOLMO2_KEYS = frozenset({"size", "patch_size", "pooling_size"})


def load_json(path: str | Path) -> dict[str, Any]:
    """Read a JSON object from a file, as a one-line UsageError when that fails."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"cannot read preprocessor config {str(path)!r}: {exc}; pass a JSON file or a dict") from exc
    if not isinstance(data, dict):
        raise UsageError(f"preprocessor config {str(path)!r} holds a {type(data).__name__}, not a JSON object")
    return data


def flat_config(config: Mapping[str, Any] | str | Path) -> dict[str, Any]:
    """A preprocessor config (dict or JSON path) as one flat dict.

    A combined ``processor_config.json`` nests the image processor's keys under
    ``image_processor``; they are read as if at the top (top-level keys win).

    Raises:
        UsageError: an unreadable file, or not a JSON object.
    """
    if isinstance(config, (str, Path)):
        config = load_json(config)
    if not isinstance(config, Mapping):
        raise UsageError(f"a preprocessor config must be a dict or a JSON path, got {type(config).__name__}")
    flat = dict(config)
    nested = flat.pop("image_processor", None)
    if isinstance(nested, Mapping):
        flat = {**nested, **flat}
    return flat


def profile_fields_from_config(
    config: Mapping[str, Any] | str | Path,
) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """Read a config: (Profile fields it sets, its family preset name, values it states only as a check).

    The family is ``"molmo2"`` or ``"molmo-v1"``. The checks are Molmo v1's
    ``image_token_length_h/w``: the pooled low-res grid, which the other numbers
    already decide.
    """
    flat = flat_config(config)
    is_v1 = bool(_V1_KEYS & flat.keys())
    is_molmo2 = bool(_MOLMO2_KEYS & flat.keys())
    if is_v1 and is_molmo2:
        raise UsageError(
            f"preprocessor config mixes Molmo v1 keys ({', '.join(sorted(_V1_KEYS & flat.keys()))}) and Molmo2 keys "
            f"({', '.join(sorted(_MOLMO2_KEYS & flat.keys()))}); pass one model's config"
        )
    if not (is_v1 or is_molmo2):
        raise UsageError(
            f"preprocessor config has none of the Molmo v1 keys ({', '.join(sorted(_V1_KEYS))}) or Molmo2 keys "
            f"({', '.join(sorted(_MOLMO2_KEYS))}); pass a Molmo or Molmo2 preprocessor_config.json"
        )
    fields = _v1_fields(flat) if is_v1 else _molmo2_fields(flat)
    if "max_crops" in flat:
        fields["max_crops"] = flat["max_crops"]
    if "overlap_margins" in flat:
        fields["overlap_margins"] = _pair("overlap_margins", flat["overlap_margins"])
    stated = {k: flat[k] for k in ("image_token_length_h", "image_token_length_w") if k in flat}
    return fields, ("molmo-v1" if is_v1 else "molmo2"), stated


def _pair(key: str, value: Any) -> tuple[Any, Any]:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return (value[0], value[1])
    raise UsageError(f"preprocessor config key {key!r} must be a pair of integers, got {value!r}")


def _square(key: str, height: Any, width: Any) -> Any:
    if height != width:
        raise UsageError(f"preprocessor config {key!r} must be square, got {height}x{width}; crops are square")
    return height


def _molmo2_fields(cfg: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if "size" in cfg:
        size = cfg["size"]
        if isinstance(size, Mapping) and {"height", "width"} <= size.keys():
            fields["crop_size"] = _square("size", size["height"], size["width"])
        elif isinstance(size, int) and not isinstance(size, bool):
            fields["crop_size"] = size
        else:
            raise UsageError(f"preprocessor config 'size' must be {{'height': N, 'width': N}} or N, got {size!r}")
    if "patch_size" in cfg:
        fields["patch_size"] = cfg["patch_size"]
    if "pooling_size" in cfg:
        fields["pooling"] = _pair("pooling_size", cfg["pooling_size"])
    # Token layout: the processor's flags, with its fallback of the low-res column
    # tokens to the high-res setting when `use_single_crop_col_tokens` is None.
    if cfg.get("image_use_col_tokens") is not None:
        fields["high_res_col_tokens"] = bool(cfg["image_use_col_tokens"])
    if "use_single_crop_col_tokens" in cfg:
        low = cfg["use_single_crop_col_tokens"]
        if low is None:
            low = cfg.get("image_use_col_tokens", True)
        fields["low_res_col_tokens"] = bool(low)
    if cfg.get("use_single_crop_start_token") is not None:
        fields["low_res_start_token"] = bool(cfg["use_single_crop_start_token"])
    return fields


def _v1_fields(cfg: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if "base_image_input_size" in cfg:
        height, width = _pair("base_image_input_size", cfg["base_image_input_size"])
        fields["crop_size"] = _square("base_image_input_size", height, width)
    if "image_patch_size" in cfg:
        fields["patch_size"] = cfg["image_patch_size"]
    if "image_pooling_h" in cfg or "image_pooling_w" in cfg:
        fields["pooling"] = (cfg.get("image_pooling_h", 2), cfg.get("image_pooling_w", 2))
    return fields
