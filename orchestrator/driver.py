"""The Ray driver: one host actor per GPU (or CPU slot), a dynamic queue, retries, atomic writes.

The loop follows `ray.util.ActorPool`: an idle actor gets the next config, the
driver blocks in `ray.wait(num_returns=1)` until some call returns, a start
finishes or a deadline passes, and handles that one event. There is no static
split of the work, no thread around an actor and no polling.

What can happen to a dispatched config:

- the host returns records (ok, or one failed record for a per-config error
  such as OOM): they are written as one part at once; a failed part is not
  retried, because such failures repeat;
- the host method raises: a failed part with that error, the actor is kept;
- the actor or its node dies (`RayActorError`, `ActorUnavailableError`), or the
  call outlives ``config_timeout_s`` (the actor is killed): the actor is replaced
  and the config requeued at the front, until it has been lost ``max_attempts``
  times; then the driver writes a failed part itself.

Every dispatch gets a new attempt number, so no part is ever overwritten.
Ctrl-C, SIGTERM and SIGHUP (`orchestrator.signals`) stop the loop between events:
nothing half-written is left (parts are atomic), the actors are killed and the
run can be resumed.

Rows carry ``node_id`` and ``worker_id`` (the Ray actor id) from the driver,
which asks each actor for them once, when it starts (`orchestrator.pool.identify`);
the host itself knows nothing of Ray.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import ray
from ray.exceptions import RayError, RayTaskError

from orchestrator import signals
from orchestrator.cluster import WorkerPlan
from orchestrator.plan import PlannedConfig
from orchestrator.pool import WAKE_S, HostPool, Slot, short
from orchestrator.progress import LogProgress, Progress
from orchestrator.spec import SweepSpec
from store.runs import RunStore
from tilesweep import fields
from tilesweep.errors import StorageError, SweepError
from tilings import Scheme
from tilings.overrides import parse_overrides
from workers import faults
from workers.config import MeasureConfig, Timing
from workers.record import STATUS_FAILED, STATUS_OK, Record
from workers.runtime import thread_env

__all__ = ["Driver", "SweepError", "SweepOutcome", "host_kwargs_for"]

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class SweepOutcome:
    """What one `Driver.run` did."""

    run_id: str
    measured: int = 0  # configs taken from the queue that ended with a part
    ok: int = 0
    failed: int = 0
    retries: int = 0  # dispatches lost to a dead or hung actor
    remaining: int = 0  # configs never finished (after Ctrl-C or a fatal error)
    interrupted: bool = False
    stopped_by: BaseException | None = None  # the KeyboardInterrupt (or `signals.Stopped`) that interrupted it
    elapsed_s: float = 0.0
    hosts: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(eq=False)
class _Task:
    config: PlannedConfig
    attempt: int
    slot: Slot
    ref: Any
    dispatched: float
    started_at: datetime


class Driver:
    """Host actors on a Ray cluster (Ray must be connected), fed one config at a time.

    Args:
        spec: the sweep spec (host settings, timeouts, max attempts).
        store: where parts go; the only writer.
        workers: how many actors and their resources (`orchestrator.cluster.worker_plan`).
        host_cls: the host class; any class with ``describe()`` and
            ``measure(MeasureConfig) -> list[Record]`` (default `workers.ModelHost`).
        host_kwargs: constructor kwargs; default: the spec's model settings.
        actor_env: extra environment variables for the actors, over `workers.runtime.thread_env()`
            (the thread count `python -m workers` uses too); ``TILESWEEP_INJECT`` is passed on from
            this process when set.
        progress: where events go (default: log lines).
    """

    def __init__(self, spec: SweepSpec, store: RunStore, workers: WorkerPlan, *,
                 host_cls: type | None = None, host_kwargs: Mapping[str, Any] | None = None,
                 actor_env: Mapping[str, str] | None = None, progress: Progress | None = None,
                 clock: Callable[[], float] = time.monotonic):
        if host_cls is None:
            from workers import ModelHost as host_cls  # torch is imported only when the real host is used
        self.spec = spec
        self.store = store
        self.progress = progress or LogProgress()
        self._clock = clock
        # Every host gets the same thread count as `python -m workers` uses by default (one definition).
        env = {**thread_env(), **(actor_env or {})}
        if os.environ.get(faults.ENV_VAR) and faults.ENV_VAR not in env:
            # The fault-injection hook must reach the hosts, which do not inherit this process's env.
            env[faults.ENV_VAR] = os.environ[faults.ENV_VAR]
        self.actor_env = env  # what every host actor gets in its environment
        self.pool = HostPool(host_cls, host_kwargs_for(spec) if host_kwargs is None else host_kwargs, workers,
                             env=env, start_timeout_s=spec.start_timeout_s, max_attempts=spec.max_attempts,
                             progress=self.progress, clock=clock)
        self._next_attempt: dict[str, int] = {}
        self._profile: Scheme | None = None
        # The spec's timing settings are `Timing`'s fields, passed on as they are.
        self._timing = {f.name: getattr(spec, f.name) for f, _ in fields.settings(Timing)}

    @property
    def hosts(self) -> dict[str, dict[str, Any]]:
        """Every actor that started: ``{actor id: {node_id, pid, describe}}``."""
        return self.pool.hosts

    # ----- actors -----
    def start(self) -> None:
        """Create the actors (non-blocking; each becomes usable when its model has loaded)."""
        self.pool.start()

    def host_profile(self) -> Scheme:
        """The hosts' tiling profile (blocks until the first actor has started).

        Raises:
            SweepError: no actor could start, or the host class has no ``profile``.
        """
        self.pool.wait_starts(lambda: bool(self.pool.started()))
        started = self.pool.started()
        if not started:
            raise SweepError("no host actor started")
        profile = started[0].info["profile"]
        if profile is None:
            raise SweepError(f"{self.pool.host_cls.__name__} has no `profile`; pass --profile")
        return profile

    def wait_started(self, timeout: float | None = None) -> int:
        """Create the actors and block until all have started (or `timeout` s); returns how many did.

        `run` does not need this (it dispatches to each actor as soon as it is
        ready); it is for callers that time the sweep without the model loads.
        """
        self.pool.wait_starts(lambda: not self.pool.starting(), timeout)
        return len(self.pool.started())

    def in_flight(self) -> list[dict[str, Any]]:
        """What each busy actor measures now: worker, tiling, config id, attempt, seconds, pid, node id."""
        now = self._clock()
        return [{"worker": s.name, "tiling": s.task.config.label(), "config_id": s.task.config.config_id,
                 "attempt": s.task.attempt, "seconds": now - s.task.dispatched,
                 "pid": (s.info or {}).get("pid"), "node_id": (s.info or {}).get("node_id")}
                for s in list(self.pool.slots) if s.task is not None]

    def shutdown(self) -> None:
        """Kill every actor (a killed actor frees its GPU at once)."""
        self.pool.shutdown()

    # ----- the loop -----
    def run(self, configs: Sequence[PlannedConfig], profile: Scheme, *, done: int = 0) -> SweepOutcome:
        """Measure `configs` (in order, dynamically spread) and write one part each; kill the actors.

        Args:
            configs: what to measure, longest first.
            profile: the hosts' tiling profile (labels the driver's own failed rows).
            done: configs of this run already done, for the progress display only.

        Returns:
            What happened; ``interrupted`` is True after Ctrl-C, SIGTERM or SIGHUP.

        Raises:
            SweepError: no host actor can start.
        """
        t0 = self._clock()
        self._profile = profile
        out = SweepOutcome(run_id=self.store.run_id, hosts=self.hosts)
        queue = collections.deque(configs)
        lost: collections.Counter[str] = collections.Counter()
        self._next_attempt = {cid: n + 1 for cid, n in self.store.attempts_on_disk().items()}
        self.progress.start(len(queue), done)
        try:
            self.pool.start()
            while queue or self._busy():
                self._dispatch(queue)
                self._step(queue, lost, out)
        except KeyboardInterrupt as exc:  # Ctrl-C, and SIGTERM/SIGHUP as `signals.Stopped`
            out.interrupted, out.stopped_by = True, exc
            log.warning("interrupted (%s): stopping; every finished config is saved", signals.signal_name(exc))
        finally:
            out.remaining = len(queue) + len(self._busy())
            self.progress.close()
            self.shutdown()
        out.elapsed_s = self._clock() - t0
        return out

    def _busy(self) -> list[_Task]:
        return [s.task for s in self.pool.slots if s.task is not None]

    def _dispatch(self, queue: collections.deque[PlannedConfig]) -> None:
        for slot in self.pool.slots:
            if not queue:
                return
            if not slot.ready:
                continue
            config = queue.popleft()
            attempt = self._next_attempt.get(config.config_id, 1)
            self._next_attempt[config.config_id] = attempt + 1
            mc = MeasureConfig(
                **self._timing, tiling_rows=config.tiling.rows, tiling_cols=config.tiling.cols,
                height=config.height, width=config.width, family=config.family,
                run_id=self.store.run_id, config_id=config.config_id, attempt=attempt,
                processor_overrides=parse_overrides(config.processor_overrides),
            )
            slot.task = _Task(config=config, attempt=attempt, slot=slot, ref=slot.actor.measure.remote(mc),
                              dispatched=self._clock(), started_at=datetime.now(timezone.utc))
            self.progress.worker(slot.name, f"{config.label()} (crops {config.crops}, attempt {attempt})")

    def _step(self, queue, lost, out: SweepOutcome) -> None:
        """Wait for one event (a result, a start, a deadline) and handle it."""
        tasks = {t.ref: t for t in self._busy()}
        starts = self.pool.starting()
        if not tasks and not starts:
            raise SweepError("no host actor is running or starting; cannot go on")
        ready, _ = ray.wait([*tasks, *starts], num_returns=1, timeout=self._wait_timeout())
        for ref in ready:
            if ref in starts:
                self.pool.on_start(starts[ref], ref)
            else:
                self._on_result(tasks[ref], queue, lost, out)
        self.pool.expire_starts()
        now = self._clock()
        for task in self._busy():
            if now - task.dispatched > self.spec.config_timeout_s:
                self._lost(task, f"timed out after {self.spec.config_timeout_s:g}s", queue, lost, out)

    def _wait_timeout(self) -> float:
        deadlines = [t.dispatched + self.spec.config_timeout_s for t in self._busy()]
        deadlines += self.pool.start_deadlines()
        if not deadlines:
            return WAKE_S
        return max(0.0, min(WAKE_S, min(deadlines) - self._clock()))

    def _on_result(self, task: _Task, queue, lost, out: SweepOutcome) -> None:
        try:
            records = ray.get(task.ref)
        except RayTaskError as exc:  # the host method raised: a property of the config, not the actor
            cause = exc.cause if isinstance(exc.cause, BaseException) else exc
            records = [self._failed_record(task, type(cause).__name__, short(cause))]
        except RayError as exc:  # RayActorError (died, unavailable), a lost node or result object
            self._lost(task, f"actor died ({type(exc).__name__}: {short(exc)})", queue, lost, out)
            return
        task.slot.task = None
        self._write(task, records, out)

    def _lost(self, task: _Task, reason: str, queue, lost, out: SweepOutcome) -> None:
        """The task's actor is dead or hung: replace it, then requeue or give up on the config."""
        slot, config = task.slot, task.config
        slot.task = None
        self.pool.replace(slot)
        lost[config.config_id] += 1
        out.retries += 1
        n = lost[config.config_id]
        if n < self.spec.max_attempts:
            self.progress.retry(slot.name, config.label(), reason)
            queue.appendleft(config)  # longest-first order: it was at the front when taken
            return
        error = f"lost {n} time(s), last: {reason}"
        log.error("%s: giving up on %s: %s", slot.name, config.label(), error)
        self._write(task, [self._failed_record(task, "WorkerLost", error)], out)

    def _write(self, task: _Task, records: list[Record], out: SweepOutcome) -> None:
        try:
            try:
                labelled = self._label(task, records)
                self.store.write_part(labelled)
            except (TypeError, ValueError) as exc:  # not Records, none at all, or rows the schema refuses
                log.error("%s: the host's records cannot be stored: %s", task.config.label(), short(exc))
                labelled = self._label(task, [self._failed_record(task, "InvalidRecords", short(exc))])
                self.store.write_part(labelled)
        except FileExistsError:  # an attempt number reused: a bug, not the disk
            raise
        except OSError as exc:  # a full disk, a directory made read-only, an object store that stopped answering
            fix = "once the storage answers" if isinstance(exc, StorageError) else "free space or fix permissions"
            raise SweepError(
                f"cannot write the results of {task.config.label()} ({exc.strerror or exc} in {self.store.dir}); "
                f"every finished config is saved: {fix}, then run the same command again to resume") from exc
        status = STATUS_OK if all(r.status == STATUS_OK for r in labelled) else STATUS_FAILED
        out.measured += 1
        if status == STATUS_OK:
            out.ok += 1
        else:
            out.failed += 1
            log.warning("%s failed: %s", task.config.label(), next((r.error for r in labelled if r.error), ""))
        self.progress.finished(task.slot.name, task.config.label(), status,
                               self._clock() - task.dispatched, task.attempt)
        self.progress.worker(task.slot.name, None)

    def _label(self, task: _Task, records: list[Record]) -> list[Record]:
        """The driver's labels on every row: run, config, attempt, and the actor's node and id."""
        info = task.slot.info or {}
        return [dataclasses.replace(r, run_id=self.store.run_id, config_id=task.config.config_id,
                                    attempt=task.attempt, node_id=info.get("node_id"),
                                    worker_id=info.get("actor_id")) for r in records]

    def _failed_record(self, task: _Task, error_type: str, error: str) -> Record:
        """The row a config gets when its host could not produce one."""
        c, spec = task.config, self.spec
        assert self._profile is not None
        return Record(
            model=spec.model, revision=spec.revision, profile=self._profile.name, family=c.family,
            tiling_rows=c.tiling.rows, tiling_cols=c.tiling.cols, crops=c.crops, height=c.height,
            width=c.width, canvas_height=c.height, canvas_width=c.width, image_tokens=c.image_tokens,
            sequence_tokens=c.sequence_tokens, warmup=spec.warmup, repeats=spec.repeats,
            decode_tokens=spec.decode_tokens, dtype=spec.dtype or "", tilesweep_version=_version(),
            attn_implementation=spec.attn_implementation, started_at=task.started_at,
            finished_at=datetime.now(timezone.utc), status=STATUS_FAILED, error_type=error_type, error=error,
        )


def host_kwargs_for(spec: SweepSpec) -> dict[str, Any]:
    """`ModelHost` constructor kwargs from the spec (the device is the host's own choice)."""
    return {"model": spec.model, "dtype": spec.dtype, "attn_implementation": spec.attn_implementation,
            "revision": spec.revision, "trust_remote_code": spec.trust_remote_code, "profile": spec.profile}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tilesweep")
    except PackageNotFoundError:
        return ""
