"""`tilesweep run`: plan, measure on Ray, write Parquet, print a summary per tiling.

With no arguments it runs the embedded default (the tiny Molmo2 on a local Ray
cluster, families 1xk, 2xk and kx1, warm-up 1, 3 repeats) into ``results/``
under a new run id. ``--run-id`` of an existing run resumes it: the run's own
spec is the base, flags given now are laid over it, and only configs without an
ok result are measured.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from orchestrator.spec import SpecError, SweepSpec, build_spec

HELP = "run a sweep on a Ray cluster (local by default)"

EXIT_INTERRUPTED = 130

# flag dest -> spec field
FLAG_FIELDS = {
    "model": "model", "profile": "profile", "family": "families", "tilings": "tilings", "crops": "crops",
    "warmup": "warmup", "repeats": "repeats", "dtype": "dtype", "decode_tokens": "decode_tokens",
    "workers": "workers", "gpus_per_worker": "gpus_per_worker", "results": "results", "run_id": "run_id",
    "address": "address", "max_attempts": "max_attempts", "config_timeout": "config_timeout_s",
    "trust_remote_code": "trust_remote_code",
}
SELECTION = ("families", "tilings", "crops")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `run` (`fill` shares them). Defaults live in the spec, so every flag defaults to None."""
    add = parser.add_argument
    add("--spec", metavar="FILE.yaml", help="a YAML sweep spec; flags given here override it")
    add("--model", help="registered model name, hub id or local path (default tiny-molmo2)")
    # store_const with a None default: absent means "as the spec file or the run says", never False.
    add("--trust-remote-code", action="store_const", const=True,
        help="allow a checkpoint's own Python code to run (Molmo v1 needs it); off unless given")
    add("--profile", help="tiling profile (default: the model's own)")
    add("--family", metavar="LIST", help="tiling families, comma list of 1xk,2xk,kx1,all (default 1xk,2xk,kx1)")
    add("--tilings", metavar="LIST", help="explicit tilings, e.g. 1x2,2x4 (replaces --family)")
    add("--crops", metavar="LIST", help="crop counts (global crop included), e.g. 3,6,9,12: the families' tilings "
        "giving them, or every tiling giving a count the families miss (as `tilesweep plan --crops`)")
    add("--warmup", metavar="N", help="untimed repeats per config (default 1)")
    add("--repeats", metavar="N", help="timed repeats per config (default 3)")
    add("--dtype", choices=("float32", "float16", "bfloat16"), help="model dtype (default: the host's for its device)")
    add("--decode-tokens", metavar="N", help="tokens decoded after the prefill (default 0)")
    add("--workers", metavar="N", help="host actors (default: one per GPU, or 2 CPU actors without GPUs)")
    add("--gpus-per-worker", metavar="G", help="GPUs per actor (default 1 with GPUs; 0 forces CPU actors)")
    add("--results", metavar="DIR", help="results directory (default results)")
    add("--run-id", metavar="ID", help="run id; an existing one is resumed (default: a new timestamped id)")
    add("--address", help="Ray cluster address (host:port, ray://host:port, auto); default: a local cluster")
    add("--max-attempts", metavar="N", help="dispatches of a config lost to dead/hung actors before it fails (default 3)")
    add("--config-timeout", metavar="SECONDS", help="kill an actor whose config runs longer (default 1800)")


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    return {field: getattr(args, dest, None) for dest, field in FLAG_FIELDS.items()
            if getattr(args, dest, None) is not None}


def resolve_spec(args: argparse.Namespace, *, fill: bool = False) -> SweepSpec:
    """Spec for `run` or `fill`: defaults ← --spec file ← flags; an existing run's spec is the base.

    Raises:
        SpecError: invalid values, or a resumed run whose measurement settings differ.
        UsageError: `fill` without a run to fill.
    """
    from orchestrator.errors import UsageError
    from orchestrator.store import RunStore, latest_run

    overrides = overrides_from_args(args)
    first = build_spec(args.spec, overrides)
    run_id = first.run_id
    if fill and run_id is None:
        run_id = latest_run(first.results)
        if run_id is None:
            raise UsageError(f"no run under {first.results!r} to fill; start one with `tilesweep run` "
                             "or name a new one with --run-id")
    if run_id is None:
        return first
    manifest = RunStore(first.results, run_id).read_manifest()
    if manifest is None:  # a new run under the given id
        return first if first.run_id == run_id else build_spec(args.spec, {**overrides, "run_id": run_id})
    # Resume/fill: the run's own spec is the base; flags and the spec file given now win.
    base = build_spec(None, _stored_spec(manifest), base=SweepSpec())
    given = {**_file_values(args.spec), **overrides}
    if any(k in given for k in SELECTION):
        base = _clear_selection(base)
    spec = build_spec(args.spec, {**overrides, "run_id": run_id}, base=base)
    _check_same_measurement(spec, manifest, run_id)
    return spec


def _stored_spec(manifest: dict[str, Any]) -> dict[str, Any]:
    stored = dict(manifest.get("spec") or {})
    # Where it ran last time is not part of the run: use this invocation's defaults.
    for key in ("address", "workers", "gpus_per_worker", "run_id", "results"):
        stored.pop(key, None)
    return stored


def _file_values(path: str | None) -> dict[str, Any]:
    if path is None:
        return {}
    from orchestrator.spec import read_spec_file

    return read_spec_file(path)


def _clear_selection(spec: SweepSpec) -> SweepSpec:
    import dataclasses

    return dataclasses.replace(spec, families=(), tilings=(), crops=())


def _check_same_measurement(spec: SweepSpec, manifest: dict[str, Any], run_id: str) -> None:
    stored = manifest.get("measurement") or {}
    problems = []
    for key, value in spec.measurement().items():
        if key == "profile" and value is None:
            continue  # the model's own profile; compared by its numbers when resolved
        if key in stored and stored[key] != value and not (key == "profile" and stored[key] is None):
            problems.append(f"run {run_id!r} was measured with {key}={stored[key]!r}, not {value!r}; "
                            f"drop --{key.replace('_', '-')} to resume it, or pass a new --run-id")
    if problems:
        raise SpecError(problems)


def main(args: argparse.Namespace) -> int:
    try:
        spec = resolve_spec(args)
    except SpecError as exc:
        return report_spec_error("run", exc)
    from orchestrator.sweep import execute

    return execute(spec, command="run")


def report_spec_error(command: str, exc: SpecError) -> int:
    for problem in exc.problems:
        sys.stderr.write(f"tilesweep {command}: error: {problem}\n")
    return 2
