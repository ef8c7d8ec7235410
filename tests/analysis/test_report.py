"""`tilesweep report` on synthetic results: files, images, tables, coverage, refusals."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import polars as pl
import pytest

from analysis import query, report
from orchestrator import cli
from tilings import enumerate_tilings

_spec = importlib.util.spec_from_file_location("report_checks", Path(__file__).with_name("report_checks.py"))
checks = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("report_checks", checks)
_spec.loader.exec_module(checks)


@pytest.fixture(scope="module")
def built(tmp_path_factory, synth):
    """One report over a sweep with two removed tilings and a failed one (built once: plotting is slow)."""
    root = tmp_path_factory.mktemp("results")
    # 1xk and 2xk without 1x6 and 2x3 (crops 7 absent), with 1x9 failed (crops 10: only the failure),
    # and 1x12, 2x6 (crops 13) neither planned nor measured.
    unplanned = [(1, 12), (2, 6)]
    records = synth.write_sweep(root, families=("1xk", "2xk"), skip=[(1, 6), (2, 3), (1, 9), *unplanned], repeats=4)
    synth.write_part(root, [synth.failed(config_id="cfg-1x9", profile="molmo-v1", tiling_rows=1, tiling_cols=9, crops=10)])
    tilings = [(t.rows, t.cols) for t, _ in enumerate_tilings("molmo-v1", ["1xk", "2xk"]) if (t.rows, t.cols) not in unplanned]
    synth.write_manifest(root, "run-a", environment={"python": "3.11.7", "gpus": {"count": 0}},
                         planned=synth.planned_for("molmo-v1", tilings))
    out = root.parent / "report"
    rc = cli.main(["report", "--results", str(root), "-o", str(out)])
    assert rc == 0
    configs = len({r.config_id for r in records}) + 1
    return out, configs


def test_report_files_and_images(built):
    out, _ = built
    html = (out / "report.html").read_text()
    names = checks.check_images(out, html)
    assert sorted(n.split("-")[0] for n in names) == ["growth", "methods", "model", "stages"]
    md = (out / "report.md").read_text()
    assert all(f"]({n})" in md for n in names)
    assert {p.name for p in out.iterdir()} == {*names, "report.html", "report.md", "summary.csv",
                                               "method_gap.csv", "additivity.csv"}


def test_report_tables_have_one_row_per_config(built):
    out, configs = built
    html = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    sections = checks.html_sections(html)
    summary = next(k for k in sections if k.startswith("Summary"))
    gap = next(k for k in sections if k.startswith("Method gap"))
    add = next(k for k in sections if k.startswith("Additivity"))
    # The failed config is in the summary (with its error) but has no timings to compare.
    assert checks.html_table_rows(sections[summary]) == configs
    assert checks.html_table_rows(sections[gap]) == checks.html_table_rows(sections[add]) == configs - 1
    assert checks.markdown_table_rows(md, summary) == configs
    assert checks.markdown_table_rows(md, gap) == configs - 1
    assert "CUDA out of memory" in sections[summary]
    assert pl.read_csv(out / "summary.csv").height == configs
    assert "python" in sections["Environment"] and "3.11.7" in sections["Environment"]


def test_report_coverage_marks_missing_and_failed_crop_counts(built):
    out, _ = built
    md = (out / "report.md").read_text()
    rows = [line.split("|") for line in md.split("### Coverage of crop counts")[1].split("###")[0].splitlines()
            if line.startswith("| molmo-v1")]
    status = {int(r[2]): r[-2].strip() for r in rows}
    assert len(status) == 12  # molmo-v1: crops 2..13
    assert status[7] == "missing" and status[10] == "failed" and status[13] == "not planned"
    assert {c for c, s in status.items() if s == "ok"} == set(range(2, 13)) - {7, 10}


def test_report_lists_planned_configs_without_an_ok_result(built):
    out, _ = built
    sections = checks.html_sections((out / "report.html").read_text())
    pending = sections["Planned configs without an ok result"]
    assert checks.html_table_rows(pending) == 3
    assert all(f"cfg-{t}" in pending for t in ("1x6", "2x3", "1x9"))


def test_report_refuses_a_file_as_directory_and_empty_results(tmp_path, synth, capsys):
    synth.write_sweep(tmp_path / "res", families=("1xk",), repeats=2)
    target = tmp_path / "taken"
    target.write_text("keep me")
    assert cli.main(["report", "--results", str(tmp_path / "res"), "-o", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "taken" in err and "is a file" in err
    assert target.read_text() == "keep me"

    (tmp_path / "empty").mkdir()
    assert cli.main(["report", "--results", str(tmp_path / "empty"), "-o", str(tmp_path / "out")]) == 2
    assert "no run under" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_report_notes_an_unfittable_model_and_keeps_the_rest(tmp_path, synth):
    synth.write_sweep(tmp_path / "res", families=("1xk",), repeats=2, skip=[(1, k) for k in range(3, 13)])
    written = report.build(tmp_path / "res", tmp_path / "out")
    html = (tmp_path / "out" / "report.html").read_text()
    assert "latency model not fitted" in html and "need at least 3" in html
    assert not any(p.name.startswith("model-") for p in written)
    assert len(checks.check_images(tmp_path / "out", html)) == 3


def test_report_sections_per_run_including_a_run_of_failures_only(tmp_path, synth):
    synth.write_sweep(tmp_path / "res", families=("1xk",), repeats=2, run_id="run-good",
                      skip=[(1, k) for k in range(5, 13)])
    synth.write_part(tmp_path / "res", [synth.failed(run_id="run-bad", config_id="x", error="boom: no memory")])
    out = tmp_path / "out"
    report.build(tmp_path / "res", out)
    html = (out / "report.html").read_text()
    assert html.count("<h2>Run ") == 2
    bad, good = html.split("<h2>Run ")[1:]  # sections in run id order
    assert good.startswith("run-good") and bad.startswith("run-bad")
    assert len(checks.check_images(out, html)) == 4  # all four figures of run-good, none of run-bad
    assert "data-file" not in bad and "no config of this run was measured ok" in bad
    assert "boom: no memory" in bad


def test_report_flags_every_config_with_too_few_samples_and_says_what_to_do(built):
    out, configs = built
    html = (out / "report.html").read_text()
    sections = checks.html_sections(html)
    flagged = next(k for k in sections if k.startswith("Noise"))
    # Four repeats per config: no 95% interval of any median; the failed config has no samples to judge.
    assert checks.html_table_rows(sections[flagged]) == configs - 1
    assert sections[flagged].count("4 samples: too few for a 95% interval of the median") == configs - 1
    assert "run with --precision 2 (adaptive) or --repeats 10" in html
    gap = next(k for k in sections if k.startswith("Method gap"))
    assert "not the difference of the two medians" in gap


def test_wide_tables_scroll_in_their_own_box(built):
    out, _ = built
    html = (out / "report.html").read_text()
    tables = html.count("<table>")
    assert tables >= 5 and html.count('<div class="scroll">\n<table>') == tables
    assert "div.scroll{overflow-x:auto" in html


def test_a_report_into_a_used_directory_leaves_no_stale_figures(tmp_path, synth):
    res = tmp_path / "res"
    # run-b: 1x1 and 1x2, three figures (no model fit); run-a: only a failure, so no figure at all.
    synth.write_sweep(res, families=("1xk",), repeats=2, run_id="run-b", skip=[(1, k) for k in range(3, 13)])
    synth.write_part(res, [synth.failed(run_id="run-a", config_id="x")])
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "stages-notes.txt").write_text("mine too")
    first = {p.name for p in report.build(res, out, run_ids=["run-b"])}
    assert len({n for n in first if n.endswith("-run-b.png")}) == 3
    second = {p.name for p in report.build(res, out, run_ids=["run-a"])}
    left = {p.name for p in out.iterdir()}
    assert left == second | {"notes.txt", "stages-notes.txt"}
    assert not any(n.endswith(".png") for n in left)  # the figures of run-b went with the report that drew them
    assert "data-file" not in (out / "report.html").read_text()


def _decode_run(root, synth, *, decode: bool) -> Path:
    records = [synth.base_record(run_id="run-d", config_id=f"c{t}", tiling_cols=t, crops=t + 1, repeat=i,
                                 sequence_tokens=100 * t, t_total_ms=10.0 * t + i,
                                 t_ttft_ms=(12.0 * t + i) if decode else None,
                                 t_tpot_ms=(1.5 + 0.1 * i) if decode else None)
               for t in (1, 2) for i in range(3)]
    for t in (1, 2):
        synth.write_part(root, [r for r in records if r.config_id == f"c{t}"])
    return root / "run-d"


def test_ttft_and_tpot_appear_in_the_tables_when_measured(tmp_path, synth):
    from orchestrator.commands.run import summary_text

    run_dir = _decode_run(tmp_path / "with", synth, decode=True)
    lines = summary_text(run_dir).splitlines()
    header = lines[1].split()
    assert header[-3:] == ["ttft_ms", "tpot_ms", "status"]
    row = next(line.split() for line in lines[2:] if line.split()[0] == "1x2")
    assert row[header.index("ttft_ms")] == "25.00" and row[header.index("tpot_ms")] == "1.60"
    summary = query.summary(query.scan(tmp_path / "with")).collect()
    columns = report.summary_columns(summary)
    assert columns[-3:] == ["ttft_median_ms", "tpot_median_ms", "error"]

    run_dir = _decode_run(tmp_path / "without", synth, decode=False)
    assert "ttft" not in summary_text(run_dir) and "tpot" not in summary_text(run_dir)
    summary = query.summary(query.scan(tmp_path / "without")).collect()
    assert report.summary_columns(summary) == list(report.SUMMARY_COLUMNS)
