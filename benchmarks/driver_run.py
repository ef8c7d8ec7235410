"""Run tilesweep's own driver (`orchestrator.driver.Driver`) and time it from the outside.

The benchmarks build the driver exactly as ``tilesweep run`` does (spec, plan,
store, worker plan) and only add a `Progress` that stamps the wall-clock time of
every finished config, which is what time to first result is read from.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class StampingProgress:
    """A `orchestrator.progress.Progress` that records when each config finished (epoch s)."""

    def __init__(self) -> None:
        self.started: float | None = None  # Driver.run began: Ray is up, the plan is made
        self.finished_at: list[float] = []
        self.statuses: list[str] = []
        self.retries = 0

    def start(self, total: int, done: int) -> None:
        self.started = time.time()

    def worker(self, worker: str, activity: str | None) -> None:
        pass

    def finished(self, worker: str, label: str, status: str, seconds: float, attempt: int) -> None:
        self.finished_at.append(time.time())
        self.statuses.append(status)

    def retry(self, worker: str, label: str, reason: str) -> None:
        self.retries += 1

    def close(self) -> None:
        pass


@dataclass(kw_only=True, slots=True)
class DriverRun:
    """Timings of one `Driver.run` (epoch seconds, so worker timestamps compare)."""

    run_id: str
    results: Path
    epoch_start: float  # Driver constructed, actors not yet asked for
    epoch_ready: float | None  # every actor started (None when not waited for)
    epoch_run: float  # Driver.run called
    epoch_end: float  # Driver.run returned (actors killed)
    finished_at: list[float] = field(default_factory=list)
    ok: int = 0
    failed: int = 0
    retries: int = 0
    hosts: dict[str, Any] = field(default_factory=dict)


def run_driver(*, spec: Any, configs: Sequence[Any], profile: Any, results: Path, run_id: str, workers: Any,
               host_cls: type | None = None, host_kwargs: Mapping[str, Any] | None = None,
               wait_all_started: bool = False) -> DriverRun:
    """Build a `Driver` as ``tilesweep run`` does and run `configs`; Ray must be connected.

    Args:
        wait_all_started: start every actor before `Driver.run`, so that the run
            measures scheduling alone and not the actors' start-up.
    """
    from orchestrator.driver import Driver
    from store.runs import RunStore

    store = RunStore(results, run_id)
    progress = StampingProgress()
    epoch_start = time.time()
    driver = Driver(spec, store, workers, host_cls=host_cls, host_kwargs=host_kwargs, progress=progress)
    epoch_ready = None
    if wait_all_started:
        started = driver.wait_started(timeout=spec.start_timeout_s)
        if started != workers.count:
            raise RuntimeError(f"{started} of {workers.count} host actors started within {spec.start_timeout_s:g} s")
        epoch_ready = time.time()
    epoch_run = time.time()
    outcome = driver.run(list(configs), profile)
    epoch_end = time.time()
    return DriverRun(
        run_id=run_id, results=Path(results), epoch_start=epoch_start, epoch_ready=epoch_ready,
        epoch_run=epoch_run, epoch_end=epoch_end, finished_at=progress.finished_at, ok=outcome.ok,
        failed=outcome.failed, retries=outcome.retries, hosts=outcome.hosts,
    )
