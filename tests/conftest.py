"""Session-wide fixtures: one local multi-node Ray cluster for every Ray test.

`ray_cluster` starts `ray.cluster_utils.Cluster` once per test session: a head
node that holds no GPUs and two worker nodes with two logical GPUs each, then
connects this process with `ray.init`. Tests that add or remove nodes must put
the node set back as they found it (`restore_nodes` helps). Starting the cluster
costs a few seconds, so tests that need Ray share it instead of starting their own.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

WORKER_NODES = 2
GPUS_PER_NODE = 2
CPUS_PER_NODE = 2


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[object]:
    """A head (1 CPU, no GPU) and two worker nodes (2 CPUs, 2 logical GPUs each), connected."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    # Hosts on logical GPUs fall back to the CPU; one thread each keeps four of them
    # from oversubscribing a small machine. The nodes' processes inherit this.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0})
    for _ in range(WORKER_NODES):
        cluster.add_node(num_cpus=CPUS_PER_NODE, num_gpus=GPUS_PER_NODE)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level=logging.WARNING)
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


@contextmanager
def restore_nodes(cluster) -> Iterator[None]:
    """Run a block that removes worker nodes; afterwards, add nodes back until the original count.

    Usage: ``with restore_nodes(ray_cluster): ray_cluster.remove_node(node, allow_graceful=False)``.
    """
    before = len(cluster.worker_nodes)
    try:
        yield
    finally:
        while len(cluster.worker_nodes) < before:
            cluster.add_node(num_cpus=CPUS_PER_NODE, num_gpus=GPUS_PER_NODE)
        cluster.wait_for_nodes()


@pytest.fixture
def ray_nodes_restored(ray_cluster):
    """`ray_cluster`, with its worker nodes put back after the test (for tests that remove nodes)."""
    with restore_nodes(ray_cluster):
        yield ray_cluster
