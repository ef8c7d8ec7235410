"""One sweep end to end: connect, plan, subtract what is done, drive, record the manifest.

`sweep` is the programmatic entry (benchmarks pass their own host class); the
`run` and `fill` subcommands call `execute`, which adds the summary table and the
exit codes: 0 done (failed configs are rows, not errors), 1 no host could start,
2 bad input (nothing written), 130 interrupted (resume with the printed command).
"""

from __future__ import annotations

import dataclasses
import getpass
import logging
import os
import platform
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from tilings import Profile, get_profile

from orchestrator.plan import PlannedConfig, pending, plan, profile_dict
from orchestrator.progress import Progress, make_progress
from orchestrator.spec import SpecError, SweepSpec
from orchestrator.store import RunStore, new_run_id

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class SweepResult:
    run_id: str
    run_dir: Path
    planned: list[PlannedConfig]
    measured: list[PlannedConfig]  # the configs handed to the driver this time
    outcome: Any = None  # driver.SweepOutcome, None when nothing was pending


def sweep(spec: SweepSpec, *, command: str = "run", host_cls: type | None = None,
          host_kwargs: Mapping[str, Any] | None = None, actor_env: Mapping[str, str] | None = None,
          progress: Progress | None = None) -> SweepResult:
    """Measure every config of `spec` that its run does not hold ok yet.

    Raises:
        UsageError: a model that cannot load, an unreachable Ray address, a results
            directory that cannot be written, a spec that does not fit the run or
            the profile (all raised before Ray starts or anything is written).
        driver.SweepError: no host actor could start, or a part could not be written.
    """
    import ray

    from orchestrator import preflight
    from orchestrator.cluster import cluster_gpus, connect, resolve_address, worker_plan
    from orchestrator.driver import Driver

    spec = dataclasses.replace(spec, run_id=spec.run_id or new_run_id())
    preflight.check(spec, default_host=host_cls is None)
    store = RunStore(spec.results, spec.run_id)
    manifest = store.read_manifest()
    # Plan before touching Ray when the profile is known: bad input fails fast, and a
    # run with nothing left to measure needs no cluster at all.
    profile = known_profile(spec, manifest, default_host=host_cls is None)
    configs: list[PlannedConfig] = []
    todo: list[PlannedConfig] = []
    if profile is not None:
        configs, todo = _plan(spec, store, manifest, profile)
    outcome = None
    hosts: dict[str, Any] = {}
    if profile is None or todo:
        started_ray = connect(spec.address, num_cpus=spec.workers)
        try:
            remote = started_ray and resolve_address(spec.address) is not None
            driver = Driver(spec, store, worker_plan(spec, cluster_gpus(), remote=remote), host_cls=host_cls,
                            host_kwargs=host_kwargs, actor_env=actor_env, progress=progress)
            try:
                if profile is None:
                    profile = driver.host_profile()
                    configs, todo = _plan(spec, store, manifest, profile)
                manifest = _begin(store, manifest, spec, profile, configs, command)
                if todo:
                    log.info("run %s: %d of %d config(s) to measure", spec.run_id, len(todo), len(configs))
                    outcome = driver.run(todo, profile, done=len(configs) - len(todo))
            finally:
                driver.shutdown()
                hosts = driver.hosts
        finally:
            if started_ray:
                ray.shutdown()
    else:
        manifest = _begin(store, manifest, spec, profile, configs, command)
    if not todo:
        log.info("run %s: all %d config(s) already done", spec.run_id, len(configs))
    _end(store, manifest, outcome, hosts)
    return SweepResult(run_id=spec.run_id, run_dir=store.dir, planned=configs, measured=todo, outcome=outcome)


def execute(spec: SweepSpec, *, command: str = "run", stdout: IO[str] | None = None, **kwargs: Any) -> int:
    """`sweep`, then the summary table on stdout; returns the exit code."""
    from orchestrator.driver import SweepError

    stdout = stdout or sys.stdout
    kwargs.setdefault("progress", make_progress())
    try:
        result = sweep(spec, command=command, **kwargs)
    except SweepError as exc:
        sys.stderr.write(f"tilesweep {command}: {exc}\n")
        return 1
    stdout.write(summary_text(result.run_dir) + "\n")
    stdout.flush()
    outcome = result.outcome
    if outcome is not None and outcome.interrupted:
        sys.stderr.write(f"tilesweep {command}: interrupted; {outcome.remaining} config(s) not measured. "
                         f"Resume with:\n  {resume_command(spec, command, result.run_id)}\n")
        return 130
    if outcome is not None and outcome.failed:
        sys.stderr.write(f"tilesweep {command}: {outcome.failed} config(s) failed; see `tilesweep status "
                         f"--run-id {result.run_id} --results {spec.results}`\n")
    return 0


def resume_command(spec: SweepSpec, command: str, run_id: str) -> str:
    """The command line that finishes an interrupted `run` or `fill` (the run keeps its own settings)."""
    line = f"tilesweep {command} --run-id {run_id} --results {spec.results}"
    if command == "fill":  # fill's selection is not the run's spec: repeat it
        for flag, values in (("--crops", spec.crops), ("--family", spec.families),
                             ("--tilings", [f"{r}x{c}" for r, c in spec.tilings])):
            if values:
                line += f" {flag} {','.join(map(str, values))}"
    return line


def _plan(spec: SweepSpec, store: RunStore, manifest: Mapping[str, Any] | None,
          profile: Profile) -> tuple[list[PlannedConfig], list[PlannedConfig]]:
    """(every config of the spec, those without an ok result in the run)."""
    _check_profile(spec.run_id, manifest, profile)
    configs = plan(spec, profile)
    # Only the driver renames or deletes: what a killed driver left, and damaged parts
    # (moved aside, so their configs count as missing and are measured again).
    store.remove_temporaries()
    store.quarantine_unreadable()
    return configs, pending(configs, store.done())


def known_profile(spec: SweepSpec, manifest: Mapping[str, Any] | None, *, default_host: bool) -> Profile | None:
    """The tiling profile without starting a host: the spec's, the run's, or the registered model's."""
    if spec.profile is not None:
        return get_profile(spec.profile)
    if manifest and manifest.get("profile"):
        return Profile(**manifest["profile"])
    if default_host:
        from workers.models import MODELS

        if spec.model in MODELS:
            return get_profile(MODELS[spec.model].profile)
    return None  # a hub model: its processor config decides; ask the host


def _check_profile(run_id: str, manifest: Mapping[str, Any] | None, profile: Profile) -> None:
    stored = (manifest or {}).get("profile")
    if stored and stored != profile_dict(profile):
        raise SpecError([f"run {run_id!r} was measured with profile {stored.get('name')!r} "
                         f"({stored}), not {profile.name!r}; use its profile or a new --run-id"])


def environment() -> dict[str, Any]:
    """Where and with what the driver ran (the hosts describe themselves separately)."""
    from importlib.metadata import PackageNotFoundError, version

    def ver(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = None
    return {
        "python": platform.python_version(), "platform": platform.platform(),
        "hostname": socket.gethostname(), "user": user, "pid": os.getpid(), "argv": sys.argv,
        "tilesweep": ver("tilesweep"), "ray": ver("ray"), "pyarrow": ver("pyarrow"), "polars": ver("polars"),
        "time": _now(),
    }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _begin(store: RunStore, manifest: dict[str, Any] | None, spec: SweepSpec, profile: Profile,
           configs: list[PlannedConfig], command: str) -> dict[str, Any]:
    """Create or extend the manifest before any part of this invocation is written."""
    if manifest is None:
        manifest = {"run_id": spec.run_id, "created_at": _now(), "measurement": spec.measurement(),
                    "profile": profile_dict(profile), "planned": {}, "hosts": {}, "invocations": []}
        log.info("new run %s in %s", spec.run_id, store.dir)
    if command == "run" or "spec" not in manifest:
        # The spec a plain `run --run-id` resumes; a `fill` is recorded in its invocation only.
        manifest["spec"] = spec.to_dict()
    manifest["environment"] = environment()
    manifest["planned"] = {**manifest.get("planned", {}), **{c.config_id: c.to_dict() for c in configs}}
    manifest["invocations"] = [*manifest.get("invocations", []),
                               {"command": command, "started_at": _now(), "spec": spec.to_dict()}]
    manifest["updated_at"] = _now()
    store.write_manifest(manifest)
    return manifest


def _end(store: RunStore, manifest: dict[str, Any], outcome: Any, hosts: Mapping[str, Any]) -> None:
    outcomes = store.outcomes()
    planned = manifest["planned"]
    ok = sum(1 for cid in planned if cid in outcomes and outcomes[cid].status == "ok")
    failed = sum(1 for cid in planned if cid in outcomes and outcomes[cid].status != "ok")
    manifest["counts"] = {"planned": len(planned), "ok": ok, "failed": failed, "missing": len(planned) - ok - failed}
    manifest["hosts"] = {**manifest.get("hosts", {}), **hosts}
    last = manifest["invocations"][-1]
    last["finished_at"] = _now()
    if outcome is not None:
        last.update(measured=outcome.measured, ok=outcome.ok, failed=outcome.failed, retries=outcome.retries,
                    interrupted=outcome.interrupted, remaining=outcome.remaining,
                    elapsed_s=round(outcome.elapsed_s, 3))
    manifest["updated_at"] = _now()
    store.write_manifest(manifest)


# (header, summary column, format) of the table `run` ends with.
_SUMMARY_COLUMNS = (
    ("tiling", None, "{}"), ("family", "family", "{}"), ("crops", "crops", "{}"),
    ("img_tok", "image_tokens", "{}"), ("seq_tok", "sequence_tokens", "{}"), ("n", "n", "{}"),
    ("vision_ms", "vision_median_ms", "{:.2f}"), ("proj_ms", "projector_median_ms", "{:.2f}"),
    ("llm_ms", "llm_prefill_median_ms", "{:.2f}"), ("total_ms", "total_median_ms", "{:.2f}"),
    ("llm_sub_ms", "llm_sub_median_ms", "{:.2f}"), ("status", "status", "{}"),
)


def summary_text(run_dir: str | Path) -> str:
    """Per tiling: crops, tokens and median stage times, hook method then subtraction (ms)."""
    from orchestrator.query import scan, summary

    frame = summary(scan(run_dir)).collect()
    title = f"run {Path(run_dir).name}: {frame.height} config(s), median times in ms " \
            "(hook method; llm_sub_ms by subtraction)"
    rows = [[h for h, _, _ in _SUMMARY_COLUMNS]]
    for row in frame.iter_rows(named=True):
        cells = []
        for header, column, fmt in _SUMMARY_COLUMNS:
            value = f"{row['tiling_rows']}x{row['tiling_cols']}" if column is None else row[column]
            cells.append("-" if value is None else fmt.format(value))
        rows.append(cells)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(r, widths)) for r in rows]
    return "\n".join([title, *lines])
