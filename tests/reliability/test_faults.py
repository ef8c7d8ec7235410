"""Faults inside a sweep, through the real `tilesweep run` on the session's multi-node Ray cluster.

Faults come from the hosts' own injection hook (``TILESWEEP_INJECT`` in the driver's
environment, which the driver forwards to its actors) and from damage done to the
result files on disk. Every test ends with the invariant check.

Faults covered elsewhere, with the same invariant check at their end: an actor
SIGKILLed mid-config, a worker node removed mid-sweep, a host that crashes or raises
(`tests/orchestrator/test_driver_ray.py`) and Ctrl-C then resume
(`tests/orchestrator/test_processes.py`).
"""

from __future__ import annotations

import json
import logging
import pickle
import time
from pathlib import Path

import polars as pl
import pytest

from orchestrator import cli
from store.invariant import attempts
from store.scan import scan

pytestmark = pytest.mark.ray

FAST = ["--warmup", "0", "--repeats", "2", "--workers", "2"]


def wait_gone(pids: set[int], timeout: float = 30.0) -> set[int]:
    """`pids` still alive after waiting up to `timeout` seconds for them to exit."""
    deadline = time.monotonic() + timeout
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        alive = {p for p in alive if Path(f"/proc/{p}").exists() and _not_zombie(p)}
        time.sleep(0.1)
    return alive


def _not_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def label(row) -> str:
    return f"{row['tiling_rows']}x{row['tiling_cols']}"


def test_out_of_memory_on_chosen_tilings_fails_those_rows_and_the_actor_goes_on(
        ray_cluster, tmp_path, monkeypatch, capsys, assert_invariant):
    monkeypatch.setenv("TILESWEEP_INJECT", "oom@1x3,oom@2x2")
    code = cli.main(["run", "--results", str(tmp_path), "--run-id", "oom", "--tilings", "1x1,1x2,1x3,2x2", *FAST])
    err = capsys.readouterr().err
    assert code == 0 and "2 config(s) failed" in err
    rows = scan(tmp_path / "oom").collect()
    failed = rows.filter(pl.col("status") == "failed")
    ok = rows.filter(pl.col("status") == "ok")
    assert sorted(label(r) for r in failed.iter_rows(named=True)) == ["1x3", "2x2"]
    assert set(failed["error_type"]) == {"OutOfMemoryError"} and all("out of memory" in e for e in failed["error"])
    assert sorted(label(r) for r in ok.iter_rows(named=True)) == ["1x1", "1x1", "1x2", "1x2"]
    manifest = json.loads((tmp_path / "oom" / "manifest.json").read_text())
    last = manifest["invocations"][-1]
    # Not retried (an OOM repeats), and no actor was replaced: at most the two first ones started.
    assert (last["ok"], last["failed"], last["retries"]) == (2, 2, 0) and len(manifest["hosts"]) <= 2
    assert set(rows["attempt"]) == {1} and set(rows["worker_id"]) <= set(manifest["hosts"])
    # The actor still usable: one that hit an OOM measured an ok config afterwards.
    after_oom = [o for f in failed.iter_rows(named=True) for o in ok.iter_rows(named=True)
                 if o["worker_id"] == f["worker_id"] and o["started_at"] >= f["finished_at"]]
    assert after_oom
    assert_invariant(tmp_path, "oom")


@pytest.mark.extended  # test_driver_ray's timeouts test kills and retries a hung config too
def test_a_hung_config_is_killed_at_the_timeout_and_retried(ray_cluster, tmp_path, monkeypatch, assert_invariant):
    monkeypatch.setenv("TILESWEEP_INJECT", "hang@1x2/1")  # hangs on its first attempt only
    assert cli.main(["run", "--results", str(tmp_path), "--run-id", "hang", "--tilings", "1x1,1x2,2x1", *FAST,
                     "--config-timeout", "5"]) == 0
    run_dir = tmp_path / "hang"
    rows = scan(run_dir).collect()
    by_label = {label(r): r["config_id"] for r in rows.iter_rows(named=True)}
    assert set(rows["status"]) == {"ok"} and rows.height == 6
    # The hung dispatch wrote nothing; its retry is attempt 2.
    assert attempts(run_dir)[by_label["1x2"]] == [2]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["invocations"][-1]["retries"] >= 1
    # The hung actor (it had started, so it is among the hosts) is gone, with every other one of the run.
    assert not wait_gone({h["pid"] for h in manifest["hosts"].values()})
    assert_invariant(tmp_path, "hang")


class _Touch:
    """Unpickling this creates a file: a results file that were ever unpickled would leave the marker."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_a_damaged_part_is_reported_once_ignored_and_its_config_measured_again(
        run_copy, tmp_path, caplog, capsys, assert_invariant):
    results, run_id = run_copy
    run_dir = results / run_id
    truncated, garbage, intact = sorted(attempts(run_dir))
    part_a = run_dir / f"part-{truncated}-1.parquet"
    part_a.write_bytes(part_a.read_bytes()[:300])
    # A part replaced by a pickle whose loading would create a file: results are never unpickled.
    marker, control = tmp_path / "unpickled", tmp_path / "control"
    pickle.loads(pickle.dumps(_Touch(control)))
    assert control.exists()  # the payload is live
    (run_dir / f"part-{garbage}-1.parquet").write_bytes(pickle.dumps(_Touch(marker)))
    damaged = {truncated: run_dir / f"part-{truncated}-1.parquet", garbage: run_dir / f"part-{garbage}-1.parquet"}
    original = {cid: p.read_bytes() for cid, p in damaged.items()}

    caplog.set_level(logging.WARNING, logger="orchestrator")
    for _ in range(2):  # readers: status twice and a query; one warning per damaged file in all
        assert cli.main(["status", "--results", str(results), "--run-id", run_id]) == 0
    assert cli.main(["query", str(results), "SELECT count(*) AS n FROM results"]) == 0
    out = capsys.readouterr().out
    assert "1/3 done, 0 failed, 2 missing" in out and out.split()[-1] == "2"
    warnings = [r.getMessage() for r in caplog.records if "unreadable result part" in r.getMessage()]
    assert len(warnings) == 2 and all("measures it again" in w for w in warnings)
    assert {next(n for n in map(str, damaged.values()) if n in w) for w in warnings} == set(map(str, damaged.values()))
    assert cli.main(["status", "--results", str(results), "--run-id", run_id, "--check"]) == 1
    assert all(p.exists() for p in damaged.values())  # readers never rename

    # Damage inside the last part's pages, its footer intact: readers cannot see it coming, but
    # status still fails in one line that names the fix, and the driver's full check finds it.
    part_c = run_dir / f"part-{intact}-1.parquet"
    data = bytearray(part_c.read_bytes())
    footer = int.from_bytes(data[-8:-4], "little") + 8
    data[100:len(data) - footer - 100] = bytes(b ^ 0xFF for b in data[100:len(data) - footer - 100])
    part_c.write_bytes(bytes(data))
    damaged[intact], original[intact] = part_c, bytes(data)
    capsys.readouterr()
    assert cli.main(["status", "--results", str(results), "--run-id", run_id]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and f"`tilesweep run --run-id {run_id} --results ROOT` moves damaged parts aside" in err[0]

    assert cli.main(["run", "--run-id", run_id, "--results", str(results), "--workers", "2"]) == 0
    # Moved aside with their bytes, and measured again under a new attempt.
    assert attempts(run_dir) == {truncated: [2], garbage: [2], intact: [2]}
    for cid, data in original.items():
        assert (run_dir / f"part-{cid}-1.parquet.corrupt").read_bytes() == data
    report = assert_invariant(results, run_id)
    assert report.counts["quarantined"] == 3 and report.counts["ok"] == 3
    assert not marker.exists()
    capsys.readouterr()
    assert cli.main(["status", "--results", str(results), "--run-id", run_id, "--check"]) == 0
    assert "3/3 done" in capsys.readouterr().out
