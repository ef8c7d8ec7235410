"""How tilesweep runs one model family: an `Architecture` and the `ModelSpec`s registered for it.

A family is one module (`workers.molmo`, `workers.qwen`, ...) that defines its
`Architecture` (the transformers class, its module map, how inputs are built and
how a checkpoint is loaded) and its registered models (a tiny random-weight model
for the CPU, full-size random-weight architectures for GPUs). `workers.registry`
collects them; nothing else in `workers` knows a family by name, so adding one is
a new module and one line in the registry, not ``if family == ...`` branches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from workers.modulemap import ModuleMap

if TYPE_CHECKING:  # for annotations only: these need torch
    from torch import nn

    from tilings import Scheme
    from workers.inputs import InputBuilder


@dataclass(frozen=True, slots=True, kw_only=True)
class Pretrained:
    """A checkpoint loaded from a hub id or a local path, ready to measure."""

    model: Any  # nn.Module in eval mode, on its device
    scheme: Any  # tilings.Scheme the checkpoint's processor follows
    inputs: Any  # workers.inputs.InputBuilder


@dataclass(frozen=True, slots=True, kw_only=True)
class Architecture:
    """One transformers model class as tilesweep measures it.

    Attributes:
        name: the architecture's name (records carry it; ``--module`` maps override it).
        title: how people call it, for messages ("Molmo v1", "Qwen2.5-VL").
        model_class: the transformers class the registered models are built with.
        model_types: ``config.json`` ``model_type`` values whose checkpoints this loads.
        module_map: which modules are the vision encoder, projector, LLM blocks and head.
        default_profile: the `tilings` scheme its registered models use.
        inputs: ``inputs(model, scheme)`` -> the input builder for a model built from a
            config (no tokenizer: the image processor plus the family's own token layout).
        check_fits: ``check_fits(config, scheme)`` raises `UsageError` when the scheme
            cannot feed the model (e.g. a crop size its vision tower does not take).
        load_pretrained: ``load_pretrained(source, revision=, device=, dtype=, model_kwargs=,
            scheme=)`` -> `Pretrained`, for hub ids and local paths (None: not loadable).
        remote_code: its checkpoints ship their own modelling code (needs ``trust_remote_code``).
    """

    name: str
    title: str
    model_class: str
    model_types: tuple[str, ...]
    module_map: ModuleMap
    default_profile: str
    inputs: Callable[[nn.Module, Scheme], InputBuilder]
    check_fits: Callable[[Any, Scheme], None] | None = None
    load_pretrained: Callable[..., Pretrained] | None = None
    remote_code: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSpec:
    """A registered model: a config builder, its architecture and tiling profile, and how its weights are made."""

    name: str
    description: str
    architecture: str  # a key of workers.registry.ARCHITECTURES
    profile: str  # a tilings profile (scheme) name
    config: Callable[[], Any]
    # "seeded-init": the library's own initialisation under a fixed seed (small models);
    # "meta": build on the meta device, then materialise with a cheap fill (no slow init).
    weights: str = "seeded-init"
