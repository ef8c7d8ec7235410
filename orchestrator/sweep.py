"""One sweep end to end: connect, plan, subtract what is done, drive, record the manifest.

`sweep` is the programmatic entry (benchmarks pass their own host class); the
`run` and `fill` subcommands call it and add the summary table and the exit codes
(`orchestrator.commands.run`).
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
from typing import Any

from orchestrator import preflight, signals
from orchestrator.cluster import cluster_gpus, connect, resolve_address, worker_plan
from orchestrator.plan import PlannedConfig, pending, plan, profile_dict
from orchestrator.progress import Progress
from orchestrator.spec import SweepSpec
from store.lock import RunLock
from store.manifest import Counts, Invocation, Manifest
from store.runs import RunStore, new_run_id
from tilesweep.errors import SpecError
from tilings import Scheme, get_profile, scheme_from_dict

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
        SweepError: no host actor could start, or a part could not be written.
        RunLocked: another driver is writing the run (one line naming it; before Ray starts).
    """
    spec = dataclasses.replace(spec, run_id=spec.run_id or new_run_id())
    with signals.stopping_on_signals():  # SIGTERM and SIGHUP stop it as Ctrl-C does
        preflight.check(spec, default_host=host_cls is None)
        # One driver per run, taken before Ray starts and given back on every way out (`store.lock`).
        with RunLock(RunStore(spec.results, spec.run_id).dir, command=command):
            return _sweep(spec, command=command, host_cls=host_cls, host_kwargs=host_kwargs, actor_env=actor_env,
                          progress=progress)


def _sweep(spec: SweepSpec, *, command: str, host_cls: type | None, host_kwargs: Mapping[str, Any] | None,
           actor_env: Mapping[str, str] | None, progress: Progress | None) -> SweepResult:
    import ray  # the driver's own imports (ray, the host class) load only when a sweep runs

    from orchestrator.driver import Driver

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
        signals.reinstall()  # ray.init replaces the SIGTERM handler with its own sys.exit
        try:
            remote = started_ray and resolve_address(spec.address) is not None
            # The local cluster started here has no autoscaler: what does not fit now never will.
            local = started_ray and not remote
            workers = worker_plan(spec, cluster_gpus(), remote=remote, fixed=local)
            if profile is not None and 0 < len(todo) < workers.count:
                # No actor without a config to measure: a `fill` of one tiling loads one model
                # (and on an autoscaling cluster brings up one GPU node, not --workers of them).
                workers = dataclasses.replace(workers, count=len(todo))
            driver = Driver(spec, store, workers, host_cls=host_cls, host_kwargs=host_kwargs, actor_env=actor_env,
                            progress=progress)
            try:
                if profile is None:
                    profile = driver.host_profile()
                    configs, todo = _plan(spec, store, manifest, profile)
                manifest = _begin(store, manifest, spec, profile, configs, command, measuring=bool(todo))
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
        manifest = _begin(store, manifest, spec, profile, configs, command, measuring=False)
    if not todo:
        log.info("run %s: all %d config(s) already done", spec.run_id, len(configs))
    _end(store, manifest, outcome, hosts)
    return SweepResult(run_id=spec.run_id, run_dir=store.dir, planned=configs, measured=todo, outcome=outcome)


def _plan(spec: SweepSpec, store: RunStore, manifest: Manifest | None,
          profile: Scheme) -> tuple[list[PlannedConfig], list[PlannedConfig]]:
    """(every config of the spec, those without an ok result in the run)."""
    _check_profile(spec.run_id, manifest, profile)
    configs = plan(spec, profile)
    # Only the driver renames or deletes: what a killed driver left, and damaged parts
    # (moved aside, so their configs count as missing and are measured again).
    store.remove_temporaries()
    store.quarantine_unreadable()
    return configs, pending(configs, store.done())


def known_profile(spec: SweepSpec, manifest: Manifest | None, *, default_host: bool) -> Scheme | None:
    """The tiling profile without starting a host: the spec's, the run's, or the registered model's."""
    if spec.profile is not None:
        return get_profile(spec.profile)
    if manifest is not None and manifest.profile:
        return scheme_from_dict(manifest.profile)
    if default_host:
        from workers.models import MODELS  # imports torch: only for the registered models' profiles

        if spec.model in MODELS:
            return get_profile(MODELS[spec.model].profile)
    return None  # a hub model: its processor config decides; ask the host


def _check_profile(run_id: str, manifest: Manifest | None, profile: Scheme) -> None:
    stored = manifest.profile if manifest is not None else None
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


def _begin(store: RunStore, manifest: Manifest | None, spec: SweepSpec, profile: Scheme,
           configs: list[PlannedConfig], command: str, *, measuring: bool) -> Manifest:
    """Create or extend the manifest before any part of this invocation is written.

    Every invocation keeps its own environment; the run's ``environment`` is
    replaced only by one that has configs to measure, so a resume that finds
    nothing left to do does not take the credit for the measurements.
    """
    now = _now()
    if manifest is None:
        manifest = Manifest(run_id=spec.run_id, created_at=now, measurement=spec.measurement(),
                            profile=profile_dict(profile))
        log.info("new run %s in %s", spec.run_id, store.dir)
    env = environment()
    invocation = Invocation(command=command, started_at=now, spec=spec.to_dict(),
                            planned=tuple(c.config_id for c in configs), environment=env)
    manifest = dataclasses.replace(
        manifest,
        # The spec a plain `run --run-id` resumes; a `fill` is recorded in its invocation only.
        spec=spec.to_dict() if command == "run" or not manifest.spec else manifest.spec,
        environment=env if measuring or not manifest.environment else manifest.environment,
        planned={**manifest.planned, **{c.config_id: c.entry() for c in configs}},
        invocations=(*manifest.invocations, invocation),
        updated_at=now,
    )
    store.write_manifest(manifest)
    return manifest


def _end(store: RunStore, manifest: Manifest, outcome: Any, hosts: Mapping[str, Any]) -> None:
    outcomes = store.outcomes()
    planned = manifest.planned
    ok = sum(1 for cid in planned if cid in outcomes and outcomes[cid].status == "ok")
    failed = sum(1 for cid in planned if cid in outcomes and outcomes[cid].status != "ok")
    last = dataclasses.replace(manifest.invocations[-1], finished_at=_now())
    if outcome is not None:
        last = dataclasses.replace(last, measured=outcome.measured, ok=outcome.ok, failed=outcome.failed,
                                   retries=outcome.retries, interrupted=outcome.interrupted,
                                   remaining=outcome.remaining, elapsed_s=round(outcome.elapsed_s, 3))
    store.write_manifest(dataclasses.replace(
        manifest,
        counts=Counts(planned=len(planned), ok=ok, failed=failed, missing=len(planned) - ok - failed),
        hosts={**manifest.hosts, **hosts},
        invocations=(*manifest.invocations[:-1], last),
        updated_at=_now(),
    ))
