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
Ctrl-C stops the loop between events: nothing half-written is left (parts are
atomic), the actors are killed and the run can be resumed.

Rows carry ``node_id`` and ``worker_id`` from the driver, which asks each actor
for its node and actor id once, when it starts (`_identify`); the host itself
knows nothing of Ray.
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

from tilings import Profile

from orchestrator.cluster import WorkerPlan
from orchestrator.plan import PlannedConfig
from orchestrator.progress import STARTING, LogProgress, Progress
from orchestrator.spec import SweepSpec
from orchestrator.store import RunStore
from workers import faults
from workers.record import STATUS_FAILED, STATUS_OK, Record

log = logging.getLogger(__name__)

# ray.wait wakes at least this often, so Ctrl-C and deadlines are seen promptly.
_WAKE_S = 1.0


class SweepError(RuntimeError):
    """The sweep cannot go on (e.g. no host actor can start); what is written stays valid."""


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
    elapsed_s: float = 0.0
    hosts: dict[str, dict[str, Any]] = field(default_factory=dict)


def _identify(host: Any) -> dict[str, Any]:
    """Runs inside the actor (via ``__ray_call__``): who and where it is, and its profile."""
    import os

    ctx = ray.get_runtime_context()
    describe = host.describe() if hasattr(host, "describe") else {}
    return {"node_id": ctx.get_node_id(), "actor_id": ctx.get_actor_id(), "pid": os.getpid(),
            "describe": describe, "profile": getattr(host, "profile", None)}


@dataclass(eq=False)
class _Slot:
    name: str
    actor: Any
    created: float
    start_ref: Any = None  # identify call in flight while the actor starts
    info: dict[str, Any] | None = None  # set once started
    task: _Task | None = None

    @property
    def ready(self) -> bool:
        return self.info is not None and self.task is None


@dataclass(eq=False)
class _Task:
    config: PlannedConfig
    attempt: int
    slot: _Slot
    ref: Any
    dispatched: float
    started_at: datetime


class Driver:
    """Host actors on a Ray cluster, fed one config at a time.

    Args:
        spec: the sweep spec (host settings, timeouts, max attempts).
        store: where parts go; the only writer.
        workers: how many actors and their resources (`orchestrator.cluster.worker_plan`).
        host_cls: the host class; any class with ``describe()`` and
            ``measure(MeasureConfig) -> list[Record]`` (default `workers.ModelHost`).
        host_kwargs: constructor kwargs; default: the spec's model settings.
        actor_env: extra environment variables for the actors.
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
        self.workers = workers
        self.host_cls = host_cls
        self.host_kwargs = dict(host_kwargs) if host_kwargs is not None else host_kwargs_for(spec)
        self.progress = progress or LogProgress()
        self._clock = clock
        env = dict(actor_env or {})
        if os.environ.get(faults.ENV_VAR) and faults.ENV_VAR not in env:
            # The fault-injection hook must reach the hosts, which do not inherit this process's env.
            env[faults.ENV_VAR] = os.environ[faults.ENV_VAR]
        self._remote = ray.remote(**workers.actor_options(env))(host_cls)
        self._slots: list[_Slot] = []
        self._next_attempt: dict[str, int] = {}
        self._start_failures = 0
        self._ever_started = False
        self.hosts: dict[str, dict[str, Any]] = {}

    # ----- actors -----
    def start(self) -> None:
        """Create the actors (non-blocking; they become usable as they finish loading)."""
        if not self._slots:
            self._slots = [self._new_slot(f"w{i}") for i in range(self.workers.count)]
            for slot in self._slots:
                self.progress.worker(slot.name, STARTING)

    def _new_slot(self, name: str) -> _Slot:
        actor = self._remote.remote(**self.host_kwargs)
        slot = _Slot(name=name, actor=actor, created=self._clock())
        slot.start_ref = actor.__ray_call__.remote(_identify)
        return slot

    def _replace(self, slot: _Slot) -> None:
        ray.kill(slot.actor, no_restart=True)
        new = self._new_slot(slot.name)
        self._slots[self._slots.index(slot)] = new
        self.progress.worker(slot.name, STARTING)

    def _started(self, slot: _Slot, info: dict[str, Any]) -> None:
        slot.info = info
        slot.start_ref = None
        self._ever_started = True
        self._start_failures = 0
        self.hosts[info["actor_id"]] = {k: v for k, v in info.items() if k != "profile"}
        log.debug("%s started on node %s (pid %s)", slot.name, info["node_id"], info["pid"])
        self.progress.worker(slot.name, None)

    def _start_failed(self, slot: _Slot, reason: str) -> None:
        self._start_failures += 1
        limit = self.workers.count if not self._ever_started else self.workers.count * self.spec.max_attempts
        log.warning("%s failed to start: %s", slot.name, reason)
        if self._start_failures >= limit:
            raise SweepError(f"{self._start_failures} host actor(s) failed to start in a row; last error: {reason}")
        self._replace(slot)

    def host_profile(self) -> Profile:
        """The tiling profile of the hosts (blocks until the first actor has started).

        Raises:
            SweepError: no actor could start, or the host class has no ``profile``.
        """
        self.start()
        while True:
            started = [s for s in self._slots if s.info is not None]
            if started:
                profile = started[0].info["profile"]
                if profile is None:
                    raise SweepError(f"{self.host_cls.__name__} has no `profile`; pass --profile")
                return profile
            refs = [s.start_ref for s in self._slots]
            ready, _ = ray.wait(refs, num_returns=1, timeout=_WAKE_S)
            for ref in ready:
                self._on_start(self._slot_of_start(ref), ref)
            self._expire_starts()

    def wait_started(self, timeout: float | None = None) -> int:
        """Create the actors and block until all have started (or `timeout` s); returns how many did.

        `run` does not need this (it dispatches to each actor as it becomes ready);
        it is for callers that time the sweep without the model loads.
        """
        self.start()
        deadline = None if timeout is None else self._clock() + timeout
        while any(s.start_ref is not None for s in self._slots):
            left = _WAKE_S if deadline is None else min(_WAKE_S, deadline - self._clock())
            if left <= 0:
                break
            refs = [s.start_ref for s in self._slots if s.start_ref is not None]
            ready, _ = ray.wait(refs, num_returns=1, timeout=left)
            for ref in ready:
                self._on_start(self._slot_of_start(ref), ref)
            self._expire_starts()
        return sum(1 for s in self._slots if s.info is not None)

    def in_flight(self) -> list[dict[str, Any]]:
        """What each busy actor measures now: worker, tiling, attempt, seconds so far, pid, node id."""
        now = self._clock()
        return [{"worker": s.name, "tiling": s.task.config.label(), "config_id": s.task.config.config_id,
                 "attempt": s.task.attempt, "seconds": now - s.task.dispatched,
                 "pid": (s.info or {}).get("pid"), "node_id": (s.info or {}).get("node_id")}
                for s in list(self._slots) if s.task is not None]

    def shutdown(self) -> None:
        """Kill every actor (a killed actor frees its GPU at once)."""
        for slot in self._slots:
            ray.kill(slot.actor, no_restart=True)
        self._slots = []

    # ----- the loop -----
    def run(self, configs: Sequence[PlannedConfig], profile: Profile, *, done: int = 0) -> SweepOutcome:
        """Measure `configs` (in order, dynamically spread) and write one part each.

        Args:
            configs: what to measure, longest first.
            profile: the hosts' tiling profile (labels the driver's own failed rows).
            done: configs of this run already done, for the progress display only.

        Returns:
            What happened; ``interrupted`` is True after Ctrl-C (the actors are killed).

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
            self.start()
            while queue or self._busy():
                self._dispatch(queue)
                self._step(queue, lost, out)
        except KeyboardInterrupt:
            out.interrupted = True
            log.warning("interrupted: stopping; every finished config is saved")
        finally:
            out.remaining = len(queue) + len(self._busy())
            self.progress.close()
            self.shutdown()
        out.elapsed_s = self._clock() - t0
        return out

    def _busy(self) -> list[_Task]:
        return [s.task for s in self._slots if s.task is not None]

    def _dispatch(self, queue: collections.deque[PlannedConfig]) -> None:
        from workers.config import MeasureConfig

        for slot in self._slots:
            if not queue:
                return
            if not slot.ready:
                continue
            config = queue.popleft()
            attempt = self._next_attempt.get(config.config_id, 1)
            self._next_attempt[config.config_id] = attempt + 1
            mc = MeasureConfig(
                tiling_rows=config.tiling.rows, tiling_cols=config.tiling.cols,
                height=config.height, width=config.width, family=config.family,
                warmup=self.spec.warmup, repeats=self.spec.repeats, min_duration_s=self.spec.min_duration_s,
                decode_tokens=self.spec.decode_tokens, block_spans=self.spec.block_spans, seed=self.spec.seed,
                run_id=self.store.run_id, config_id=config.config_id, attempt=attempt,
            )
            slot.task = _Task(config=config, attempt=attempt, slot=slot, ref=slot.actor.measure.remote(mc),
                              dispatched=self._clock(), started_at=datetime.now(timezone.utc))
            self.progress.worker(slot.name, f"{config.label()} (crops {config.crops}, attempt {attempt})")

    def _step(self, queue, lost, out: SweepOutcome) -> None:
        """Wait for one event (a result, a start, a deadline) and handle it."""
        tasks = {t.ref: t for t in self._busy()}
        starts = {s.start_ref: s for s in self._slots if s.start_ref is not None}
        refs = [*tasks, *starts]
        if not refs:
            raise SweepError("no host actor is running or starting; cannot go on")
        ready, _ = ray.wait(refs, num_returns=1, timeout=self._wait_timeout())
        for ref in ready:
            if ref in starts:
                self._on_start(starts[ref], ref)
            else:
                self._on_result(tasks[ref], queue, lost, out)
        self._expire_starts()
        now = self._clock()
        for task in self._busy():
            if now - task.dispatched > self.spec.config_timeout_s:
                reason = f"timed out after {self.spec.config_timeout_s:g}s"
                self._lost(task, reason, queue, lost, out)

    def _wait_timeout(self) -> float:
        now = self._clock()
        deadlines = [t.dispatched + self.spec.config_timeout_s for t in self._busy()]
        deadlines += [s.created + self.spec.start_timeout_s for s in self._slots if s.start_ref is not None]
        if not deadlines:
            return _WAKE_S
        return max(0.0, min(_WAKE_S, min(deadlines) - now))

    def _slot_of_start(self, ref) -> _Slot:
        return next(s for s in self._slots if s.start_ref == ref)

    def _on_start(self, slot: _Slot, ref) -> None:
        try:
            info = ray.get(ref)
        except RayError as exc:
            self._start_failed(slot, _short(exc))
            return
        self._started(slot, info)

    def _expire_starts(self) -> None:
        now = self._clock()
        for slot in list(self._slots):
            if slot.start_ref is not None and now - slot.created > self.spec.start_timeout_s:
                self._start_failed(slot, f"not started after {self.spec.start_timeout_s:g}s")

    def _on_result(self, task: _Task, queue, lost, out: SweepOutcome) -> None:
        try:
            records = ray.get(task.ref)
        except RayTaskError as exc:  # the host method raised: a property of the config, not the actor
            cause = exc.cause if isinstance(exc.cause, BaseException) else exc
            records = [self._failed_record(task, type(cause).__name__, _short(cause))]
        except RayError as exc:  # RayActorError (died, unavailable), a lost node or result object
            self._lost(task, f"actor died ({type(exc).__name__}: {_short(exc)})", queue, lost, out)
            return
        task.slot.task = None
        self._write(task, records, out)

    def _lost(self, task: _Task, reason: str, queue, lost, out: SweepOutcome) -> None:
        """The task's actor is dead or hung: replace it, then requeue or give up on the config."""
        slot, config = task.slot, task.config
        slot.task = None
        self._replace(slot)
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
        info = task.slot.info or {}
        labelled = [dataclasses.replace(
            r, run_id=self.store.run_id, config_id=task.config.config_id, attempt=task.attempt,
            node_id=info.get("node_id"), worker_id=info.get("actor_id")) for r in records]
        self.store.write_part(labelled)
        status = STATUS_OK if labelled and all(r.status == STATUS_OK for r in labelled) else STATUS_FAILED
        out.measured += 1
        if status == STATUS_OK:
            out.ok += 1
        else:
            out.failed += 1
            log.warning("%s failed: %s", task.config.label(), next((r.error for r in labelled if r.error), ""))
        self.progress.finished(task.slot.name, task.config.label(), status,
                               self._clock() - task.dispatched, task.attempt)
        self.progress.worker(task.slot.name, None)

    def _failed_record(self, task: _Task, error_type: str, error: str) -> Record:
        """The row a config gets when its host could not produce one."""
        c, spec = task.config, self.spec
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


def _short(exc: BaseException, limit: int = 500) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tilesweep")
    except PackageNotFoundError:
        return ""
