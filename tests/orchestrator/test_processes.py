"""Whole processes: `make sweep` on a fresh clone, and SIGTERM and SIGHUP to a running `tilesweep run`.

The first two start their own local Ray cluster, as a user's machine would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pyarrow.parquet as pq
import pytest
import ray

from orchestrator import cli
from store.invariant import check
from store.scan import scan
from store.schema import SCHEMA

pytestmark = pytest.mark.ray


@pytest.mark.slow
def test_make_sweep_on_a_fresh_clone_ends_with_the_summary_table(default_sweep):
    proc, clone = default_sweep.proc, default_sweep.clone  # `make sweep` in a fresh clone (tests/conftest.py)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = [p for p in (clone / "results").iterdir() if p.is_dir()]
    assert len(runs) == 1
    rows = scan(runs[0]).collect()
    assert rows["config_id"].n_unique() == 18 and set(rows["status"]) == {"ok"}
    assert set(rows["repeat"]) == {0, 1, 2}  # the default: 3 timed repeats
    lines = proc.stdout.strip().splitlines()
    title = next(i for i, line in enumerate(lines) if line.startswith(f"run {runs[0].name}: 18 config(s)"))
    # Ray or make may print after the table: the header and 18 rows follow the title.
    table = lines[title + 1:title + 20]
    assert table[0].split() == ["tiling", "family", "crops", "img_tok", "seq_tok", "n", "vision_ms", "proj_ms",
                                "llm_ms", "total_ms", "llm_sub_ms", "status"]
    assert len(table) == 19 and all(line.split()[-1] == "ok" and line.split()[5] == "3" for line in table[1:])


def _model_hosts_alive() -> list[dict]:
    deadline = time.monotonic() + 10  # a killed actor's state reaches the GCS a moment later
    while True:
        alive = [a for a in ray._private.state.actors().values()
                 if a["State"] != "DEAD" and a.get("ActorClassName") == "ModelHost"]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def _signal_when_invocations_exceed(run_dir, count: int, signum: int) -> threading.Thread:
    """A thread that sends `signum` to this process once the manifest records more than `count` invocations."""
    def invocations() -> int:
        try:
            return len(json.loads((run_dir / "manifest.json").read_text())["invocations"])
        except (OSError, ValueError):
            return 0

    def watch():
        deadline = time.monotonic() + 180
        while invocations() <= count and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # into the sweep: actors starting or measuring
        os.kill(os.getpid(), signum)
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_sigterm_and_sighup_stop_cleanly_and_the_run_resumes(ray_cluster, tmp_path, capsys):
    """SIGTERM (as `ray job stop` or Kubernetes send it) to a driver's process group, then SIGHUP in this process.

    Both drivers join the session's cluster, whose actors outlive a driver unless it kills them."""
    results = tmp_path / "results"
    run_dir = results / "cut"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "run", "--results", str(results), "--run-id", "cut",
         "--tilings", "1x1,1x2,1x3,2x1,2x2", "--warmup", "0", "--repeats", "2", "--address", ray_cluster.address,
         "--gpus-per-worker", "0", "--workers", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, env=env)
    try:
        deadline = time.monotonic() + 180
        while not list(run_dir.glob("part-*.parquet")) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, err[-3000:]  # 128 + SIGTERM, not Ray's own SIGTERM exit
    assert "stopped by SIGTERM; " in err and f"Resume with:\n  tilesweep run --run-id cut --results {results}" in err
    written = sorted(run_dir.glob("part-*.parquet"))
    assert 1 <= len(written) < 5 and not list(run_dir.glob(".tmp-*"))
    for path in written:  # every file left behind is whole
        assert pq.read_table(path).schema.equals(SCHEMA, check_metadata=False)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["run_id"] == "cut" and manifest["invocations"][-1]["interrupted"] is True
    assert not _model_hosts_alive()  # the stopped driver killed its actors
    # SIGHUP (a closed terminal) to a resume running in this process, on the session's cluster.
    previous = signal.signal(signal.SIGHUP, lambda *_: None)  # should the signal come late, it must not end pytest
    try:
        capsys.readouterr()
        _signal_when_invocations_exceed(run_dir, len(manifest["invocations"]), signal.SIGHUP)
        assert cli.main(["run", "--run-id", "cut", "--results", str(results), "--workers", "1"]) == 129
    finally:
        restored = signal.getsignal(signal.SIGHUP)
        signal.signal(signal.SIGHUP, previous)
    assert restored is not None and restored.__name__ == "<lambda>"  # the sweep put the handler back
    assert "stopped by SIGHUP" in capsys.readouterr().err
    assert not _model_hosts_alive()  # the sweep's actors were killed
    before = {p.name for p in run_dir.glob("part-*.parquet")}
    assert len(written) <= len(before) < 5 and not list(run_dir.glob(".tmp-*"))
    # The printed command resumes it; only the missing configs are measured.
    assert cli.main(["run", "--run-id", "cut", "--results", str(results)]) == 0
    after = {p.name for p in run_dir.glob("part-*.parquet")}
    assert before < after and len(after) == 5
    rows = scan(run_dir).collect()
    assert rows["config_id"].n_unique() == 5 and set(rows["status"]) == {"ok"} and set(rows["attempt"]) == {1}
    report = check(results, "cut")
    assert report.ok and report.counts["ok"] == 5, report.problems
    # Resuming a complete run measures nothing and needs no cluster.
    assert cli.main(["run", "--run-id", "cut", "--results", str(results)]) == 0
    assert {p.name for p in run_dir.glob("part-*.parquet")} == after
    # Changing what a config measures under the same run id is refused in one line, before any write.
    capsys.readouterr()
    assert cli.main(["run", "--run-id", "cut", "--results", str(results), "--repeats", "5"]) == 2
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert len(err_lines) == 1 and "was measured with repeats=2, not 5" in err_lines[0]
    assert {p.name for p in run_dir.glob("part-*.parquet")} == after
