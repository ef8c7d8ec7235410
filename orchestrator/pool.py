"""The host actors of a sweep: created, identified, replaced and killed here.

Each actor lives in a named slot (``w0``, ``w1``, …). A new actor is asked at once,
through ``__ray_call__``, who and where it is (`identify`); that call returns once
the host's constructor (the model load) has finished, so its reference doubles as
the "started" signal the driver waits on together with the measurements. The
host class needs no Ray code of its own.

Actors are created with ``max_restarts=0`` (`WorkerPlan.actor_options`): a death
is never hidden by a silent restart; the driver sees it, replaces the actor here
and counts it against the config that was running.

A slot whose actor fails to start (its constructor raised, or it did not start
within the start timeout) is given a new actor, up to ``max_attempts`` starts in
a row; then the slot is given up and the sweep goes on with the others. When no
slot is left started or starting, or every slot's first start failed before any
actor started (a model that cannot load anywhere), the sweep ends with one line
naming the node and the first error.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import RayError

from orchestrator.cluster import WorkerPlan
from orchestrator.progress import STARTING, Progress
from tilesweep.errors import SweepError

log = logging.getLogger(__name__)

# ray.wait wakes at least this often, so Ctrl-C and deadlines are seen promptly.
WAKE_S = 1.0


def identify(host: Any) -> dict[str, Any]:
    """Runs inside the actor: its node, actor id, pid, ``describe()`` and tiling profile."""
    import os

    ctx = ray.get_runtime_context()
    describe = host.describe() if hasattr(host, "describe") else {}
    return {"node_id": ctx.get_node_id(), "actor_id": ctx.get_actor_id(), "pid": os.getpid(),
            "describe": describe, "profile": getattr(host, "profile", None)}


@dataclass(eq=False)
class Slot:
    """One place for a host actor; `task` is the driver's in-flight call, if any."""

    name: str
    actor: Any
    created: float
    start_ref: Any = None  # `identify` in flight while the actor starts
    info: dict[str, Any] | None = None  # what `identify` returned, once started
    task: Any = None
    failed_starts: int = 0  # in a row, this slot's

    @property
    def ready(self) -> bool:
        return self.info is not None and self.task is None


class HostPool:
    """`workers.count` actors of `host_cls`, each replaced when it dies or hangs.

    Args:
        host_cls: any class with ``describe()`` and ``measure(config)``.
        host_kwargs: its constructor kwargs.
        workers: how many actors and their resources.
        env: environment variables for the actors.
        start_timeout_s: an actor not started by then is replaced.
        max_attempts: with the count, how many failed starts in a row end the sweep.
    """

    def __init__(self, host_cls: type, host_kwargs: Mapping[str, Any], workers: WorkerPlan, *,
                 env: Mapping[str, str], start_timeout_s: float, max_attempts: int, progress: Progress,
                 clock: Callable[[], float] = time.monotonic):
        self.host_cls = host_cls
        self.host_kwargs = dict(host_kwargs)
        self.workers = workers
        self.start_timeout_s = start_timeout_s
        self.max_attempts = max_attempts
        self.progress = progress
        self.clock = clock
        self._remote = ray.remote(**workers.actor_options(dict(env)))(host_cls)
        self.slots: list[Slot] = []
        self.hosts: dict[str, dict[str, Any]] = {}  # actor id -> identify() minus the profile
        self.start_errors: list[str] = []  # every failed start, "wN on node ...: cause", oldest first
        self._ever_started = False

    def start(self) -> None:
        """Create the actors; they become ready as their models load (this does not wait)."""
        if not self.slots:
            self.slots = [self._new(f"w{i}") for i in range(self.workers.count)]
            for slot in self.slots:
                self.progress.worker(slot.name, STARTING)

    def _new(self, name: str) -> Slot:
        actor = self._remote.remote(**self.host_kwargs)
        slot = Slot(name=name, actor=actor, created=self.clock())
        slot.start_ref = actor.__ray_call__.remote(identify)
        return slot

    def replace(self, slot: Slot) -> None:
        """Kill the slot's actor (dead, hung or failed to start) and start a new one in its place."""
        ray.kill(slot.actor, no_restart=True)
        new = self._new(slot.name)
        new.failed_starts = slot.failed_starts
        self.slots[self.slots.index(slot)] = new
        self.progress.worker(slot.name, STARTING)

    def starting(self) -> dict[Any, Slot]:
        """``{identify ref: slot}`` of the actors still loading."""
        return {s.start_ref: s for s in self.slots if s.start_ref is not None}

    def start_deadlines(self) -> list[float]:
        return [s.created + self.start_timeout_s for s in self.slots if s.start_ref is not None]

    def on_start(self, slot: Slot, ref: Any) -> None:
        """`ref` (the slot's identify call) is ready: the actor started, or failed to."""
        try:
            info = ray.get(ref)
        except RayError as exc:
            self._start_failed(slot, root_cause(exc))
            return
        slot.info, slot.start_ref = info, None
        slot.failed_starts = 0
        self._ever_started = True
        self.hosts[info["actor_id"]] = {k: v for k, v in info.items() if k != "profile"}
        log.debug("%s started on node %s (pid %s)", slot.name, info["node_id"], info["pid"])
        self.progress.worker(slot.name, None)

    def expire_starts(self) -> None:
        now = self.clock()
        for slot in list(self.slots):
            if slot.start_ref is not None and now - slot.created > self.start_timeout_s:
                self._start_failed(slot, f"not started after {self.start_timeout_s:g}s")

    def _start_failed(self, slot: Slot, reason: str) -> None:
        where = f"{slot.name} on {actor_node(slot.actor)}"
        self.start_errors.append(f"{where}: {reason}")
        slot.failed_starts += 1
        log.warning("%s failed to start: %s", where, reason)
        gave_up = slot.failed_starts >= self.max_attempts
        if gave_up:
            ray.kill(slot.actor, no_restart=True)
            self.slots.remove(slot)
            self.progress.worker(slot.name, None)
        # Before any actor has started, every slot failing its first start means the host
        # cannot start anywhere (a model that cannot load): stop now rather than retry.
        hopeless = not self._ever_started and all(s.failed_starts for s in self.slots)
        if not self.slots or hopeless:
            # The cause goes last and whole: it is what a user needs, and a cut line hid it.
            raise SweepError(f"no host actor could start ({len(self.start_errors)} failed start(s)); the first: "
                             f"{self.start_errors[0]}")
        if gave_up:
            log.warning("%s: given up after %d failed start(s) in a row; the sweep goes on with %d host(s)",
                        slot.name, slot.failed_starts, len(self.slots))
            return
        self.replace(slot)

    def wait_starts(self, done: Callable[[], bool], timeout: float | None = None) -> None:
        """Handle starts until `done()` or `timeout` seconds (None: no limit)."""
        self.start()
        deadline = None if timeout is None else self.clock() + timeout
        while not done() and self.starting():
            left = WAKE_S if deadline is None else min(WAKE_S, deadline - self.clock())
            if left <= 0:
                return
            starting = self.starting()
            ready, _ = ray.wait(list(starting), num_returns=1, timeout=left)
            for ref in ready:
                self.on_start(starting[ref], ref)
            self.expire_starts()

    def started(self) -> list[Slot]:
        return [s for s in self.slots if s.info is not None]

    def shutdown(self) -> None:
        """Kill every actor (a killed actor frees its GPU at once)."""
        for slot in self.slots:
            ray.kill(slot.actor, no_restart=True)
        self.slots = []


def actor_node(actor: Any) -> str:
    """``node <id prefix> (<ip>)`` where `actor` was placed, or ``no node`` if it never was.

    Reads the GCS's actor table (``ray._private.state``, not public API: where it is
    missing or fails, ``an unknown node``).
    """
    try:
        entry = ray._private.state.actors(actor._actor_id.hex()) or {}
        address = entry.get("Address") or {}
    except Exception:  # noqa: BLE001 - a private API; naming the node is a courtesy
        return "an unknown node"
    node = str(address.get("NodeID") or "").strip("0")
    if not node:
        return "no node (never placed: no node has the resources it asks for)"
    ip = address.get("IPAddress")
    return f"node {address['NodeID'][:12]}" + (f" ({ip})" if ip else "")


def short(exc: BaseException, limit: int = 500) -> str:
    """An exception as one line of at most `limit` characters."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def root_cause(exc: BaseException) -> str:
    """The innermost error of a Ray error as ``Type: message``, one line, whole, without colour codes.

    An actor whose constructor raised surfaces as an ``ActorDiedError`` whose text is
    Ray's preamble, then the remote traceback (coloured), then the original
    ``module.Type: message`` lines: those last lines are the cause. A task's
    ``RayTaskError`` keeps the original exception as ``cause``, used when present.
    Text without a traceback (a process that died) is returned as one line.
    """
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException) and not isinstance(cause, RayError):
        return f"{type(cause).__name__}: {' '.join(str(cause).split())}"
    lines = _ANSI.sub("", str(exc)).splitlines()
    frames = [i for i, line in enumerate(lines) if line.startswith("  File ")]
    if not frames:
        return " ".join(" ".join(lines).split())
    tail = lines[frames[-1] + 1:]
    while tail and (not tail[0].strip() or tail[0][0].isspace()):  # the frame's source and ^^^ markers
        tail = tail[1:]
    qualified, sep, message = " ".join(" ".join(tail).split()).partition(": ")
    name = qualified.rsplit(".", 1)[-1]
    return f"{name}{sep}{message}" if " " not in qualified else f"{qualified}{sep}{message}"
