"""Loading a model by name: a registered spec, or a hub id / local path through its architecture's loader."""

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
from tilings import Scheme, get_profile
from tilings import resolve_profile as tilings_resolve_profile
from workers.arch import Architecture
from workers.inputs import InputBuilder
from workers.models import build_registered
from workers.registry import ARCHITECTURES, MODELS, for_model_type, supported_model_types

logger = logging.getLogger(__name__)

# A hub repository id: one "org/name"; anything else that is not a registered name must be a local path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(slots=True)
class Loaded:
    """A model ready to measure, with what measuring it needs."""

    name: str
    model: nn.Module
    architecture: str  # a key of workers.registry.ARCHITECTURES
    profile: Scheme
    inputs: InputBuilder
    source: str  # "registry" or "pretrained"


def resolve_profile(profile: str | Scheme | None) -> Scheme | None:
    """`tilings.resolve_profile`, with None ("the model's own") passed through."""
    return None if profile is None else tilings_resolve_profile(profile)


def check_source(name: str, *, trust_remote_code: bool = False, revision: str | None = None,
                 profile: str | Scheme | None = None) -> None:
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
            _check_fits(ARCHITECTURES[spec.architecture].name, spec.config(), chosen)
        return
    path = Path(name).expanduser()
    if path.exists():
        raw = _local_config(path)
        arch = _check_model_type(name, raw.get("model_type"), trust_remote_code)
        if chosen is not None and not arch.remote_code:
            _check_fits(arch.name, raw, chosen)
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


def _check_fits(architecture: str, config: Any, scheme: Scheme) -> None:
    check = ARCHITECTURES[architecture].check_fits
    if check is not None:
        check(config, scheme)


def _check_model_type(source: str, model_type: Any, trust_remote_code: bool) -> Architecture:
    arch = for_model_type(model_type)
    if arch is None or arch.load_pretrained is None:
        raise UsageError(
            f"model {source!r} has model_type {model_type!r}; supported: "
            f"{', '.join(map(repr, supported_model_types()))} (remote-code ones with --trust-remote-code)"
        )
    if arch.remote_code and not trust_remote_code:
        raise UsageError(
            f"model {source!r} is a {arch.title} checkpoint (model_type {model_type!r}) whose modelling code ships "
            "with the checkpoint; pass --trust-remote-code (trust_remote_code=True) to run that code"
        )
    return arch


def load(
    name: str,
    *,
    device: torch.device,
    dtype: torch.dtype,
    attn_implementation: str | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    profile: str | Scheme | None = None,
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
        arch = ARCHITECTURES[spec.architecture]
        chosen = chosen or get_profile(spec.profile)
        model = build_registered(spec, device=device, dtype=dtype, attn_implementation=attn_implementation, seed=seed)
        _check_fits(arch.name, model.config, chosen)
        return Loaded(name=name, model=model, architecture=arch.name, profile=chosen, inputs=arch.inputs(model, chosen),
                      source="registry")
    raw = _config_dict(name, revision)
    arch = _check_model_type(name, raw.get("model_type"), trust_remote_code)  # a hub config, read only now
    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    assert arch.load_pretrained is not None  # _check_model_type refused it otherwise
    loaded = arch.load_pretrained(name, revision=revision, device=device, dtype=dtype, model_kwargs=extra,
                                  scheme=chosen)
    return Loaded(name=name, model=loaded.model, architecture=arch.name, profile=loaded.scheme, inputs=loaded.inputs,
                  source="pretrained")


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
