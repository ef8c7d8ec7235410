"""Integration: the driver under real failures of real hosts (the tiny Molmo2 in Ray actors).

Faults come from the hosts' own injection hook (`workers.faults`, ``TILESWEEP_INJECT``
in the actors' environment) and from SIGKILL sent to an actor's process: nothing is mocked.
Each test ends with the invariant check (`store.invariant`), as the reliability
suite's do; these runs have no manifest, so the planned configs are passed in.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest
import ray.cloudpickle

from orchestrator.cluster import cluster_gpus, worker_plan
from orchestrator.driver import Driver
from orchestrator.plan import plan
from orchestrator.spec import build_spec
from store import invariant
from store.runs import RunStore
from store.scan import scan
from tilings import PROFILES
from workers import ModelHost

pytestmark = pytest.mark.ray

# The test module is not importable in Ray's workers; its classes travel by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


class MisbehavingHost(ModelHost):
    """The real host, except that 1x4 raises out of `measure` and 2x2 returns no records."""

    def measure(self, config):
        if (config.tiling_rows, config.tiling_cols) == (1, 4):
            raise RuntimeError("host bug on 1x4")
        if (config.tiling_rows, config.tiling_cols) == (2, 2):
            return []
        return super().measure(config)


def make_driver(tmp_path, run_id, overrides, env, host_cls=None):
    spec = build_spec(None, {"results": str(tmp_path), "run_id": run_id, "warmup": 0, **overrides})
    store = RunStore(spec.results, run_id)
    driver = Driver(spec, store, worker_plan(spec, cluster_gpus()), actor_env=env, host_cls=host_cls)
    profile = PROFILES["molmo2"]
    return driver, plan(spec, profile), profile


def test_actor_killed_mid_config_is_replaced_and_the_config_measured_once(ray_cluster, tmp_path):
    # 1x4 hangs on its first attempt, so it is surely in flight when its process is killed.
    driver, configs, profile = make_driver(
        tmp_path, "kill", {"tilings": "1x1,1x2,1x3,1x4,2x1,2x2", "repeats": 2, "workers": 2},
        {"TILESWEEP_INJECT": "hang@1x4/1"})
    killed: list[dict] = []

    def killer():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            for task in driver.in_flight():
                if task["tiling"] == "1x4" and task["attempt"] == 1 and task["seconds"] > 0.5 and task["pid"]:
                    os.kill(task["pid"], signal.SIGKILL)
                    killed.append(task)
                    return
            time.sleep(0.1)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    outcome = driver.run(configs, profile)
    thread.join(5)
    assert killed, "the hung config was never seen in flight"
    assert not outcome.interrupted and outcome.ok == 6 and outcome.failed == 0 and outcome.retries == 1
    run_dir = tmp_path / "kill"
    attempts = invariant.attempts(run_dir)
    assert len(attempts) == 6
    # The killed dispatch wrote nothing; its retry has a new attempt number.
    assert attempts[killed[0]["config_id"]] == [2]
    assert all(a == [1] for cid, a in attempts.items() if cid != killed[0]["config_id"])
    rows = scan(run_dir).collect()
    assert rows.height == 12 and set(rows["status"]) == {"ok"}
    assert rows.select("config_id", "repeat").is_duplicated().sum() == 0
    retried = rows.filter(rows["config_id"] == killed[0]["config_id"])
    assert set(retried["worker_id"]).isdisjoint({None}) and retried["attempt"].to_list() == [2, 2]
    report = invariant.check(tmp_path, "kill", configs)
    assert report.ok and report.counts["ok"] == 6, report.problems


def test_timeouts_crashes_and_per_config_failures(ray_cluster, tmp_path):
    inject = "hang@1x2/1,crash@1x3,oom@2x1"
    driver, configs, profile = make_driver(
        tmp_path, "faults", {"tilings": "1x1,1x2,1x3,1x4,2x1,2x2", "repeats": 1, "workers": 2, "max_attempts": 2,
                             "config_timeout_s": 12}, {"TILESWEEP_INJECT": inject}, host_cls=MisbehavingHost)
    by_tiling = {c.label(): c.config_id for c in configs}
    outcome = driver.run(configs, profile)
    # 1x2: hung, killed at the timeout, then ok; 1x3: crashed twice, a failed row; 2x1: OOM, failed,
    # not retried; 1x4: the host raised, 2x2: no records - failed rows, the actor kept.
    assert (outcome.ok, outcome.failed, outcome.retries) == (2, 4, 3)
    run_dir = tmp_path / "faults"
    attempts = invariant.attempts(run_dir)
    assert attempts == {by_tiling["1x1"]: [1], by_tiling["1x2"]: [2], by_tiling["1x3"]: [2], by_tiling["2x1"]: [1],
                        by_tiling["1x4"]: [1], by_tiling["2x2"]: [1]}
    rows = {r["config_id"]: r for r in scan(run_dir).collect().iter_rows(named=True)}
    crashed = rows[by_tiling["1x3"]]
    assert crashed["status"] == "failed" and crashed["error_type"] == "WorkerLost"
    assert crashed["error"].startswith("lost 2 time(s), last: actor died")
    assert crashed["crops"] == 4 and crashed["node_id"] and crashed["profile"] == "molmo2"
    assert rows[by_tiling["2x1"]]["status"] == "failed" and rows[by_tiling["2x1"]]["error_type"] == "OutOfMemoryError"
    assert rows[by_tiling["1x4"]]["error_type"] == "RuntimeError" and "host bug on 1x4" in rows[by_tiling["1x4"]]["error"]
    assert rows[by_tiling["2x2"]]["error_type"] == "InvalidRecords" and "no records" in rows[by_tiling["2x2"]]["error"]
    assert rows[by_tiling["1x2"]]["status"] == "ok" and rows[by_tiling["1x1"]]["status"] == "ok"
    report = invariant.check(tmp_path, "faults", configs)
    assert report.ok and (report.counts["ok"], report.counts["failed"]) == (2, 4), report.problems


def test_node_lost_mid_sweep_its_configs_are_requeued(ray_nodes_restored, tmp_path):
    cluster = ray_nodes_restored
    driver, configs, profile = make_driver(
        tmp_path, "nodeloss", {"tilings": "1x1,1x2,1x3,1x4,1x5,2x1,2x2,2x3", "repeats": 2}, {})
    nodes = {n.node_id: n for n in cluster.worker_nodes}
    removed: list[dict] = []

    def remove_a_busy_node():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            busy = [t for t in driver.in_flight() if t["node_id"] in nodes and t["seconds"] > 0.2]
            if busy:
                removed.extend(t for t in driver.in_flight() if t["node_id"] == busy[0]["node_id"])
                cluster.remove_node(nodes[busy[0]["node_id"]], allow_graceful=False)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=remove_a_busy_node, daemon=True)
    thread.start()
    outcome = driver.run(configs, profile)
    thread.join(5)
    assert removed, "no config was seen in flight on a worker node"
    dead_node = removed[0]["node_id"]
    assert outcome.ok == 8 and outcome.failed == 0 and outcome.retries >= 1
    rows = scan(tmp_path / "nodeloss").collect()
    assert rows["config_id"].n_unique() == 8 and rows.height == 16 and set(rows["status"]) == {"ok"}
    assert rows.select("config_id", "repeat").is_duplicated().sum() == 0
    lost = rows.filter(rows["config_id"].is_in([t["config_id"] for t in removed]))
    # What was in flight on the lost node was measured again, elsewhere, under a new attempt.
    assert lost.height > 0 and dead_node not in set(lost["node_id"]) and set(lost["attempt"]) == {2}
    report = invariant.check(tmp_path, "nodeloss", configs)
    assert report.ok and report.counts["ok"] == 8, report.problems
