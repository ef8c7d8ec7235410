"""Whole processes: `make sweep` on a fresh clone, and Ctrl-C to a running `tilesweep run`.

Both start their own local Ray cluster, as a user's machine would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

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


def test_ctrl_c_stops_cleanly_and_the_run_resumes(ray_cluster, tmp_path, capsys):
    results = tmp_path / "results"
    run_dir = results / "cut"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # A session of its own, so the signal reaches the whole group as a terminal's Ctrl-C does.
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "run", "--results", str(results), "--run-id", "cut",
         "--tilings", "1x1,1x2,1x3,2x1,2x2", "--warmup", "0", "--repeats", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, env=env)
    try:
        deadline = time.monotonic() + 180
        while not list(run_dir.glob("part-*.parquet")) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err[-3000:]
    assert f"Resume with:\n  tilesweep run --run-id cut --results {results}" in err
    written = sorted(run_dir.glob("part-*.parquet"))
    assert 1 <= len(written) < 5 and not list(run_dir.glob(".tmp-*"))
    for path in written:  # every file left behind is whole
        assert pq.read_table(path).schema.equals(SCHEMA, check_metadata=False)
    assert json.loads((run_dir / "manifest.json").read_text())["run_id"] == "cut"
    before = {p.name for p in written}
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
