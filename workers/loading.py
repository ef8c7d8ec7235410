"""Loading a model by name: a registered spec, or a hub id / local path through ``from_pretrained``."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tilesweep.errors import UsageError
from tilings import PROFILES, Profile
from tilings import resolve_profile as tilings_resolve_profile
from workers.inputs import InputBuilder, Molmo2Inputs, MolmoV1Inputs
from workers.models import (
    MODELS,
    build_registered,
    check_crop_size,
    check_profile_fits,
    layout_from_config,
    molmo2_image_processor,
)

logger = logging.getLogger(__name__)

# model_type values `load` knows: Molmo2 natively, Molmo v1 through its own remote code.
SUPPORTED_MODEL_TYPES = ("molmo2", "molmo")
# A hub repository id: one "org/name"; anything else that is not a registered name must be a local path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(slots=True)
class Loaded:
    """A model ready to measure, with what measuring it needs."""

    name: str
    model: nn.Module
    architecture: str  # which module map (workers.modulemap.ARCHITECTURE_MAPS)
    profile: Profile
    inputs: InputBuilder
    source: str  # "registry" or "pretrained"


def resolve_profile(profile: str | Profile | None) -> Profile | None:
    """`tilings.resolve_profile`, with None ("the model's own") passed through."""
    return None if profile is None else tilings_resolve_profile(profile)


def check_source(name: str, *, trust_remote_code: bool = False, revision: str | None = None,
                 profile: str | Profile | None = None) -> None:
    """Refuse a model that cannot be loaded, before anything is loaded or imported.

    Reads files only (a local directory's ``config.json``): never the network and
    never code that ships with a checkpoint, so the driver calls it before any
    worker starts and a typo costs one line. A hub id (``org/name``) that is not a
    local directory passes; only loading it can tell more.

    Raises:
        UsageError: an unknown profile; a registered model with a revision or a
            profile whose crop size it cannot take; a name that is neither
            registered, a hub id nor an existing path; a local path that is not a
            checkpoint directory; an unsupported model type; a Molmo v1 checkpoint
            (remote code) without `trust_remote_code`.
    """
    chosen = resolve_profile(profile)
    spec = MODELS.get(name)
    if spec is not None:
        if revision is not None:
            raise UsageError(f"--revision {revision!r} applies to hub models, not to the registered model {name!r}; drop it")
        if chosen is not None:
            check_crop_size(spec.config().vision_config.image_size, chosen)
        return
    path = Path(name).expanduser()
    if path.exists():
        raw = _local_config(path)
        _check_model_type(name, raw.get("model_type"), trust_remote_code)
        if chosen is not None and raw.get("model_type") == "molmo2":
            check_crop_size((raw.get("vision_config") or {}).get("image_size"), chosen)
        return
    if _HUB_ID.match(name):
        return
    if "/" in name or name.startswith((".", "~")):
        raise UsageError(f"model path {name!r} does not exist; pass an existing checkpoint directory (the one "
                         f"holding config.json), a hub id (org/name) or a registered model ({', '.join(MODELS)})")
    raise UsageError(
        f"model {name!r} is neither a registered model ({', '.join(MODELS)}) nor a hub id (org/name) nor an "
        "existing path; pass one of those (a local checkpoint is the directory holding config.json)")


def _local_config(path: Path) -> dict[str, Any]:
    """The ``config.json`` of a local checkpoint directory, read as plain JSON."""
    if not path.is_dir():
        raise UsageError(f"model path {str(path)!r} is a file; pass the checkpoint directory that holds config.json")
    config = path / "config.json"
    try:
        raw = json.loads(config.read_text())
    except FileNotFoundError:
        raise UsageError(f"model directory {str(path)!r} has no config.json; pass the checkpoint directory "
                         "(the one holding config.json)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"cannot read {config} ({type(exc).__name__}: {exc}); fix or replace that file") from None
    if not isinstance(raw, dict):
        raise UsageError(f"{config} holds a JSON {type(raw).__name__}, not an object; fix or replace that file")
    return raw


def _check_model_type(source: str, model_type: Any, trust_remote_code: bool) -> None:
    if model_type == "molmo" and not trust_remote_code:
        raise UsageError(
            f"model {source!r} is a Molmo v1 checkpoint (model_type 'molmo') whose modelling code ships with the "
            "checkpoint; pass --trust-remote-code (trust_remote_code=True) to run that code"
        )
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise UsageError(
            f"model {source!r} has model_type {model_type!r}; supported: 'molmo2' (native) and 'molmo' "
            "(Molmo v1, with --trust-remote-code)"
        )


def load(
    name: str,
    *,
    device: torch.device,
    dtype: torch.dtype,
    attn_implementation: str | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    profile: str | Profile | None = None,
    seed: int = 0,
) -> Loaded:
    """Load `name` onto `device`.

    Raises:
        UsageError: an unknown name, a Molmo v1 checkpoint without `trust_remote_code`,
            an unsupported model type, or a profile the model cannot take.
    """
    check_source(name, trust_remote_code=trust_remote_code, revision=revision, profile=profile)
    chosen = resolve_profile(profile)
    spec = MODELS.get(name)
    if spec is not None:
        chosen = chosen or PROFILES[spec.profile]
        model = build_registered(spec, device=device, dtype=dtype, attn_implementation=attn_implementation, seed=seed)
        check_profile_fits(model, chosen)
        inputs = Molmo2Inputs(image_processor=molmo2_image_processor(chosen), layout=layout_from_config(model.config, chosen))
        return Loaded(name=name, model=model, architecture=spec.architecture, profile=chosen, inputs=inputs, source="registry")
    return _load_pretrained(name, device=device, dtype=dtype, attn_implementation=attn_implementation,
                            revision=revision, trust_remote_code=trust_remote_code, profile=chosen)


def _config_dict(source: str, revision: str | None) -> dict[str, Any]:
    from transformers import PreTrainedConfig

    try:
        raw, _ = PreTrainedConfig.get_config_dict(source, revision=revision)
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"model {source!r} is neither a registered model ({', '.join(MODELS)}) nor a loadable hub id or local "
            f"path ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); pick a registered name or "
            "a directory holding config.json"
        ) from None
    return raw


def _load_pretrained(
    source: str,
    *,
    device: torch.device,
    dtype: torch.dtype,
    attn_implementation: str | None,
    revision: str | None,
    trust_remote_code: bool,
    profile: Profile | None,
) -> Loaded:
    raw = _config_dict(source, revision)
    model_type = raw.get("model_type")
    _check_model_type(source, model_type, trust_remote_code)  # a hub config, read only now
    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    if model_type == "molmo2":
        from transformers import Molmo2ForConditionalGeneration

        model = Molmo2ForConditionalGeneration.from_pretrained(source, revision=revision, dtype=dtype, **extra)
        model = model.to(device).eval()
        processor, image_processor = _molmo2_processors(source, revision)
        if profile is None:
            if image_processor is not None:
                profile = Profile.from_preprocessor_config(_preprocessor_settings(processor, image_processor))
            else:
                logger.warning("%s has no preprocessor config; using the %r tiling profile", source, "molmo2")
                profile = PROFILES["molmo2"]
        check_profile_fits(model, profile)
        inputs = Molmo2Inputs(
            image_processor=image_processor if image_processor is not None else molmo2_image_processor(profile),
            layout=layout_from_config(model.config, profile),
            processor=processor,
        )
        return Loaded(name=source, model=model, architecture="molmo2", profile=profile, inputs=inputs, source="pretrained")
    if model_type == "molmo":
        assert trust_remote_code  # _check_model_type refused it otherwise
        from transformers import AutoModelForCausalLM, AutoProcessor

        model = AutoModelForCausalLM.from_pretrained(source, revision=revision, trust_remote_code=True, dtype=dtype, **extra)
        model = model.to(device).eval()
        processor = AutoProcessor.from_pretrained(source, revision=revision, trust_remote_code=True)
        if profile is None:
            profile = Profile.from_preprocessor_config(processor.image_processor.to_dict())
        return Loaded(name=source, model=model, architecture="molmo-v1", profile=profile,
                      inputs=MolmoV1Inputs(processor=processor), source="pretrained")
    raise AssertionError(f"model_type {model_type!r} passed _check_model_type")


def _molmo2_processors(source: str, revision: str | None) -> tuple[Any, Any]:
    """(full processor or None, image processor or None): the tokenizer may not load offline."""
    from transformers import AutoProcessor, Molmo2ImageProcessor

    try:
        processor = AutoProcessor.from_pretrained(source, revision=revision)
        if hasattr(processor, "image_processor") and hasattr(processor, "tokenizer"):
            return processor, processor.image_processor
    except Exception as exc:  # no tokenizer files, offline: fall back to the image processor and the layout
        logger.info("full processor of %s not loadable (%s: %s); using its image processor", source, type(exc).__name__, exc)
    try:
        return None, Molmo2ImageProcessor.from_pretrained(source, revision=revision)
    except (OSError, ValueError) as exc:
        logger.info("no image processor config in %s (%s)", source, exc)
        return None, None


def _preprocessor_settings(processor: Any, image_processor: Any) -> dict[str, Any]:
    """The image processor's settings plus the token-layout flags that live on the full processor."""
    settings = image_processor.to_dict()
    for key in ("image_use_col_tokens", "use_single_crop_col_tokens", "use_single_crop_start_token"):
        if processor is not None and hasattr(processor, key):
            settings[key] = getattr(processor, key)
    return settings
