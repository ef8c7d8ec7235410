"""The module map: which modules of a model are its vision encoder, projector, LLM blocks and LM head.

Known per architecture (each family module declares its own; `workers.registry`
collects them and detects which one fits a model) and overridable by dotted paths relative to the loaded model
(``model.vision_tower``). A stage may name several modules (comma-separated):
their spans add up. A path that does not resolve is an error that lists the
nearest module names that do exist.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from torch import nn

from tilesweep.errors import UsageError

# Stages a map names; llm_blocks and vision_blocks are module lists.
STAGE_KEYS = ("vision", "projector", "llm_blocks", "lm_head", "vision_blocks")


@dataclass(frozen=True, slots=True, kw_only=True)
class ModuleMap:
    """Dotted paths per stage; an empty tuple (or None) means the stage is not timed."""

    vision: tuple[str, ...]
    projector: tuple[str, ...] = ()
    llm_blocks: str
    lm_head: tuple[str, ...] = ()
    vision_blocks: str | None = None
    # The projector runs inside the vision module (Qwen's merger is part of its vision tower):
    # its time is taken out of the vision span, so the stages never count it twice.
    projector_within_vision: bool = False
    # Stages that must resolve for the map to describe a model (used for detection).
    required: tuple[str, ...] = ("vision", "llm_blocks")


@dataclass(slots=True)
class ResolvedModules:
    """The modules behind a map, ready for hooks; ``paths`` records what was used."""

    vision: list[nn.Module]
    projector: list[nn.Module]
    llm_blocks: list[nn.Module]
    lm_head: list[nn.Module]
    vision_blocks: list[nn.Module]
    paths: dict[str, str] = field(default_factory=dict)


def nearest_names(model: nn.Module, path: str, n: int = 5) -> list[str]:
    """Module names of `model` closest to `path`: close matches anywhere, then the names at
    the level where the path went wrong (the children of its deepest prefix that exists)."""
    names = [name for name, _ in model.named_modules() if name]
    parts = path.split(".")
    prefix = ""
    for i in range(len(parts) - 1, 0, -1):
        if ".".join(parts[:i]) in names:
            prefix = ".".join(parts[:i])
            break
    depth = prefix.count(".") + 1 if prefix else 0
    level = [m for m in names if m.count(".") == depth and (not prefix or m.startswith(prefix + "."))]
    near = difflib.get_close_matches(path, names, n=n, cutoff=0.6)
    near += [m for m in difflib.get_close_matches(path, level, n=n, cutoff=0.0) if m not in near]
    return near[:n]


def resolve(model: nn.Module, path: str, stage: str = "") -> nn.Module:
    """The submodule at dotted `path`.

    Raises:
        UsageError: the path does not resolve; the message lists the nearest names that exist.
    """
    try:
        return model.get_submodule(path)
    except AttributeError:
        near = nearest_names(model, path)
        where = f" (stage {stage!r})" if stage else ""
        hint = ", ".join(near) if near else "none"
        raise UsageError(
            f"module path {path!r}{where} does not resolve in {type(model).__name__}; nearest existing names: {hint}; "
            f"pass an existing dotted path, e.g. --module {stage or 'vision'}={near[0] if near else 'model.<name>'}"
        ) from None


def split_paths(value: str | tuple[str, ...] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(p.strip() for p in value.split(",") if p.strip())
    return tuple(value)


def apply_overrides(base: ModuleMap, overrides: Mapping[str, str] | None) -> ModuleMap:
    """`base` with stages replaced by dotted paths (``{"vision": "model.vit"}``).

    Raises:
        UsageError: an unknown stage name.
    """
    if not overrides:
        return base
    unknown = sorted(set(overrides) - set(STAGE_KEYS))
    if unknown:
        raise UsageError(f"unknown module-map stage(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(STAGE_KEYS)}")
    changes: dict[str, object] = {}
    for stage, value in overrides.items():
        paths = split_paths(value)
        if stage in ("llm_blocks", "vision_blocks"):
            if len(paths) > 1:
                raise UsageError(f"module-map stage {stage!r} takes one path to a module list, got {value!r}")
            changes[stage] = paths[0] if paths else None
        else:
            changes[stage] = paths
    return replace(base, **changes)


def _blocks(model: nn.Module, path: str, stage: str) -> list[nn.Module]:
    module = resolve(model, path, stage)
    if not isinstance(module, (nn.ModuleList, nn.Sequential)) or len(module) == 0:
        raise UsageError(
            f"module path {path!r} (stage {stage!r}) is a {type(module).__name__}, not a non-empty ModuleList of blocks; "
            "point it at the list of transformer blocks"
        )
    return list(module)


def resolve_map(model: nn.Module, module_map: ModuleMap) -> ResolvedModules:
    """Resolve every path of `module_map` on `model`.

    Raises:
        UsageError: a path that does not resolve, or a block path that is not a module list.
    """
    if not module_map.vision or not module_map.llm_blocks:
        raise UsageError("a module map needs at least the 'vision' and 'llm_blocks' stages")
    paths = {
        "vision": ",".join(module_map.vision),
        "projector": ",".join(module_map.projector),
        "llm_blocks": module_map.llm_blocks,
        "lm_head": ",".join(module_map.lm_head),
        "vision_blocks": module_map.vision_blocks or "",
    }
    return ResolvedModules(
        vision=[resolve(model, p, "vision") for p in module_map.vision],
        projector=[resolve(model, p, "projector") for p in module_map.projector],
        llm_blocks=_blocks(model, module_map.llm_blocks, "llm_blocks"),
        lm_head=[resolve(model, p, "lm_head") for p in module_map.lm_head],
        vision_blocks=_blocks(model, module_map.vision_blocks, "vision_blocks") if module_map.vision_blocks else [],
        paths=paths,
    )


def resolves(model: nn.Module, path: str) -> bool:
    try:
        model.get_submodule(path)
        return True
    except AttributeError:
        return False


def fit_map(model: nn.Module, module_map: ModuleMap) -> ModuleMap:
    """`module_map` with the optional stages that `model` lacks dropped."""
    changes: dict[str, object] = {}
    for stage in ("projector", "lm_head"):
        paths = getattr(module_map, stage)
        if stage not in module_map.required and paths and not all(resolves(model, p) for p in paths):
            changes[stage] = ()
    if module_map.vision_blocks and not resolves(model, module_map.vision_blocks):
        changes["vision_blocks"] = None
    return replace(module_map, **changes)
