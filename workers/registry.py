"""Every model family tilesweep knows: architectures, registered models and module maps, by name.

A family module (`workers.molmo`, `workers.qwen`, `workers.internvl`,
`workers.llava`) defines ``ARCHITECTURES`` and ``MODELS``; this module merges them,
and finds the architecture of a loaded model (`detect_architecture`) or of a
checkpoint's ``model_type`` (`for_model_type`).
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from tilesweep.errors import UsageError
from workers import cohere2, gemma3, idefics3, internvl, llama4, llava, mllama, molmo, phi4, pixtral, qwen
from workers.arch import Architecture, ModelSpec
from workers.modulemap import ModuleMap, ResolvedModules, apply_overrides, fit_map, resolve_map, resolves, split_paths

_FAMILIES = (molmo, qwen, internvl, llava, mllama, idefics3, pixtral, gemma3, phi4, llama4, cohere2)

ARCHITECTURES: dict[str, Architecture] = {name: a for f in _FAMILIES for name, a in f.ARCHITECTURES.items()}
MODELS: dict[str, ModelSpec] = {name: m for f in _FAMILIES for name, m in f.MODELS.items()}
ARCHITECTURE_MAPS: dict[str, ModuleMap] = {name: a.module_map for name, a in ARCHITECTURES.items()}
assert all(m.architecture in ARCHITECTURES for m in MODELS.values()), "a registered model names an unknown architecture"


def for_model_type(model_type: object) -> Architecture | None:
    """The architecture that loads checkpoints of this ``config.json`` ``model_type``, or None."""
    return next((a for a in ARCHITECTURES.values() if model_type in a.model_types), None)


def supported_model_types() -> list[str]:
    return [t for a in ARCHITECTURES.values() for t in a.model_types]


def detect_architecture(model: nn.Module) -> str:
    """The architecture whose known module map fits `model`: the one that loads its config's ``model_type``
    when its map fits (several maps can fit one model: Gemma 3 has every path of LLaVA-OneVision's), else
    the first map that fits.

    Raises:
        UsageError: no known map fits; the message names the missing paths per architecture.
    """
    own = for_model_type(getattr(getattr(model, "config", None), "model_type", None))
    if own is not None and all(resolves(model, p) for stage in own.module_map.required
                               for p in split_paths(getattr(own.module_map, stage))):
        return own.name
    missing: dict[str, list[str]] = {}
    for name, module_map in ARCHITECTURE_MAPS.items():
        wanted = [p for stage in module_map.required for p in split_paths(getattr(module_map, stage))]
        absent = [p for p in wanted if not resolves(model, p)]
        if not absent:
            return name
        missing[name] = absent
    detail = "; ".join(f"{name}: missing {', '.join(paths)}" for name, paths in missing.items())
    raise UsageError(
        f"cannot tell the module layout of {type(model).__name__} ({detail}); pass the stages by hand, e.g. "
        "--module vision=<path> --module llm_blocks=<path>"
    )


def module_map_for(
    model: nn.Module, architecture: str | None = None, overrides: Mapping[str, str] | None = None
) -> tuple[ModuleMap, ResolvedModules]:
    """The map for `model` (its architecture's, detected when None, then overridden), resolved.

    Raises:
        UsageError: an unknown architecture, none fits, or a path that does not resolve.
    """
    if architecture is None:
        architecture = detect_architecture(model)
    if architecture not in ARCHITECTURE_MAPS:
        raise UsageError(f"unknown model architecture {architecture!r}; known: {', '.join(ARCHITECTURE_MAPS)}")
    module_map = apply_overrides(fit_map(model, ARCHITECTURE_MAPS[architecture]), overrides)
    return module_map, resolve_map(model, module_map)
