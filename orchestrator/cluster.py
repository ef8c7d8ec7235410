"""Connecting to Ray and sizing the worker actors.

`connect` either joins a running cluster (``--address``, or ``RAY_ADDRESS`` as set
inside ``ray job submit``) or starts a private local one: no dashboard (no UI, no job
API; its host pinned to 127.0.0.1), quiet logs, enough CPU slots for the CPU
actors. An address that cannot be reached is
a `UsageError` raised before anything is written.

`worker_plan` decides the actors: one per ``gpus_per_worker`` GPUs when the
cluster has GPUs (logical ones included), else ``--workers`` CPU actors (2 by
default) pinned to one thread each, so two actors on two cores do not fight.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from dataclasses import dataclass, field
from typing import Any

from orchestrator.spec import SweepSpec
from tilesweep.errors import UsageError

log = logging.getLogger(__name__)

DEFAULT_CPU_WORKERS = 2
_REACH_TIMEOUT_S = 5.0


@dataclass(kw_only=True, frozen=True, slots=True)
class WorkerPlan:
    """How many host actors and what each one asks Ray for."""

    count: int
    num_gpus: float  # 0: CPU actors
    num_cpus: float = 1
    env_vars: dict[str, str] = field(default_factory=dict)

    def actor_options(self, extra_env: dict[str, str] | None = None) -> dict[str, Any]:
        """Options for `ray.remote(...)`: resources, no automatic restarts, the runtime env.

        ``max_restarts=0`` makes a death visible to the driver, which replaces the
        actor itself and counts the death against the config's attempts.
        """
        env = {**self.env_vars, **(extra_env or {})}
        options: dict[str, Any] = {"num_cpus": self.num_cpus, "max_restarts": 0, "max_task_retries": 0}
        if self.num_gpus:
            options["num_gpus"] = self.num_gpus
        if env:
            options["runtime_env"] = {"env_vars": env}
        return options


def resolve_address(address: str | None) -> str | None:
    """`address`, else ``RAY_ADDRESS`` (set by ``ray job submit``), else None for a local cluster."""
    if address == "local":
        return None
    if address:
        return address
    return os.environ.get("RAY_ADDRESS") or None


def check_reachable(address: str) -> None:
    """Fail fast, with one line, when ``host:port`` (or ``ray://host:port``) does not answer.

    ``auto`` is left to `ray.init`, which finds the cluster started on this machine.
    """
    if address == "auto":
        return
    if address.startswith(("http://", "https://")):
        raise UsageError(f"--address {address!r} is a dashboard (job API) URL; pass the GCS address "
                         "host:6379, ray://host:10001 or auto, or submit with `ray job submit`")
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise UsageError(f"--address {address!r} is not host:port, ray://host:port or auto; e.g. 10.0.0.5:6379")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=_REACH_TIMEOUT_S):
            pass
    except OSError as exc:
        raise UsageError(f"cannot reach Ray at {address!r} ({exc.strerror or exc}); start the cluster "
                         "(`ray start --head` or `ray up cluster.yaml`) or drop --address for a local one") from None


def connect(address: str | None, *, num_cpus: int | None = None) -> bool:
    """Make sure this process is connected to Ray.

    Args:
        address: a cluster address, or None/"local" for a local cluster (``RAY_ADDRESS``
            is honoured when `address` is None).
        num_cpus: CPU slots for a local cluster (default: the machine's cores).

    Returns:
        True when this call started Ray (the caller then calls `ray.shutdown()`),
        False when Ray was already initialised in this process.

    Raises:
        UsageError: the address cannot be reached or is not a Ray cluster.
    """
    import ray

    if ray.is_initialized():
        log.debug("using the Ray connection this process already has")
        return False
    target = resolve_address(address)
    if target is None:
        cpus = max(os.cpu_count() or 1, num_cpus or 0)
        # "local" always starts a new private cluster; None would join any cluster
        # another process started on this machine.
        # No dashboard: no UI and no job API (which would run submitted code). Its host
        # is pinned to loopback too, so that turning it on never exposes it.
        ray.init(address="local", include_dashboard=False, dashboard_host="127.0.0.1", num_cpus=cpus,
                 logging_level=logging.WARNING)
        log.info("started a local Ray cluster (%d CPU slots, %g GPUs)", cpus,
                 ray.cluster_resources().get("GPU", 0))
        return True
    check_reachable(target)
    try:
        ray.init(address=target, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise UsageError(f"cannot connect to Ray at {target!r}: {' '.join(str(exc).split())[:300]}; "
                         "check the address or drop --address for a local cluster") from None
    log.info("connected to Ray at %s", target)
    return True


def worker_plan(spec: SweepSpec, cluster_gpus: float, *, remote: bool = False) -> WorkerPlan:
    """Actors for `spec` on a cluster that has `cluster_gpus` GPUs right now.

    Args:
        remote: the cluster was joined, not started here. A joined cluster without
            GPUs is most likely one that autoscales from zero, where CPU actors are
            not what anyone wants, so the choice must be explicit there.

    Raises:
        UsageError: GPU actors were asked for, the cluster has none yet and no
            ``--workers`` count says how many to wait for; or a joined cluster has
            no GPUs and ``--gpus-per-worker`` is not given.
    """
    gpw = spec.gpus_per_worker
    if gpw is None and remote and cluster_gpus == 0:
        raise UsageError("the Ray cluster has no GPUs now; pass --gpus-per-worker 1 --workers N to start N GPU "
                         "actors (an autoscaling cluster adds the nodes), or --gpus-per-worker 0 for CPU actors")
    if gpw is None:
        gpw = 1.0 if cluster_gpus > 0 else 0.0
    if gpw > 0:
        fit = math.floor(cluster_gpus / gpw + 1e-9)
        count = spec.workers or fit
        if count < 1:
            raise UsageError(f"--gpus-per-worker {gpw:g} but the cluster has {cluster_gpus:g} GPUs now; "
                             "pass --workers N to wait for autoscaled GPU nodes, or --gpus-per-worker 0 "
                             "for CPU actors")
        if count > fit:
            log.warning("%d workers of %g GPU(s) asked for, %d fit now; the rest start when GPUs appear",
                        count, gpw, fit)
        return WorkerPlan(count=count, num_gpus=gpw)
    return WorkerPlan(count=spec.workers or DEFAULT_CPU_WORKERS, num_gpus=0,
                      env_vars={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})


def cluster_gpus() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0))
