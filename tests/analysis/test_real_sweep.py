"""`query` and `report` on a real tiny sweep: `tilesweep run` with the tiny Molmo2 on a local Ray cluster."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from analysis import latency_model, query
from orchestrator import cli

_spec = importlib.util.spec_from_file_location("report_checks", Path(__file__).with_name("report_checks.py"))
checks = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("report_checks", checks)
_spec.loader.exec_module(checks)

pytestmark = [pytest.mark.ray, pytest.mark.slow]

TILINGS = ("1x1", "1x2", "2x1", "1x3")
REPEATS = 2


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """One real sweep, in its own process (its own private Ray cluster), shared by the module."""
    root = tmp_path_factory.mktemp("real")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["OMP_NUM_THREADS"] = "1"
    argv = [sys.executable, "-m", "orchestrator.cli", "run", "--tilings", ",".join(TILINGS),
            "--repeats", str(REPEATS), "--warmup", "1", "--workers", "1", "--address", "local",
            "--results", str(root), "--run-id", "tiny"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return root


def test_query_over_a_real_sweep(results, capsys):
    rc = cli.main(["query", str(results), "SELECT tiling, n, status, vision_median_ms, llm_prefill_median_ms, "
                   "total_median_ms FROM summary ORDER BY tiling", "--format", "json"])
    rows = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert sorted(r["tiling"] for r in rows) == sorted(TILINGS)
    for r in rows:
        assert r["n"] == REPEATS and r["status"] == "ok"
        assert 0 < r["vision_median_ms"] < r["total_median_ms"]
        assert 0 < r["llm_prefill_median_ms"] < r["total_median_ms"]

    rc = cli.main(["query", str(results), "SELECT count(*) AS n FROM results", "--format", "csv"])
    assert rc == 0 and capsys.readouterr().out.split() == ["n", str(REPEATS * len(TILINGS))]


def test_question_tables_on_real_records(results):
    lf = query.scan(results)
    assert query.missing(lf, [2, 3, 4, 5]).collect()["crops"].to_list() == [5]
    add = query.additivity(lf).collect()
    gap = query.method_gap(lf).collect()
    assert add.height == gap.height == len(TILINGS)
    # The four timed stages are parts of one forward: they cannot add up to more than it.
    assert (add["stages_ms"] <= add["total_ms"] * 1.001).all()
    assert gap["hook_llm_ms"].is_not_null().all() and gap["sub_llm_ms"].is_not_null().all()
    model = latency_model.fit(lf)
    assert model.vision.n == len(TILINGS) and model.predict(400, 900)["total_ms"] > 0


def test_report_over_a_real_sweep(results, tmp_path):
    out = tmp_path / "report"
    assert cli.main(["report", str(results), "-o", str(out)]) == 0
    html = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    names = checks.check_images(out, html)
    assert len(names) == 4
    sections = checks.html_sections(html)
    for prefix in ("Summary", "Method gap", "Additivity"):
        heading = next(k for k in sections if k.startswith(prefix))
        assert checks.html_table_rows(sections[heading]) == len(TILINGS), heading
        assert checks.markdown_table_rows(md, heading) == len(TILINGS), heading
    env = sections["Environment"]
    # From the manifest (Ray's version, the host actor) and from the records (device).
    assert "<td>ray</td>" in env and "<td>hosts</td>" in env and "<td>device</td><td>cpu</td>" in env
    assert "Planned configs without an ok result" not in sections
