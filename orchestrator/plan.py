"""Planning: a selection of targets and a scheme → the configurations to measure, longest first.

`select` is the one rule for which points (target, image size) a sweep (or
``tilesweep plan``) takes: the families' points, or explicit tilings plus the
targets giving each crop count or image-token count. `rows` adds what the
preprocessor will make of each (`PlanRow`: crops, tokens, encoder patches);
`plan` adds the config id and a cost (`PlannedConfig`).

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
from typing import Any, NamedTuple

from orchestrator.spec import SweepSpec, build_spec
from store.manifest import Manifest, PlannedEntry, plan_problems
from tilesweep.errors import SpecError, UsageError
from tilings import (
    Scheme,
    Tiling,
    crop_counts,
    enumerate_tilings,
    parse_families,
    scheme_from_dict,
    tilings_for_crops,
    tilings_for_tokens,
)
from tilings.overrides import configured, overrides_text, parse_overrides, point_geometry, processor_overrides

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
    encoder_patches: int = 0
    # Processor settings the target needs on top of the profile's (`tilings.overrides`), canonical JSON; None: none.
    processor_overrides: str | None = None

    def label(self) -> str:
        return f"{self.tiling.rows}x{self.tiling.cols}"

    def as_dict(self) -> dict[str, Any]:
        """The row as ``tilesweep plan`` prints it (CSV and JSON); ``processor_overrides`` only where it has some."""
        row = {"tiling": self.label(), "rows": self.tiling.rows, "cols": self.tiling.cols, "family": self.family,
               "height": self.height, "width": self.width, "crops": self.crops,
               "image_tokens": self.image_tokens, "sequence_tokens": self.sequence_tokens}
        if self.processor_overrides is not None:
            row["processor_overrides"] = self.processor_overrides
        return row


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


def profile_dict(profile: Scheme) -> dict[str, Any]:
    """The scheme's numbers, as the manifest keeps them and the config id hashes them."""
    return profile.to_dict()


def config_id(spec: SweepSpec, profile: Scheme, tiling: Tiling, height: int, width: int,
              processor_overrides: str | None = None) -> str:
    """16 hex digits of the SHA-256 of a canonical JSON of what defines the measurement.

    `processor_overrides` (`PlanRow.processor_overrides`) enter only when there are
    some, so the ids of schemes without overrides are what they were before overrides existed.
    """
    payload = {
        "v": CONFIG_ID_VERSION,
        **spec.measurement(),
        # The profile by its numbers, not only its name: a changed preset is a new config.
        "profile": profile_dict(profile),
        "tiling": [tiling.rows, tiling.cols],
        "height": height,
        "width": width,
    }
    overrides = parse_overrides(processor_overrides)
    if overrides:
        payload["processor_overrides"] = overrides
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Point(NamedTuple):
    """One thing to measure: a target of the scheme, the family that chose it, and the image size."""

    tiling: Tiling
    family: str
    height: int
    width: int


def select(profile: Scheme, families: Sequence[str], tilings: Iterable[tuple[int, int]] = (),
           crops: Iterable[int] = (), tokens: Iterable[int] = ()) -> list[Point]:
    """The points to measure, each (target, size) once, in selection order.

    Without `tilings`, `crops` and `tokens`: every point of the families (none
    named: the scheme's default families). Otherwise the explicit `tilings` (each at
    its exact resolution), plus for each crop count (or image-token count) the
    families' points that give it, or every target that gives it when the families
    have none (`fill` names ``all``, so it takes every target of a count). A target is labelled with the first named family
    that holds it, else the first of the scheme's families (``all`` only for a
    target no other family holds), so ``--family all`` rows keep their families.

    Raises:
        UsageError: an unknown family, an unreachable tiling, crop count or token count.
    """
    tilings, crops, tokens = list(tilings), list(crops), list(tokens)
    explicit = bool(tilings or crops or tokens)
    named = list(families) or list(profile.default_families)
    label = _labeller(profile, named)
    # `all` with counts means every target of each count, whether or not the scheme has an `all` family.
    every_target = explicit and "all" in named
    listed = [f for f in named if f != "all" or "all" in profile.families or not explicit]
    in_families = [p._replace(family=label(p.tiling)) for p in _family_points(profile, listed)]
    if not explicit:
        return in_families
    chosen: list[Point] = []
    for rows_, cols in tilings:
        chosen.append(_at_exact_size(profile, _checked(profile, Tiling(rows_, cols)), label))
    for flag, counts, match, every in (
            ("--crops", crops, lambda g, n: g.crops == n, tilings_for_crops),
            ("--tokens", tokens, lambda g, n: g.image_tokens == n, tilings_for_tokens)):
        for n in counts:
            try:
                all_of_n = every(n, profile)
            except UsageError as exc:
                raise UsageError(f"{flag}: {exc}") from None
            mine = [] if every_target else [p for p in in_families
                                            if match(point_geometry(profile, p.tiling, p.height, p.width), n)]
            chosen.extend(mine or [_at_exact_size(profile, t, label) for t in all_of_n])
    return list(dict.fromkeys(chosen))


def _labeller(profile: Scheme, named: Sequence[str]):
    """A target's family label: the first named family that holds it, else the scheme's first; ``all`` last."""
    order = [f for f in (*named, *profile.families) if f != "all" and f in profile.families] + ["all"]
    family_of: dict[Tiling, str] = {}
    for t, f in enumerate_tilings(profile, [f for f in dict.fromkeys(order) if f in profile.families]):
        family_of.setdefault(t, f)
    return lambda t: family_of.get(t, "")


def _family_points(profile: Scheme, families: Sequence[str]) -> list[Point]:
    out: dict[tuple[Tiling, int, int], Point] = {}
    for family in parse_families(families, profile) if families else []:
        for tiling, (height, width) in profile.points(family):
            out.setdefault((tiling, height, width), Point(tiling, family, height, width))
    return list(out.values())


def _checked(profile: Scheme, tiling: Tiling) -> Tiling:
    if profile.max_crops is not None and tiling.rows * tiling.cols > profile.max_crops:
        # Crops count the global view, as everywhere else (`--crops`, status, the report):
        # the views a grid adds beside its tiles are what the largest grid adds.
        most = crop_counts(profile)[-1]
        views = most - profile.max_crops
        tiles = tiling.rows * tiling.cols
        raise UsageError(
            f"tiling {tiling.rows}x{tiling.cols} has {tiles + views} crops ({tiles} tiles + {views} global view), "
            f"over the {most} that profile {profile.name!r} allows ({profile.max_crops} tiles + {views}); "
            f"pick tilings with rows*cols <= {profile.max_crops}")
    profile.resolution_for(tiling)  # raises the scheme's own one-line error for an unreachable target
    return tiling


def _at_exact_size(profile: Scheme, tiling: Tiling, label) -> Point:
    height, width = profile.resolution_for(tiling)
    return Point(tiling, label(tiling), height, width)


def select_points(spec: SweepSpec, profile: Scheme) -> list[Point]:
    """`select` with the spec's families, tilings, crops and tokens."""
    return select(profile, spec.families, spec.tilings, spec.crops, spec.tokens)


def rows(points: Iterable[Point], profile: Scheme) -> list[PlanRow]:
    """Each point with what the preprocessor, configured with its target's overrides, makes of it.

    Raises:
        UsageError: a point whose size does not give its target (a scheme bug; never written).
    """
    out = []
    for p in points:
        overrides = processor_overrides(profile, p.tiling)
        geo = configured(profile, overrides).geometry(p.height, p.width)
        if tuple(geo.tiling) != tuple(p.tiling):
            raise UsageError(f"profile {profile.name!r}: size {p.height}x{p.width} gives {geo.tiling}, not the planned "
                             f"{p.tiling}")
        out.append(PlanRow(tiling=Tiling(*p.tiling), family=p.family, height=p.height, width=p.width, crops=geo.crops,
                           image_tokens=geo.image_tokens, sequence_tokens=geo.sequence_tokens,
                           encoder_patches=geo.encoder_patches, processor_overrides=overrides_text(overrides)))
    return out


def cost(profile: Scheme, crops: int, sequence_tokens: int, decode_tokens: int = 0,
         encoder_patches: int | None = None) -> float:
    """Relative cost of one forward: the patches the vision encoder processes plus the LLM's tokens.

    A rough model on purpose: it only orders the queue so the longest configs
    start first and the sweep does not end waiting on one big straggler.
    Without `encoder_patches`, a Molmo profile's crops times patches per crop.
    """
    vision = encoder_patches if encoder_patches is not None else crops * profile.crop_patches ** 2
    llm = sequence_tokens * (1 + decode_tokens)
    return float(vision + llm)


def plan(spec: SweepSpec, profile: Scheme, points: Iterable[Point] | None = None) -> list[PlannedConfig]:
    """Every configuration of the spec (or of `points`), longest first by `cost`."""
    chosen = select_points(spec, profile) if points is None else list(points)
    configs = [
        PlannedConfig(**{f.name: getattr(r, f.name) for f in dataclasses.fields(PlanRow)},
                      config_id=config_id(spec, profile, r.tiling, r.height, r.width, r.processor_overrides),
                      cost=cost(profile, r.crops, r.sequence_tokens, spec.decode_tokens, r.encoder_patches))
        for r in rows(chosen, profile)
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
        profile = scheme_from_dict(manifest.profile)
        again: set[str] = set()
        for inv in manifest.invocations:
            again |= {c.config_id for c in plan(build_spec(None, inv.spec), profile)}
    except (TypeError, SpecError, UsageError) as exc:
        return [f"manifest.json: its specs cannot be planned again ({' '.join(str(exc).split())[:200]})"]
    return plan_problems(manifest, again)
