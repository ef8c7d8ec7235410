"""`query` and `report` on a real tiny sweep: the session's `make sweep` (tiny Molmo2, local Ray, default families)."""

from __future__ import annotations

import importlib.util
import json
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

# The embedded default: molmo2's 1xk, 2xk and kx1 families (1x1 once), warm-up 1, 3 repeats.
TILINGS = ("1x1", "1x2", "1x3", "1x4", "1x5", "1x6", "1x7", "1x8", "2x1", "2x2", "2x3", "2x4",
           "3x1", "4x1", "5x1", "6x1", "7x1", "8x1")
REPEATS = 3


@pytest.fixture(scope="module")
def results(default_sweep) -> Path:
    """The results of the session's one default sweep (shared with the README and `make sweep` tests)."""
    assert default_sweep.proc.returncode == 0, default_sweep.proc.stderr[-3000:]
    return default_sweep.results


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
    assert query.missing(lf, [2, 3, 9, 10, 11]).collect()["crops"].to_list() == [10, 11]
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
