"""Compaction (`store.compact`, `tilesweep compact`): one file per finished run, the same rows before, during and after.

Every run here is written by the store itself (`RunStore.write_part`, the manifest
by `orchestrator.sweep`'s own `_begin`/`_end`) from a real spec's plan, so the
config ids are the planner's and a resume plans the same ones. No Ray: a resume
with nothing left to measure never starts it.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from orchestrator import cli
from orchestrator.plan import pending, plan
from orchestrator.spec import build_spec
from orchestrator.sweep import _begin, _end, sweep
from store.compact import compact
from store.invariant import check
from store.parts import COMPACTED, Outcome, kept, part_name
from store.runs import RunStore
from store.scan import scan
from tilings import get_profile
from workers.record import STATUS_FAILED, STATUS_OK

RUN = "r1"
TILINGS = "1x1,1x2,2x1,1x3"


def _spec(results: Path):
    return build_spec(None, {"tilings": TILINGS, "profile": "molmo2", "repeats": 2, "warmup": 0,
                             "results": str(results), "run_id": RUN})


def _finished_run(results: Path, make_records, attempts: dict[int, list[str]]):
    """A finished run of `TILINGS`: config i gets one part per status in ``attempts[i]`` (attempts 1, 2, ...)."""
    spec = _spec(results)
    profile = get_profile("molmo2")
    configs = plan(spec, profile)
    store = RunStore(results, RUN)
    manifest = _begin(store, None, spec, profile, configs, "run", measuring=True)
    for i, config in enumerate(configs):
        for attempt, status in enumerate(attempts.get(i, [STATUS_OK]), 1):
            store.write_part(make_records(RUN, config.config_id, attempt, tiling=tuple(config.tiling), repeats=2,
                                          status=status, t_total=10.0 * (i + 1) + attempt))
    _end(store, manifest, None, {})
    return spec, configs, store


def _rows(path) -> pl.DataFrame:
    return scan(path).collect().sort("config_id", "attempt", "repeat")


# Config 0: two ok attempts (the later is kept); 1: ok then failed (the ok one is kept, the failure
# discarded although it is later); 2: two failures (the later is kept); 3: one ok attempt.
ATTEMPTS = {0: [STATUS_OK, STATUS_OK], 1: [STATUS_OK, STATUS_FAILED], 2: [STATUS_FAILED, STATUS_FAILED]}


def test_compaction_keeps_exactly_the_kept_attempts_and_the_invariant_holds(tmp_path, make_records):
    _, configs, store = _finished_run(tmp_path, make_records, ATTEMPTS)
    before = check(tmp_path, RUN)
    assert before.ok, before.problems
    rows_before = _rows(tmp_path)
    parts = {p.name: pq.read_table(p).to_pylist() for p in store.dir.glob("part-*.parquet")}
    assert len(parts) == 7

    done = compact(tmp_path, RUN)
    assert (done.parts, done.removed, done.configs) == (7, 7, 4)
    assert sorted(p.name for p in store.dir.iterdir()) == [COMPACTED, "manifest.json"]

    # Exactly the rows of the attempt `store.parts.kept` names per config, as the parts held them.
    want = []
    for i, config in enumerate(configs):
        statuses = ATTEMPTS.get(i, [STATUS_OK])
        chosen = kept(Outcome(status=s, attempt=a) for a, s in enumerate(statuses, 1))
        want += parts[part_name(config.config_id, chosen.attempt)]
    got = pq.read_table(store.dir / COMPACTED).to_pylist()
    key = lambda r: (r["config_id"], r["attempt"], r["repeat"])  # noqa: E731
    assert sorted(got, key=key) == sorted(want, key=key)
    assert {(r["config_id"], r["attempt"]) for r in got} == {
        (configs[0].config_id, 2), (configs[1].config_id, 1), (configs[2].config_id, 2), (configs[3].config_id, 1)}
    assert _rows(tmp_path).equals(rows_before)

    after = check(tmp_path, RUN)
    assert after.ok, after.problems
    assert {k: after.counts[k] for k in ("ok", "failed", "parts", "compacted", "rows")} == {
        "ok": 3, "failed": 1, "parts": 0, "compacted": 1, "rows": len(got)}
    assert store.outcomes() == {c.config_id: o for c, o in zip(configs, (
        Outcome(STATUS_OK, 2), Outcome(STATUS_OK, 1), Outcome(STATUS_FAILED, 2), Outcome(STATUS_OK, 1)))}
    # The discarded attempt 2 of config 1 still counts for numbering: no attempt number is used twice.
    assert store.attempts_on_disk() == {configs[0].config_id: 2, configs[1].config_id: 2,
                                        configs[2].config_id: 2, configs[3].config_id: 1}


def test_a_crash_at_any_step_leaves_a_consistent_run_and_no_row_twice(tmp_path, make_records):
    _, configs, store = _finished_run(tmp_path / "a", make_records, ATTEMPTS)
    rows_before = _rows(tmp_path / "a")
    original = tmp_path / "original"
    shutil.copytree(store.dir, original)

    # Killed before its rename: the temporary file is ignored by readers, removed by the next compact.
    tmp = store.dir / f".tmp-4242-abcd-{COMPACTED}"
    tmp.write_bytes(b"PAR1 half a compacted file")
    assert _rows(tmp_path / "a").equals(rows_before)
    compact(tmp_path / "a", RUN)
    assert not tmp.exists()

    # Killed after the compacted file was durable, before every part was deleted: the state is the
    # compacted file plus the original parts. Readers read each row once; the invariant holds.
    for part in original.glob("part-*.parquet"):
        shutil.copy2(part, store.dir / part.name)
    assert _rows(tmp_path / "a").equals(rows_before)
    assert _rows(store.dir).height == rows_before.height
    report = check(tmp_path / "a", RUN)
    assert report.ok, report.problems
    assert (report.counts["superseded"], report.counts["parts"]) == (7, 0)
    assert store.outcomes()[configs[2].config_id] == Outcome(STATUS_FAILED, 2)
    assert cli.main(["status", "--results", str(tmp_path / "a"), "--run-id", RUN, "--check"]) == 0

    # The next compact finishes the job: the superseded parts go, the rows stay.
    again = compact(tmp_path / "a", RUN)
    assert (again.parts, again.removed) == (0, 7)
    assert sorted(p.name for p in store.dir.iterdir()) == [COMPACTED, "manifest.json"]
    assert _rows(tmp_path / "a").equals(rows_before)


def test_parts_written_after_compaction_are_read_beside_it_and_folded_in_next_time(tmp_path, make_records):
    spec, configs, store = _finished_run(tmp_path, make_records, ATTEMPTS)
    compact(tmp_path, RUN)
    failed = configs[2]
    # A resume measures only what has no ok result, under an attempt number above the compacted ones.
    assert [c.config_id for c in pending(configs, store.done())] == [failed.config_id]
    attempt = store.attempts_on_disk()[failed.config_id] + 1
    assert attempt == 3
    store.write_part(make_records(RUN, failed.config_id, attempt, tiling=tuple(failed.tiling), repeats=2,
                                  t_total=99.0))
    manifest = _begin(store, store.read_manifest(), spec, get_profile("molmo2"), configs, "run", measuring=True)
    _end(store, manifest, None, {})
    assert store.outcomes()[failed.config_id] == Outcome(STATUS_OK, 3)
    rows = _rows(tmp_path)
    assert rows.filter(pl.col("config_id") == failed.config_id)["t_total_ms"].to_list() == [99.0, 100.0]
    assert check(tmp_path, RUN).ok

    done = compact(tmp_path, RUN)
    assert (done.parts, done.removed) == (1, 1)
    assert _rows(tmp_path).equals(rows)
    assert check(tmp_path, RUN).ok
    assert store.attempts_on_disk()[failed.config_id] == 3


def test_a_resume_after_compaction_measures_nothing_already_done(tmp_path, make_records):
    spec, configs, store = _finished_run(tmp_path, make_records, {})
    compact(tmp_path, RUN)
    compacted = (store.dir / COMPACTED).stat()
    # A plain resume of the same run: everything is done, so it plans, finds nothing and never starts Ray
    # (`host_cls` only keeps the preflight from loading a model).
    result = sweep(spec, host_cls=object)
    assert result.measured == [] and len(result.planned) == len(configs) == 4
    assert sorted(p.name for p in store.dir.iterdir()) == [COMPACTED, "manifest.json"]
    assert (store.dir / COMPACTED).stat().st_mtime_ns == compacted.st_mtime_ns
    assert check(tmp_path, RUN).ok


def test_compact_refuses_a_run_that_is_not_finished_or_does_not_hold(tmp_path, make_records, capsys):
    spec, configs, store = _finished_run(tmp_path, make_records, {})
    # A later invocation that never ended (a killed driver): left alone, exit 1, one line.
    _begin(store, store.read_manifest(), spec, get_profile("molmo2"), configs, "run", measuring=True)
    names = sorted(p.name for p in store.dir.iterdir())
    assert cli.main(["compact", "--results", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not finished" in err[0] and f"tilesweep run --run-id {RUN}" in err[0]
    assert sorted(p.name for p in store.dir.iterdir()) == names

    _end(store, store.read_manifest(), None, {})
    victim = store.part_path(configs[0].config_id, 1)
    victim.write_bytes(victim.read_bytes()[:100])  # truncated: the invariant fails, nothing is compacted
    assert cli.main(["compact", "--results", str(tmp_path), "--run-id", RUN]) == 1
    assert "does not hold its invariant" in capsys.readouterr().err
    assert not (store.dir / COMPACTED).exists() and victim.exists()

    assert cli.main(["compact", "--results", str(tmp_path), "--run-id", "nope"]) == 2
    assert "no run 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("layout", ["parts", "compacted"])
def test_query_and_status_read_both_layouts_alike(tmp_path, make_records, layout, capsys):
    _finished_run(tmp_path, make_records, ATTEMPTS)
    if layout == "compacted":
        assert cli.main(["compact", "--results", str(tmp_path)]) == 0
        assert "7 part(s) compacted into compacted.parquet (4 configs, 7 rows)" in capsys.readouterr().out
    assert cli.main(["query", "--results", str(tmp_path), "SELECT count(*) AS n, sum(t_total_ms) AS s FROM results",
                     "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == "7,151.0"  # kept: 2 + 2 + 2 ok rows (25 + 43 + 83 ms), 1 failed
    assert cli.main(["status", "--results", str(tmp_path), "--check"]) == 0
    assert "3 ok, 1 failed, 0 missing" in capsys.readouterr().out


def test_the_benchmark_layout_passes_the_check(tmp_path):
    """What `benchmarks/scale.py` writes is a finished run the invariant accepts, before and after compaction."""
    from benchmarks.scale import ScaleSize, write_run

    write_run(tmp_path, ScaleSize(configs=30, repeats=3), run_id=RUN)
    assert check(tmp_path, RUN).ok
    assert dataclasses.astuple(compact(tmp_path, RUN))[1:] == (30, 30, 90, 30)
    assert check(tmp_path, RUN).ok


def test_a_damaged_compacted_file_is_reported_skipped_and_moved_aside_by_the_driver(tmp_path, make_records):
    _, configs, store = _finished_run(tmp_path, make_records, {})
    compact(tmp_path, RUN)
    path = store.dir / COMPACTED
    path.write_bytes(path.read_bytes()[:300])
    report = check(tmp_path, RUN)
    assert any(f"{path}: unreadable" in p for p in report.problems), report.problems
    assert report.counts["missing"] == len(configs)
    assert store.outcomes() == {} and scan(tmp_path).collect().height == 0  # readers skip it, no query fails
    assert store.attempts_on_disk() == {}
    moved = store.quarantine_unreadable()  # what the driver does when it plans the resume
    assert [p.name for p in moved] == [f"{COMPACTED}.corrupt"]
    assert check(tmp_path, RUN).counts["quarantined"] == 1
