"""Sizing the host actors and resolving the Ray address (no cluster needed)."""

from __future__ import annotations

import logging

import pytest

from orchestrator.cluster import WorkerPlan, check_reachable, resolve_address, worker_plan
from orchestrator.spec import SweepSpec
from tilesweep.errors import UsageError


def test_without_gpus_two_single_threaded_cpu_actors():
    plan = worker_plan(SweepSpec(), 0)
    assert (plan.count, plan.num_gpus, plan.num_cpus) == (2, 0, 1)
    options = plan.actor_options()
    assert options["runtime_env"]["env_vars"]["OMP_NUM_THREADS"] == "1"
    assert "num_gpus" not in options and options["max_restarts"] == 0 and options["max_task_retries"] == 0
    assert worker_plan(SweepSpec(workers=5), 0).count == 5


def test_one_actor_per_gpu_or_per_gpus_per_worker():
    assert (worker_plan(SweepSpec(), 4).count, worker_plan(SweepSpec(), 4).num_gpus) == (4, 1)
    plan = worker_plan(SweepSpec(gpus_per_worker=2), 5)
    assert (plan.count, plan.num_gpus) == (2, 2)
    assert worker_plan(SweepSpec(gpus_per_worker=0.5), 2).count == 4
    assert worker_plan(SweepSpec(gpus_per_worker=0), 8).num_gpus == 0  # CPU actors on request
    assert "runtime_env" not in worker_plan(SweepSpec(), 4).actor_options()


def test_more_workers_than_gpus_wait_for_them(caplog):
    caplog.set_level(logging.WARNING)
    assert worker_plan(SweepSpec(workers=8, gpus_per_worker=1), 2).count == 8
    assert "8 workers of 1 GPU(s) asked for, 2 fit now" in caplog.text
    assert worker_plan(SweepSpec(workers=8, gpus_per_worker=1), 0, remote=True).count == 8


def test_gpu_actors_on_a_cluster_without_gpus_must_be_explicit():
    with pytest.raises(UsageError, match="pass --workers N to wait for autoscaled GPU nodes"):
        worker_plan(SweepSpec(gpus_per_worker=1), 0)
    with pytest.raises(UsageError, match="the Ray cluster has no GPUs now; pass --gpus-per-worker 1 --workers N"):
        worker_plan(SweepSpec(workers=4), 0, remote=True)
    assert worker_plan(SweepSpec(gpus_per_worker=0), 0, remote=True).count == 2


def test_gpu_actors_a_local_cluster_cannot_place_are_an_error_at_once():
    # The local cluster a sweep starts has no autoscaler: waiting out the start timeout gains nothing.
    with pytest.raises(UsageError, match=r"^--gpus-per-worker 0.5 asks for GPUs, but this local cluster has 0 "
                                         r"and cannot gain any; pass --gpus-per-worker 0 for CPU actors"):
        worker_plan(SweepSpec(gpus_per_worker=0.5, workers=1), 0, fixed=True)
    with pytest.raises(UsageError, match=r"^--workers 5 of --gpus-per-worker 1 need 5 GPU\(s\), but this local "
                                         r"cluster has 2 and cannot gain any; pass --workers 2 or fewer$"):
        worker_plan(SweepSpec(gpus_per_worker=1, workers=5), 2, fixed=True)
    assert worker_plan(SweepSpec(gpus_per_worker=0.5, workers=4), 2, fixed=True).count == 4  # fits: no error
    # a joined cluster may autoscale: the same request waits there
    assert worker_plan(SweepSpec(gpus_per_worker=0.5, workers=1), 0, remote=True).count == 1


def test_extra_env_reaches_the_actors():
    options = WorkerPlan(count=1, num_gpus=1).actor_options({"TILESWEEP_INJECT": "oom@1x2"})
    assert options["runtime_env"] == {"env_vars": {"TILESWEEP_INJECT": "oom@1x2"}}


def test_address_resolution(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert resolve_address(None) is None and resolve_address("local") is None
    assert resolve_address("10.0.0.5:6379") == "10.0.0.5:6379"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.9:6379")  # as inside `ray job submit`
    assert resolve_address(None) == "10.0.0.9:6379" and resolve_address("local") is None


@pytest.mark.parametrize("address, needle", [
    ("http://127.0.0.1:8265", r"is a dashboard \(job API\) URL"),
    ("nohost", "is not host:port, ray://host:port or auto"),
    ("host:port", "is not host:port"),
])
def test_bad_addresses_are_usage_errors(address, needle):
    with pytest.raises(UsageError, match=needle):
        check_reachable(address)
