"""Planning: a spec and a tiling profile → the configurations to measure, longest first.

A configuration is one tiling at its exact resolution, measured with the spec's
settings. Its `config_id` hashes everything that defines the measurement and
nothing that does not (not the run id, the attempt, the worker or the results
path), so the same measurement has the same id in every run and resuming is a
set difference on ids.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from tilings import FAMILIES, Profile, Tiling, enumerate_tilings, resolution_for, tiling_geometry, tilings_for_crops

from orchestrator.errors import UsageError
from orchestrator.spec import SweepSpec

# Bumped when the meaning of a config changes, so old ids never match new configs.
CONFIG_ID_VERSION = 1


@dataclass(kw_only=True, frozen=True, slots=True)
class PlannedConfig:
    """One configuration of a sweep, with the geometry `tilings` predicts for it."""

    config_id: str
    tiling: Tiling
    family: str
    height: int
    width: int
    crops: int
    image_tokens: int
    sequence_tokens: int
    cost: float  # relative work estimate; only its order matters

    def label(self) -> str:
        return f"{self.tiling.rows}x{self.tiling.cols}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form kept in the run's manifest (what `status` counts as planned)."""
        return {
            "config_id": self.config_id, "tiling": self.label(), "family": self.family,
            "height": self.height, "width": self.width, "crops": self.crops,
            "image_tokens": self.image_tokens, "sequence_tokens": self.sequence_tokens,
        }


def profile_dict(profile: Profile) -> dict[str, Any]:
    d = dataclasses.asdict(profile)
    d["overlap_margins"] = list(profile.overlap_margins)
    d["pooling"] = list(profile.pooling)
    return d


def config_id(spec: SweepSpec, profile: Profile, tiling: Tiling, height: int, width: int) -> str:
    """16 hex digits of the SHA-256 of a canonical JSON of what defines the measurement."""
    payload = {
        "v": CONFIG_ID_VERSION,
        **spec.measurement(),
        # The profile by its numbers, not only its name: a changed preset is a new config.
        "profile": profile_dict(profile),
        "tiling": [tiling.rows, tiling.cols],
        "height": height,
        "width": width,
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def select_tilings(spec: SweepSpec, profile: Profile) -> list[tuple[Tiling, str]]:
    """(tiling, family) pairs the spec asks for, each tiling once.

    Without `tilings` and `crops`: every tiling of the families. Otherwise the
    explicit `tilings`, plus for each crop count the families' tilings that give
    it, or every tiling that gives it when the families have none (or no family
    is named, as in `fill`) - the same rule as ``tilesweep plan --crops``. A tiling
    keeps the first family that holds it, so it carries the same label however it
    was selected.

    Raises:
        UsageError: a tiling over the profile's crop limit or an unreachable crop count.
    """
    family_of = {t: f for t, f in enumerate_tilings(profile, FAMILIES)}
    if spec.tiling_source() == "families":
        return enumerate_tilings(profile, spec.families)
    chosen: list[Tiling] = []
    for rows, cols in spec.tilings:
        if rows * cols > profile.max_crops:
            raise UsageError(
                f"tiling {rows}x{cols} has {rows * cols} crops, over the max_crops {profile.max_crops} of "
                f"profile {profile.name!r}; pick tilings with rows*cols <= {profile.max_crops}")
        chosen.append(Tiling(rows, cols))
    in_families = [t for t, _ in enumerate_tilings(profile, spec.families)] if spec.families else []
    for n in spec.crops:
        try:
            every = tilings_for_crops(n, profile)
        except ValueError as exc:
            raise UsageError(f"--crops: {exc}") from None
        chosen.extend([t for t in in_families if t.rows * t.cols + 1 == n] or every)
    unique = list(dict.fromkeys(chosen))
    return [(t, family_of[t]) for t in unique]


def cost(profile: Profile, crops: int, sequence_tokens: int, decode_tokens: int = 0) -> float:
    """Relative cost of one forward: ViT patches over all crops plus the LLM's tokens.

    A rough model on purpose: it only orders the queue so the longest configs
    start first and the sweep does not end waiting on one big straggler.
    """
    vision = crops * profile.crop_patches ** 2
    llm = sequence_tokens * (1 + decode_tokens)
    return float(vision + llm)


def plan(spec: SweepSpec, profile: Profile,
         tilings: Iterable[tuple[Tiling, str]] | None = None) -> list[PlannedConfig]:
    """Every configuration of the spec (or of `tilings`), longest first by `cost`."""
    pairs = select_tilings(spec, profile) if tilings is None else list(tilings)
    configs = []
    for tiling, family in pairs:
        height, width = resolution_for(tiling, profile)
        geo = tiling_geometry(tiling, profile)
        configs.append(PlannedConfig(
            config_id=config_id(spec, profile, tiling, height, width),
            tiling=Tiling(*tiling), family=family, height=height, width=width,
            crops=geo.crops, image_tokens=geo.image_tokens, sequence_tokens=geo.sequence_tokens,
            cost=cost(profile, geo.crops, geo.sequence_tokens, spec.decode_tokens),
        ))
    return order(configs)


def order(configs: Iterable[PlannedConfig]) -> list[PlannedConfig]:
    """Longest first; ties broken by tiling, so the order is reproducible."""
    return sorted(configs, key=lambda c: (-c.cost, c.tiling, c.config_id))


def pending(configs: Sequence[PlannedConfig], done: Collection[str]) -> list[PlannedConfig]:
    """The configs without an ok result (`done`: config ids), order kept."""
    return [c for c in configs if c.config_id not in done]
