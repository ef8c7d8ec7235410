"""The spec a `run` or `fill` measures, given what the command line says and what the run already holds.

A new run takes the embedded defaults, then the ``--spec`` file, then the flags.
Naming an existing run (``--run-id``, or for `fill` the latest run by default)
resumes it: the run's own spec is the base, what is given now is laid over it, and
the settings that define its configs must not change (`SweepSpec.measurement`).
`fill` measures only the selection it is given (crop counts, tilings, families),
never the run's own families, and only into a run that exists: it never starts one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orchestrator.spec import SELECTION, SweepSpec, build_spec, flag_of, read_spec_file
from store.manifest import Manifest
from store.runs import RunStore, latest_run, list_runs
from tilesweep.errors import SpecError, UsageError
from workers.config import ADAPTIVE

# Where a run ran last time is not part of the run: a resume uses this invocation's.
_NOT_RESUMED = ("address", "workers", "gpus_per_worker", "share_gpus", "run_id", "results")


def resolve(spec_file: str | Path | None, given: Mapping[str, Any], *, fill: bool = False) -> SweepSpec:
    """The spec for `run` (or `fill`): defaults ← `spec_file` ← `given`; an existing run's spec is the base.

    Raises:
        SpecError: invalid values, or a resumed run whose measurement settings differ.
        UsageError: `fill` without a run to fill, or naming a run that does not exist.
    """
    first = build_spec(spec_file, given)
    run_id = first.run_id
    if fill and run_id is None:
        run_id = latest_run(first.results)
        if run_id is None:
            raise UsageError(f"no run under {first.results!r} to fill; start one with `tilesweep run`, "
                             "or pass the --results DIR that holds it")
    if run_id is None:
        return first
    manifest = RunStore(first.results, run_id).read_manifest()
    if manifest is None and fill:  # fill adds to a run; it never starts one
        known = ", ".join(r for _, r in list_runs(first.results))
        fix = (f"runs there: {known}; pass one of them to --run-id, or leave --run-id out for the latest" if known
               else "it holds no run; start one with `tilesweep run`, or pass the --results DIR that holds it")
        raise UsageError(f"no run {run_id!r} under {first.results!r} to fill (fill adds to a run, it never starts "
                         f"one); {fix}")
    if manifest is None:  # a new run under the given id
        return first if first.run_id == run_id else build_spec(spec_file, {**given, "run_id": run_id})
    # Resume/fill: the run's own spec is the base; flags and the spec file given now win.
    stored = {k: v for k, v in manifest.spec.items() if k not in _NOT_RESUMED}
    base = build_spec(None, stored, base=SweepSpec())
    now = {**(read_spec_file(spec_file) if spec_file is not None else {}), **given}
    if any(k in now for k in SELECTION):
        base = dataclasses.replace(base, families=(), tilings=(), crops=(), tokens=())
    spec = build_spec(spec_file, {**given, "run_id": run_id}, base=base)
    _check_same_measurement(spec, manifest, run_id)
    return spec


def fill_spec(spec_file: str | Path | None, given: Mapping[str, Any]) -> SweepSpec:
    """The run's spec (the latest run by default) with only what `given` names as the selection.

    Raises:
        UsageError: nothing to fill named, or no such run to fill.
        SpecError: bad values, or settings that differ from the run's.
    """
    if all(given.get(k) is None for k in ("crops", "tilings", "tokens")):
        raise UsageError("fill needs --crops, the crop counts to fill (global crop included), e.g. --crops 3,6,9,12 "
                         "(or --tokens 256,1024 for a pixel-budget profile, or --tilings 1x2,2x4)")
    spec = resolve(spec_file, given, fill=True)
    # Only what is named here decides what fill plans, never the run's own families:
    # every target of each crop or token count (family `all`), or the named families' ones.
    return dataclasses.replace(spec, families=spec.families if given.get("families") is not None else ("all",),
                               tilings=spec.tilings if given.get("tilings") is not None else (),
                               crops=spec.crops if given.get("crops") is not None else (),
                               tokens=spec.tokens if given.get("tokens") is not None else ())


def resume_command(spec: SweepSpec, command: str, run_id: str) -> str:
    """The command line that finishes an interrupted `run` or `fill` (the run keeps its own settings)."""
    line = f"tilesweep {command} --run-id {run_id} --results {spec.results}"
    if command == "fill":  # fill's selection is not the run's spec: repeat it
        for flag, values in (("--crops", spec.crops), ("--tokens", spec.tokens), ("--family", spec.families),
                             ("--tilings", [f"{r}x{c}" for r, c in spec.tilings])):
            if values:
                line += f" {flag} {','.join(map(str, values))}"
    return line


def _check_same_measurement(spec: SweepSpec, manifest: Manifest, run_id: str) -> None:
    stored = manifest.measurement
    problems = []
    for key, value in spec.measurement().items():
        if key == "profile" and value is None:
            continue  # the model's own profile; compared by its numbers when resolved
        # The adaptive rule absent from the manifest was off (or did not exist yet) when the run was measured.
        if (key in stored or key == ADAPTIVE[0]) and stored.get(key) != value and not (
                key == "profile" and stored[key] is None):
            problems.append(f"run {run_id!r} was measured with {key}={stored.get(key)!r}, not {value!r}; "
                            f"drop {flag_of(key)} to resume it, or pass a new --run-id")
    if problems:
        raise SpecError(problems)
