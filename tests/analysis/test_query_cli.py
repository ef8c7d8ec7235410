"""`tilesweep query` on synthetic results: the three formats, run filters, and one-line errors."""

from __future__ import annotations

import io
import json

import polars as pl
import pytest

from analysis import query
from orchestrator import cli


@pytest.fixture
def results(tmp_path, synth):
    synth.write_sweep(tmp_path, families=("1xk", "2xk"), repeats=3, run_id="run-a")
    synth.write_sweep(tmp_path, families=("1xk",), repeats=2, run_id="run-b")
    return tmp_path


def _run(capsys, results, *argv):
    rc = cli.main(["query", "--results", str(results), *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


SQL = "SELECT run_id, tiling, crops, n, vision_median_ms FROM summary WHERE run_id = 'run-a' ORDER BY crops, tiling"


def test_table_output_is_aligned_with_one_line_per_row(results, capsys):
    rc, out, err = _run(capsys, results, SQL)
    assert rc == 0 and err == ""
    lines = out.splitlines()
    expected = query.summary(query.scan(results)).filter(pl.col("run_id") == "run-a").collect().sort("crops", "tiling")
    assert len(lines) == 2 + expected.height
    assert lines[0].split() == ["run_id", "tiling", "crops", "n", "vision_median_ms"]
    # Right-aligned numeric columns end at the same offset as their header.
    end = lines[0].index("vision_median_ms") + len("vision_median_ms")
    assert all(len(line) == end for line in lines[2:])
    first = lines[2].split()
    assert first[1] == expected["tiling"][0] and int(first[2]) == expected["crops"][0]
    assert float(first[4]) == pytest.approx(expected["vision_median_ms"][0], abs=1e-3)


def test_csv_and_json_round_trip(results, capsys):
    rc, out, _ = _run(capsys, results, SQL, "--format", "csv")
    assert rc == 0
    csv = pl.read_csv(io.StringIO(out))
    rc, out, _ = _run(capsys, results, SQL, "--format", "json")
    assert rc == 0
    rows = json.loads(out)
    assert csv.height == len(rows) == 18  # 12 of 1xk + 6 of 2xk for molmo-v1
    assert csv["vision_median_ms"].to_list() == pytest.approx([r["vision_median_ms"] for r in rows])
    assert {r["n"] for r in rows} == {3}


def test_run_id_filter_and_results_table(results, capsys):
    rc, out, _ = _run(capsys, results, "SELECT run_id, count(*) AS rows FROM results GROUP BY run_id",
                      "--run-id", "run-b", "--format", "json")
    assert rc == 0
    assert json.loads(out) == [{"run_id": "run-b", "rows": 24}]
    rc, out, err = _run(capsys, results, "SELECT 1", "--run-id", "run-z")
    assert rc == 2 and out == "" and "'run-z'" in err and "run-a, run-b" in err


def test_nested_columns_survive_csv(tmp_path, synth, capsys):
    synth.write_part(tmp_path, [synth.base_record(t_llm_blocks_ms=[1.5, 2.25], t_total_ms=4.0)])
    rc, out, _ = _run(capsys, tmp_path, "SELECT t_llm_blocks_ms, t_total_ms FROM results", "--format", "csv")
    assert rc == 0
    assert out.splitlines() == ["t_llm_blocks_ms,t_total_ms", '"[1.5, 2.25]",4.0']


def test_bad_query_prints_polars_message_on_one_line_and_exits_2(results, capsys):
    rc, out, err = _run(capsys, results, "SELECT nope FROM summary")
    assert rc == 2 and out == ""
    assert err.count("\n") == 1
    assert 'unable to find column "nope"' in err and "Resolved plan" not in err
    rc, out, err = _run(capsys, results, "SELECT 1 FROM")
    assert rc == 2 and out == "" and err.count("\n") == 1 and "sql parser error" in err


def test_missing_results_path_exits_2(tmp_path, capsys):
    rc, out, err = _run(capsys, tmp_path / "absent", "SELECT 1")
    assert rc == 2 and out == "" and err.count("\n") == 1
    assert "absent" in err and "does not exist" in err


@pytest.mark.parametrize("sql, word", [
    ("DROP TABLE summary", "DROP"), ("COPY summary TO 'out.csv'", "COPY"),
    ("CREATE TABLE x AS SELECT * FROM summary", "CREATE"), ("  delete from results", "DELETE"),
    ("SHOW TABLES", "SHOW"), ("/* first */ TRUNCATE summary", "TRUNCATE"),
])
def test_a_statement_that_is_not_a_query_is_refused_in_one_line(results, sql, word, capsys):
    before = sorted(p.name for p in results.rglob("*"))
    rc, out, err = _run(capsys, results, sql)
    assert rc == 2 and out == "" and err.count("\n") == 1
    assert f"only a query is run, got {word!r}" in err and "start the statement with SELECT" in err
    assert sorted(p.name for p in results.rglob("*")) == before


def test_with_comments_and_parentheses_are_still_queries(results, capsys):
    rc, out, _ = _run(capsys, results, "-- how many\n(WITH s AS (SELECT * FROM summary) SELECT count(*) AS n FROM s)",
                      "--format", "json")
    assert rc == 0 and json.loads(out) == [{"n": 30}]


def test_query_and_report_say_the_same_about_an_empty_or_missing_directory(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    said = {}
    for target in ("empty", "absent"):
        path = str(tmp_path / target)
        assert cli.main(["query", "--results", path, "SELECT 1"]) == 2
        q = capsys.readouterr()
        assert cli.main(["report", "--results", path, "-o", str(tmp_path / "out")]) == 2
        r = capsys.readouterr()
        assert q.out == r.out == ""
        assert q.err.removeprefix("tilesweep query: ") == r.err.removeprefix("tilesweep report: ")
        assert q.err.count("\n") == 1 and path in q.err
        said[target] = q.err
    assert "no run under" in said["empty"] and "start one with `tilesweep run`" in said["empty"]
    assert "does not exist" in said["absent"]
    assert not (tmp_path / "out").exists()
