"""Local Ray clusters of a chosen shape, started and stopped around one benchmark."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

from benchmarks.harness import REPO_ROOT

log = logging.getLogger(__name__)


@dataclass(kw_only=True, frozen=True, slots=True)
class ClusterShape:
    """``nodes`` Ray nodes (the head included), each with logical GPUs and CPUs."""

    nodes: int
    gpus_per_node: int = 0
    cpus_per_node: int = 1

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise ValueError(f"ClusterShape.nodes={self.nodes}: need at least 1 node")
        if self.gpus_per_node < 0 or self.cpus_per_node < 0:
            raise ValueError(
                f"ClusterShape gpus_per_node={self.gpus_per_node}, cpus_per_node={self.cpus_per_node}: must be >= 0"
            )

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node


def worker_env() -> None:
    """Let every Ray worker import this repository and keep one thread per op.

    Ray's nodes inherit the environment of the process that starts them; the
    repository root on PYTHONPATH lets actors unpickle `benchmarks.simhost` even
    when the benchmark is not started from the root.
    """
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(REPO_ROOT) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *paths])
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@contextlib.contextmanager
def local_cluster(shape: ClusterShape) -> Iterator[tuple[str, float]]:
    """Start a multi-node local cluster, connect this process; yield (address, start-up seconds).

    Uses `ray.cluster_utils.Cluster`, the real raylets and GCS, with logical GPUs.
    The cluster is shut down on exit, also on error.
    """
    import ray
    from ray.cluster_utils import Cluster

    worker_env()
    t0 = time.perf_counter()
    node_args = {"num_cpus": shape.cpus_per_node, "num_gpus": shape.gpus_per_node}
    cluster = Cluster(initialize_head=True, head_node_args={**node_args, "include_dashboard": False})
    try:
        for _ in range(shape.nodes - 1):
            cluster.add_node(**node_args)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False, logging_level=logging.WARNING)
        startup = time.perf_counter() - t0
        log.info("local cluster %s up in %.1f s", shape, startup)
        yield cluster.address, startup
    finally:
        ray.shutdown()
        cluster.shutdown()
