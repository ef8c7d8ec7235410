"""Connecting to Ray and sizing the worker actors.

`connect` either joins a running cluster (``--address``, or ``RAY_ADDRESS`` as set
inside ``ray job submit``) or starts a private local one: no dashboard (no UI, no job
API; its host pinned to 127.0.0.1), quiet logs, enough CPU slots for the CPU
actors. An address that cannot be joined is one `UsageError` line (the CLI's exit 2),
raised before anything is written: a port that does not answer, or answers but not
as Ray (`check_reachable`, plain sockets, a few seconds at most), and a cluster that
refuses this client's token (`connect`). Ray's own log lines of that attempt are
held back and only the cause is reported; without that, a wrong address cost 20
lines of Ray warnings and 30 s, and a port that is not Ray's hung for minutes.

`worker_plan` decides the actors: one per ``gpus_per_worker`` GPUs when the
cluster has GPUs (logical ones included), else ``--workers`` CPU actors (2 by
default) pinned to one thread each, so two actors on two cores do not fight.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from orchestrator.spec import SweepSpec
from tilesweep.errors import UsageError

log = logging.getLogger(__name__)

DEFAULT_CPU_WORKERS = 2
# A live GCS answers in milliseconds; an address that takes longer is a mistake.
_REACH_TIMEOUT_S = 3.0
# The client connection preface of HTTP/2 (RFC 9113 3.4): Ray's GCS and its client
# server are gRPC, and answer it with a SETTINGS frame (type 4).
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_HTTP2_SETTINGS = 0x4
_AUTH_FIX = ("set RAY_AUTH_MODE=token and give this machine the cluster's token: RAY_AUTH_TOKEN, "
             "RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token (`ray get-auth-token` on the head prints it)")


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
    """Fail fast, with one line, when ``host:port`` (or ``ray://host:port``) is not a Ray endpoint.

    Plain sockets, `_REACH_TIMEOUT_S` at most for each step: a TCP connect, then the
    HTTP/2 preface, which a Ray GCS or Ray client server (both gRPC) answers with a
    SETTINGS frame. A port that refuses, times out or answers anything else (the
    dashboard, a web server, a database) is refused here instead of in `ray.init`,
    which retries such an address for minutes. With ``RAY_USE_TLS`` set the preface
    would be refused by a real cluster, so only the TCP connect is checked.
    ``auto`` is left to `ray.init`, which finds the cluster started on this machine.

    Raises:
        UsageError: malformed, unreachable, or not Ray (the CLI exits 2).
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
        with socket.create_connection((host.strip("[]"), int(port)), timeout=_REACH_TIMEOUT_S) as sock:
            if os.environ.get("RAY_USE_TLS", "0").lower() in ("0", "false", ""):
                answer = _http2_answer(sock)
                if len(answer) < 4 or answer[3] != _HTTP2_SETTINGS:
                    seen = answer[:16].decode("ascii", "replace").split("\r")[0] or "nothing"
                    raise UsageError(f"{address!r} answers but is not Ray (it replied {seen!r}, not gRPC); pass the "
                                     "GCS address (host:6379 by default; `ray start --head` prints it), "
                                     "ray://host:10001 or auto")
    except OSError as exc:
        raise UsageError(f"cannot reach Ray at {address!r} ({exc.strerror or exc}); start the cluster "
                         "(`ray start --head` or `ray up cluster.yaml`) or drop --address for a local one") from None


def _http2_answer(sock: socket.socket) -> bytes:
    """The first frame header (9 bytes) a server sends after the HTTP/2 preface; fewer if it stops or stalls."""
    sock.sendall(_HTTP2_PREFACE)
    answer = b""
    try:
        while len(answer) < 9:
            chunk = sock.recv(9 - len(answer))
            if not chunk:
                break
            answer += chunk
    except TimeoutError:
        pass
    return answer


@contextmanager
def _ray_output_held(what: str) -> Iterator[list[str]]:
    """Hold back what Ray prints to stderr (file descriptor 2: its C++ core logs there) in the block.

    Yields a list that holds the captured text once the block ends; it is also logged
    at debug level. Only for joining a cluster, which starts no process that would
    inherit the redirected descriptor.
    """
    held: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield held
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            held.append(sink.read().decode("utf-8", "replace"))
            if held[0].strip():
                log.debug("Ray's output while %s:\n%s", what, held[0].rstrip())


def _check_token(target: str) -> None:
    """Refuse a cluster that rejects this client's token, in milliseconds instead of `ray.init`'s 20 retries.

    Ray 2.60 turns token authentication on for every cluster started with ``ray start``,
    and a client joining by explicit address sends a token only with RAY_AUTH_MODE=token.
    `ray._raylet.GcsClient` is not public API: where it is missing or behaves otherwise,
    the check is skipped and `connect` reports what `ray.init` says.
    """
    try:
        from ray._raylet import GcsClient
    except ImportError:
        return
    try:
        with _ray_output_held(f"checking the token of {target}"):
            GcsClient(address=target)
    except _auth_errors():
        mode = os.environ.get("RAY_AUTH_MODE", "unset")
        raise UsageError(f"Ray at {target!r} refused this client's token (RAY_AUTH_MODE is {mode}); "
                         f"{_AUTH_FIX}") from None
    except Exception as exc:  # noqa: BLE001 - a private API: anything else is left to ray.init
        log.debug("token check of %s skipped: %s: %s", target, type(exc).__name__, exc)


def _auth_errors() -> tuple[type[BaseException], ...]:
    """``ray.exceptions.AuthenticationError`` where this Ray has token authentication (2.52 on)."""
    from ray import exceptions

    error = getattr(exceptions, "AuthenticationError", None)
    return (error,) if error is not None else ()


def _one_line(text: str, limit: int = 300) -> str:
    return " ".join(text.split())[:limit]


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
        UsageError: the address cannot be reached, is not a Ray cluster, or refuses
            this client's token (the CLI exits 2).
    """
    import ray

    if not sys.stderr.isatty():
        # The lines Ray forwards from the actors carry colour codes; a log file or a pipe wants none.
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
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
    if not target.startswith("ray://") and target != "auto":
        _check_token(target)
    refused = _auth_errors()
    failure: BaseException | None = None
    with _ray_output_held(f"connecting to {target}") as held:
        try:
            ray.init(address=target, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError, *refused) as exc:
            failure = exc
    if failure is not None:
        if isinstance(failure, refused) or "Unauthenticated" in (held[0] if held else ""):
            raise UsageError(f"Ray at {target!r} refused this client's token; {_AUTH_FIX}") from None
        raise UsageError(f"cannot connect to Ray at {target!r}: {_one_line(str(failure))}; "
                         "check the address or drop --address for a local cluster") from None
    log.info("connected to Ray at %s", target)
    return True


def worker_plan(spec: SweepSpec, cluster_gpus: float, *, remote: bool = False,
                fixed: bool = False) -> WorkerPlan:
    """Actors for `spec` on a cluster that has `cluster_gpus` GPUs right now.

    Args:
        remote: the cluster was joined, not started here. A joined cluster without
            GPUs is most likely one that autoscales from zero, where CPU actors are
            not what anyone wants, so the choice must be explicit there.
        fixed: the cluster can never gain GPUs (the local one this process started):
            GPU actors that do not fit now would wait out the start timeout for
            nothing, so asking for them is an error at once.

    Raises:
        UsageError: GPU actors were asked for, the cluster has none yet and no
            ``--workers`` count says how many to wait for; a joined cluster has
            no GPUs and ``--gpus-per-worker`` is not given; or a `fixed` cluster
            cannot place the GPU actors asked for.
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
        if fixed and not fit:
            raise UsageError(f"--gpus-per-worker {gpw:g} asks for GPUs, but this local cluster has "
                             f"{cluster_gpus:g} and cannot gain any; pass --gpus-per-worker 0 for CPU actors, or "
                             "--address of a cluster with GPUs")
        if fixed and count > fit:
            raise UsageError(f"--workers {count} of --gpus-per-worker {gpw:g} need {count * gpw:g} GPU(s), but "
                             f"this local cluster has {cluster_gpus:g} and cannot gain any; pass --workers {fit} "
                             "or fewer")
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
