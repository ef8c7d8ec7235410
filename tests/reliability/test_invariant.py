"""The invariant check on a real finished run, and on copies of it damaged one way each.

The run is made once per module by a real sweep (the tiny Molmo2 on the session's
Ray cluster); each damage is done to the files on disk, as a crash, a bad copy or
a bug would leave them, and must be reported by `check` and by `status --check`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestrator import cli
from store.invariant import attempts, check

pytestmark = pytest.mark.ray


def parts_of(results: Path, run_id: str) -> dict[str, Path]:
    """``{config_id: path}`` of the first-attempt parts of a run."""
    return {cid: results / run_id / f"part-{cid}-{a[0]}.parquet" for cid, a in attempts(results / run_id).items()}


def rewrite(src: Path, dst: Path, **columns) -> None:
    """Copy a part to `dst` with some columns replaced (a value, or a list of per-row values)."""
    table = pq.read_table(src)
    for name, value in columns.items():
        values = value if isinstance(value, list) else [value] * table.num_rows
        index = table.schema.get_field_index(name)
        table = table.set_column(index, table.schema.field(name), pa.array(values, table.schema.field(name).type))
    pq.write_table(table, dst)


def edit_manifest(results: Path, run_id: str, change: Callable[[dict], None]) -> None:
    path = results / run_id / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def test_a_finished_run_holds_the_invariant_and_status_check_says_so(finished_run, capsys):
    results, run_id = finished_run
    report = check(results, run_id)
    assert report.ok and report.problems == []
    assert {k: report.counts.get(k, 0) for k in ("planned", "ok", "failed", "missing", "parts", "rows")} == {
        "planned": 3, "ok": 3, "failed": 0, "missing": 0, "parts": 3, "rows": 6}
    capsys.readouterr()
    assert cli.main(["status", "--results", str(results), "--run-id", run_id, "--check"]) == 0
    captured = capsys.readouterr()
    assert "invariant holds: 3 planned, 3 ok, 0 failed, 0 missing" in captured.out and captured.err == ""


def _drop_part(results, run_id, cid, part):
    part.unlink()


def _temporary(results, run_id, cid, part):
    (part.parent / f".tmp-1-abcd-{part.name}").write_bytes(part.read_bytes()[:100])


def _stray(results, run_id, cid, part):
    (part.parent / "notes.txt").write_text("a file someone left here")


def _truncate(results, run_id, cid, part):
    data = part.read_bytes()
    part.write_bytes(data[: len(data) // 2])


def _duplicate_repeats(results, run_id, cid, part):
    rewrite(part, part.with_name(f"part-{cid}-2.parquet"), attempt=2, repeat=[0, 0])


def _short_attempt(results, run_id, cid, part):
    table = pq.read_table(part).slice(0, 1).set_column(2, "attempt", pa.array([2], pa.int64()))
    assert table.schema.names[2] == "attempt"
    pq.write_table(table, part.with_name(f"part-{cid}-2.parquet"))


def _failed_without_error(results, run_id, cid, part):
    rewrite(part, part.with_name(f"part-{cid}-2.parquet"), attempt=2, status="failed", error="")
    part.unlink()


def _unplanned(results, run_id, cid, part):
    rewrite(part, part.with_name("part-00ff00ff00ff00ff-1.parquet"), config_id="00ff00ff00ff00ff")


def _renamed(results, run_id, cid, part):
    part.rename(part.with_name(f"part-{cid}-3.parquet"))


def _mixed_status(results, run_id, cid, part):
    rewrite(part, part, status=["ok", "failed"])


def _counts(results, run_id, cid, part):
    edit_manifest(results, run_id, lambda m: m["counts"].update(ok=2, missing=1))


def _unfinished(results, run_id, cid, part):
    edit_manifest(results, run_id, lambda m: m["invocations"][-1].pop("finished_at"))


def _extra_planned(results, run_id, cid, part):
    edit_manifest(results, run_id, lambda m: m["planned"].update({"00ee00ee00ee00ee": m["planned"][cid]}))


def _damaged_manifest(results, run_id, cid, part):
    (results / run_id / "manifest.json").write_text('{"run_id": "base", ')


DAMAGE = [
    (_drop_part, "no result (neither ok nor failed)"),
    (_temporary, "a temporary file was left behind"),
    (_stray, "notes.txt: not a part or the manifest"),
    (_truncate, "unreadable (Parquet magic bytes not found"),
    (_duplicate_repeats, "attempt 2 has duplicate repeat numbers [0, 0]"),
    (_short_attempt, "attempt 2 has 1 row(s), expected 2 repeats"),
    (_failed_without_error, "attempt 2 failed with 2 row(s) lacking an error message"),
    (_unplanned, "config 00ff00ff00ff00ff: 1 part(s) but it is not planned in this run"),
    (_renamed, "attempt 1 in the rows, 3 in the name"),
    (_mixed_status, "a part holds only ok or only failed rows"),
    (_counts, "counts {"),
    (_unfinished, "never finished"),
    (_extra_planned, "1 planned config(s) that no invocation's spec plans"),
    (_damaged_manifest, "is not valid JSON"),
]


@pytest.mark.parametrize("damage, needle", DAMAGE, ids=[d.__name__.strip("_") for d, _ in DAMAGE])
def test_each_damage_is_reported_by_check_and_status_check(run_copy, damage, needle, capsys):
    results, run_id = run_copy
    cid, part = sorted(parts_of(results, run_id).items())[0]
    damage(results, run_id, cid, part)
    report = check(results, run_id)
    assert not report.ok
    assert any(needle in p for p in report.problems), report.problems
    if damage is _damaged_manifest:  # bad input to status itself: one line, exit 2
        assert cli.main(["status", "--results", str(results), "--run-id", run_id, "--check"]) == 2
        return
    capsys.readouterr()
    assert cli.main(["status", "--results", str(results), "--run-id", run_id, "--check"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == len(report.problems) and any(needle in line for line in err)


def test_what_dedup_resolves_and_quarantined_parts_are_not_problems(run_copy):
    """Two whole ok attempts (readers keep the later), a failure recorded with its error and a
    part moved aside as corrupt all leave the invariant holding."""
    results, run_id = run_copy
    (a, part_a), (b, part_b) = sorted(parts_of(results, run_id).items())[:2]
    rewrite(part_a, part_a.with_name(f"part-{a}-2.parquet"), attempt=2)
    rewrite(part_b, part_b.with_name(f"part-{b}-2.parquet"), attempt=2, status="failed", error="CUDA out of memory")
    part_b.unlink()
    (part_b.parent / f"part-{b}-3.parquet.corrupt").write_bytes(b"half a part")
    edit_manifest(results, run_id, lambda m: m["counts"].update(ok=2, failed=1))
    report = check(results, run_id)
    assert report.ok, report.problems
    assert (report.counts["ok"], report.counts["failed"], report.counts["quarantined"]) == (2, 1, 1)


def test_planned_configs_can_be_given_for_a_run_without_a_manifest(run_copy):
    results, run_id = run_copy
    ids = sorted(parts_of(results, run_id))
    (results / run_id / "manifest.json").unlink()
    assert check(results, run_id, ids).ok
    report = check(results, run_id, [*ids, "00dd00dd00dd00dd"])
    assert report.problems == ["config 00dd00dd00dd00dd: no result (neither ok nor failed); run the same "
                               f"`tilesweep run --run-id {run_id}` again to measure it"]
    assert "cannot tell what was planned" in check(results, run_id).problems[0]
