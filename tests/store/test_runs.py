"""The store: atomic parts with the one schema, manifests, and what a run holds."""

from __future__ import annotations

import json
import os

import pyarrow.parquet as pq
import pytest

from store.manifest import Manifest
from store.runs import RunStore, latest_run, list_runs, new_run_id
from store.scan import scan
from store.schema import SCHEMA


def test_part_is_written_under_its_name_with_the_schema(tmp_path, make_records):
    store = RunStore(tmp_path, "r1")
    path = store.write_part(make_records("r1", "00aa", 2, repeats=3))
    assert path == tmp_path / "r1" / "part-00aa-2.parquet"
    table = pq.read_table(path)
    assert table.schema.equals(SCHEMA, check_metadata=False)
    assert table.column("repeat").to_pylist() == [0, 1, 2]
    assert sorted(os.listdir(tmp_path / "r1")) == ["part-00aa-2.parquet"]  # no temporary left


def test_an_attempt_is_never_overwritten(tmp_path, make_records):
    store = RunStore(tmp_path, "r1")
    store.write_part(make_records("r1", "00aa", 1))
    with pytest.raises(FileExistsError, match="part-00aa-1.parquet exists"):
        store.write_part(make_records("r1", "00aa", 1, t_total=99.0))
    assert pq.read_table(store.part_path("00aa", 1)).column("t_total_ms").to_pylist()[0] == 10.0


@pytest.mark.parametrize("mutate, needle", [
    (lambda rs: [], "got no records"),
    (lambda rs: [rs[0], rs[1].__class__(**{**rs[1].to_dict(), "attempt": 5})], "one part holds one config attempt"),
    (lambda rs: [r.__class__(**{**r.to_dict(), "run_id": "other"}) for r in rs], "records of run 'other'"),
    (lambda rs: [r.__class__(**{**r.to_dict(), "status": "done"}) for r in rs], "status 'done' is not one of"),
    (lambda rs: [r.__class__(**{**r.to_dict(), "config_id": "../x"}) for r in rs], "must be hex digits"),
    (lambda rs: [r.__class__(**{**r.to_dict(), "crops": "three"}) for r in rs], ""),
])
def test_bad_parts_are_refused_and_leave_nothing(tmp_path, make_records, mutate, needle):
    store = RunStore(tmp_path, "r1")
    records = mutate(make_records("r1", "00aa", 1))
    with pytest.raises((ValueError, TypeError)) as info:
        store.write_part(records)
    assert needle in str(info.value)
    assert not (tmp_path / "r1").exists() or os.listdir(tmp_path / "r1") == []


def test_a_failed_write_removes_its_temporary(tmp_path, make_records, monkeypatch):
    store = RunStore(tmp_path, "r1")

    def broken_replace(src, dst):
        raise KeyboardInterrupt  # as if Ctrl-C came between the write and the rename

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(KeyboardInterrupt):
        store.write_part(make_records("r1", "00aa", 1))
    assert os.listdir(tmp_path / "r1") == []


def test_outcomes_keep_the_latest_ok_attempt_else_the_latest_failed(tmp_path, make_records):
    store = RunStore(tmp_path, "r1")
    store.write_part(make_records("r1", "0001", 1, status="failed"))
    store.write_part(make_records("r1", "0001", 2))  # retried, then ok
    store.write_part(make_records("r1", "0001", 3, status="failed"))  # a later rerun failed
    store.write_part(make_records("r1", "0002", 1, status="failed"))
    store.write_part(make_records("r1", "0002", 4, status="failed"))
    store.write_part(make_records("r1", "0003", 1))
    outcomes = store.outcomes()
    assert {k: (o.status, o.attempt) for k, o in outcomes.items()} == {
        "0001": ("ok", 2), "0002": ("failed", 4), "0003": ("ok", 1)}
    assert store.done() == {"0001", "0003"}
    assert store.attempts_on_disk() == {"0001": 3, "0002": 4, "0003": 1}
    rows = scan(tmp_path).collect()
    assert rows.filter(rows["config_id"] == "0001")["attempt"].unique().to_list() == [2]


def test_empty_or_absent_run(tmp_path):
    store = RunStore(tmp_path, "nothing")
    assert store.outcomes() == {} and store.done() == set() and store.attempts_on_disk() == {}
    assert store.read_manifest() is None
    assert latest_run(tmp_path) is None


def test_manifest_is_atomic_json_and_latest_run_goes_by_creation_time(tmp_path):
    RunStore(tmp_path, "zzz-old").write_manifest(Manifest(run_id="zzz-old", created_at="2026-01-01T00:00:00+00:00"))
    RunStore(tmp_path, "aaa-new").write_manifest(Manifest(run_id="aaa-new", created_at="2026-02-01T00:00:00+00:00",
                                                          environment={"x": [1]}))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text("{not json")
    assert [r for _, r in list_runs(tmp_path)] == ["zzz-old", "aaa-new"]
    assert latest_run(tmp_path) == "aaa-new"
    assert json.loads((tmp_path / "aaa-new" / "manifest.json").read_text())["environment"]["x"] == [1]
    assert sorted(os.listdir(tmp_path / "aaa-new")) == ["manifest.json"]


def test_stale_temporaries_are_removed_and_never_read(tmp_path, make_records):
    store = RunStore(tmp_path, "r1")
    store.write_part(make_records("r1", "0001", 1))
    (tmp_path / "r1" / ".tmp-123-abcd-part-0002-1.parquet").write_bytes(b"half a file")
    assert scan(tmp_path).collect()["config_id"].unique().to_list() == ["0001"]
    assert store.remove_temporaries() == 1
    assert os.listdir(tmp_path / "r1") == ["part-0001-1.parquet"]


def test_new_run_ids_are_timestamped():
    from datetime import datetime, timezone

    run_id = new_run_id(datetime(2026, 11, 26, 14, 30, 12, tzinfo=timezone.utc))
    assert run_id.startswith("20261126-143012-") and len(run_id) == len("20261126-143012-ab12")
    assert int(run_id[-4:], 16) >= 0
