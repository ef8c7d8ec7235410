"""Planning: a selection of tilings and a tiling profile → the configurations to measure, longest first.

`select` is the one rule for which tilings a sweep (or ``tilesweep plan``) takes:
the families' tilings, or explicit tilings plus the tilings giving each crop count.
`rows` adds what the preprocessor will make of each (`PlanRow`: exact resolution,
crops, tokens); `plan` adds the config id and a cost (`PlannedConfig`).

A config's `config_id` hashes everything that defines the measurement and nothing
that does not (not the run id, the attempt, the worker or the results path), so the
same measurement has the same id in every run and resuming is a set difference on ids.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.spec import SweepSpec, build_spec
from store.manifest import Manifest, PlannedEntry, plan_problems
from tilesweep.errors import SpecError, UsageError
from tilings import FAMILIES, Profile, Tiling, enumerate_tilings, resolution_for, tiling_geometry, tilings_for_crops

# Bumped when the meaning of a config changes, so old ids never match new configs.
CONFIG_ID_VERSION = 1


@dataclass(kw_only=True, frozen=True, slots=True)
class PlanRow:
    """One tiling of a plan with what the preprocessor will make of it."""

    tiling: Tiling
    family: str
    height: int
    width: int
    crops: int
    image_tokens: int
    sequence_tokens: int

    def label(self) -> str:
        return f"{self.tiling.rows}x{self.tiling.cols}"

    def as_dict(self) -> dict[str, Any]:
        """The row as ``tilesweep plan`` prints it (CSV and JSON)."""
        return {"tiling": self.label(), "rows": self.tiling.rows, "cols": self.tiling.cols, "family": self.family,
                "height": self.height, "width": self.width, "crops": self.crops,
                "image_tokens": self.image_tokens, "sequence_tokens": self.sequence_tokens}


@dataclass(kw_only=True, frozen=True, slots=True)
class PlannedConfig(PlanRow):
    """A `PlanRow` measured with a spec's settings: its config id and a relative cost."""

    config_id: str
    cost: float  # relative work estimate; only its order matters

    def entry(self) -> PlannedEntry:
        """What the run's manifest keeps of it (what `status` and the invariant count as planned)."""
        return PlannedEntry(config_id=self.config_id, tiling=self.label(), family=self.family, height=self.height,
                            width=self.width, crops=self.crops, image_tokens=self.image_tokens,
                            sequence_tokens=self.sequence_tokens)

    def to_dict(self) -> dict[str, Any]:
        return self.entry().to_json()


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


def select(profile: Profile, families: Sequence[str], tilings: Iterable[tuple[int, int]] = (),
           crops: Iterable[int] = ()) -> list[tuple[Tiling, str]]:
    """(tiling, family) pairs to measure, each tiling once, in selection order.

    Without `tilings` and `crops`: every tiling of the families. Otherwise the
    explicit `tilings`, plus for each crop count the families' tilings that give
    it, or every tiling that gives it when the families have none (or no family
    is named, as in `fill`). A tiling is labelled with the first of `families`
    that holds it, else the first of all families (`tilings.FAMILIES`).

    Raises:
        UsageError: a tiling over the profile's crop limit or an unreachable crop count.
    """
    tilings, crops = list(tilings), list(crops)
    in_families = enumerate_tilings(profile, families) if families else []
    if not tilings and not crops:
        return in_families
    family_of = dict(in_families)
    for t, f in enumerate_tilings(profile, FAMILIES):
        family_of.setdefault(t, f)
    chosen: list[Tiling] = []
    for rows, cols in tilings:
        if rows * cols > profile.max_crops:
            raise UsageError(
                f"tiling {rows}x{cols} has {rows * cols} crops, over the max_crops {profile.max_crops} of "
                f"profile {profile.name!r}; pick tilings with rows*cols <= {profile.max_crops}")
        chosen.append(Tiling(rows, cols))
    for n in crops:
        try:
            every = tilings_for_crops(n, profile)
        except ValueError as exc:
            raise UsageError(f"--crops: {exc}") from None
        chosen.extend([t for t, _ in in_families if t.crops == n] or every)
    return [(t, family_of[t]) for t in dict.fromkeys(chosen)]


def select_tilings(spec: SweepSpec, profile: Profile) -> list[tuple[Tiling, str]]:
    """`select` with the spec's families, tilings and crops."""
    return select(profile, spec.families, spec.tilings, spec.crops)


def rows(pairs: Iterable[tuple[Tiling, str]], profile: Profile) -> list[PlanRow]:
    """Each (tiling, family) with its exact resolution and what the preprocessor makes of it."""
    out = []
    for tiling, family in pairs:
        height, width = resolution_for(tiling, profile)
        geo = tiling_geometry(tiling, profile)
        out.append(PlanRow(tiling=Tiling(*tiling), family=family, height=height, width=width, crops=geo.crops,
                           image_tokens=geo.image_tokens, sequence_tokens=geo.sequence_tokens))
    return out


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
    configs = [
        PlannedConfig(**{f.name: getattr(r, f.name) for f in dataclasses.fields(PlanRow)},
                      config_id=config_id(spec, profile, r.tiling, r.height, r.width),
                      cost=cost(profile, r.crops, r.sequence_tokens, spec.decode_tokens))
        for r in rows(pairs, profile)
    ]
    return order(configs)


def order(configs: Iterable[PlannedConfig]) -> list[PlannedConfig]:
    """Longest first; ties broken by tiling, so the order is reproducible."""
    return sorted(configs, key=lambda c: (-c.cost, c.tiling, c.config_id))


def pending(configs: Sequence[PlannedConfig], done: Collection[str]) -> list[PlannedConfig]:
    """The configs without an ok result (`done`: config ids), order kept."""
    return [c for c in configs if c.config_id not in done]


def replan_problems(manifest: Manifest) -> list[str]:
    """Whether the manifest's planned configs are what its invocations' specs plan today (one line each).

    The store's invariant checks the manifest against itself and the parts; this
    adds the planner's view: a changed planner or a hand-edited spec shows here.
    """
    if not manifest.invocations or not manifest.profile:
        return []  # an older or hand-made manifest: its `planned` is all there is
    try:
        profile = Profile(**manifest.profile)
        again: set[str] = set()
        for inv in manifest.invocations:
            again |= {c.config_id for c in plan(build_spec(None, inv.spec), profile)}
    except (TypeError, SpecError, UsageError) as exc:
        return [f"manifest.json: its specs cannot be planned again ({' '.join(str(exc).split())[:200]})"]
    return plan_problems(manifest, again)
