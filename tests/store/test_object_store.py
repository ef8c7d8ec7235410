"""The store on object storage (`store.fs`): results URIs, whole objects, damaged objects, the run lock.

Against a real S3-compatible server on the loopback (moto's server mode, the
session's `s3_server`) and, for a filesystem polars cannot read itself, fsspec's
in-memory filesystem (``memory://``), read through pyarrow. Nothing here starts Ray.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path

import pytest

from orchestrator.plan import plan
from orchestrator.spec import build_spec
from orchestrator.sweep import _begin, _end
from store import fs
from store.compact import compact
from store.fs import ObjectPath, location
from store.invariant import check
from store.lock import RunLock, read_holder
from store.parts import COMPACTED, part_problem
from store.runs import RunStore, list_runs
from store.scan import scan
from tilesweep.errors import RunLocked, StorageError, UsageError
from tilings import get_profile
from workers.record import STATUS_FAILED, STATUS_OK

RUN = "r1"


@pytest.fixture(params=["s3", "memory"])
def results(request) -> str:
    """A results URI: a fresh bucket on the S3 server, or a fresh root on fsspec's memory filesystem."""
    if request.param == "s3":
        return request.getfixturevalue("s3_results")
    return f"memory://tilesweep-{os.urandom(4).hex()}/results"


def _finished_run(results: str, make_records, attempts: dict[int, list[str]]):
    """A finished run of four tilings written through the store; config i gets a part per status in attempts[i]."""
    spec = build_spec(None, {"tilings": "1x1,1x2,2x1,1x3", "profile": "molmo2", "repeats": 2, "warmup": 0,
                             "results": results, "run_id": RUN})
    profile = get_profile("molmo2")
    configs = plan(spec, profile)
    store = RunStore(results, RUN)
    manifest = _begin(store, None, spec, profile, configs, "run", measuring=True)
    for i, config in enumerate(configs):
        for attempt, status in enumerate(attempts.get(i, [STATUS_OK]), 1):
            store.write_part(make_records(RUN, config.config_id, attempt, tiling=tuple(config.tiling), repeats=2,
                                          status=status, t_total=10.0 * (i + 1) + attempt))
    _end(store, manifest, None, {})
    return configs, store


def _names(directory) -> list[str]:
    return sorted(e.name for e in fs.entries(location(directory)))


def test_results_uris_are_parsed_without_the_network_and_credentials_in_them_are_refused():
    assert location("results") == Path("results") and location("file:///tmp/r") == Path("/tmp/r")
    root = location("s3://bucket/some/prefix?endpoint_override=127.0.0.1:1&scheme=http")
    assert isinstance(root, ObjectPath) and str(root) == "s3://bucket/some/prefix"
    run = root / "r1"
    assert (str(run), run.name, str(run.parent), str(run / "manifest.json")) == (
        "s3://bucket/some/prefix/r1", "r1", "s3://bucket/some/prefix", "s3://bucket/some/prefix/r1/manifest.json")
    bad = {
        "nope://bucket/x": ["unknown scheme 'nope'", "s3://BUCKET/PREFIX"],
        "s3:///prefix": ["names no bucket", "s3://BUCKET/PREFIX"],
        "s3://bucket/x?timeout=3": ["unknown option 'timeout'", "endpoint_override"],
        "s3://bucket/x?request_timeout=soon": ["request_timeout 'soon' is not a positive number of seconds"],
        "s3://AKIAEXAMPLE:hunter2-secret@bucket/x": ["carries credentials", "AWS_ACCESS_KEY_ID", "s3://***@bucket/x"],
        "s3://bucket/x?secret_key=hunter2-secret": ["carries credentials (secret_key)", "secret_key=***"],
    }
    for uri, needles in bad.items():
        with pytest.raises(UsageError) as info:
            location(uri)
        message = str(info.value)
        assert all(n in message for n in needles) and "hunter2" not in message and "\n" not in message, message


def test_a_run_on_object_storage_reads_checks_and_compacts_as_on_disk(results, make_records, tmp_path):
    attempts = {0: [STATUS_OK, STATUS_OK], 2: [STATUS_FAILED, STATUS_FAILED]}
    configs, store = _finished_run(results, make_records, attempts)
    local, _ = _finished_run(str(tmp_path), make_records, attempts)  # the same run on a local disk
    parts = [f"part-{c.config_id}-{a}.parquet" for i, c in enumerate(configs)
             for a in range(1, len(attempts.get(i, [STATUS_OK])) + 1)]
    # Each file is one whole object under its final name: no temporary, no directory marker.
    assert _names(store.dir) == sorted(["manifest.json", *parts]) == _names(tmp_path / RUN)
    assert [r for _, r in list_runs(results)] == [r for _, r in list_runs(tmp_path)] == [RUN]
    report = check(results, RUN)
    assert report.ok, report.problems
    assert {k: report.counts[k] for k in ("planned", "ok", "failed", "parts")} == {
        "planned": 4, "ok": 3, "failed": 1, "parts": 6}

    def rows(where):
        return scan(where).drop("started_at", "finished_at").collect().sort("config_id", "attempt", "repeat")

    assert rows(results).equals(rows(str(tmp_path)))
    assert store.outcomes() == RunStore(tmp_path, RUN).outcomes()

    done = compact(results, RUN)
    assert (done.parts, done.removed, done.configs) == (6, 6, 4)
    assert _names(store.dir) == [COMPACTED, "manifest.json"]  # compacted whole, then the parts deleted
    assert rows(results).equals(rows(str(tmp_path)))
    assert check(results, RUN).ok
    # A part written after compaction (a resume) gets the next attempt number and is read beside the file.
    assert store.attempts_on_disk()[configs[0].config_id] == 2


def test_a_damaged_object_is_skipped_by_readers_and_moved_aside_by_the_driver(s3_results, make_records, caplog):
    configs, store = _finished_run(s3_results, make_records, {})
    damaged = store.part_path(configs[1].config_id, 1)
    good = fs.read_bytes(damaged)
    fs.write_bytes(damaged, good[: len(good) // 2], temp_prefix=".tmp-")  # cut short, as a broken upload would be
    with caplog.at_level(logging.WARNING):
        seen = scan(s3_results).collect()
        scan(s3_results).collect()
    assert set(seen["config_id"]) == {c.config_id for c in configs} - {configs[1].config_id}
    assert [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()] == [
        r.getMessage() for r in caplog.records if str(damaged) in r.getMessage()]
    assert len([r for r in caplog.records if str(damaged) in r.getMessage()]) == 1  # one warning, not one per scan
    report = check(s3_results, RUN)
    assert any(p.startswith(f"{damaged}: unreadable") for p in report.problems), report.problems

    moved = store.quarantine_unreadable()  # what the driver does when it plans the resume: a copy, then a delete
    assert [str(p) for p in moved] == [f"{damaged}.corrupt"]
    assert fs.read_bytes(moved[0]) == good[: len(good) // 2] and not damaged.exists()
    assert check(s3_results, RUN).counts["quarantined"] == 1
    assert store.attempts_on_disk()[configs[1].config_id] == 1  # the quarantined attempt is never reused


def test_the_run_lock_on_object_storage_refuses_a_second_driver_and_yields_to_a_dead_ones(results, caplog):
    run_dir = location(results) / RUN
    assert fs.create_new(run_dir / "x", b"1") and not fs.create_new(run_dir / "x", b"2")
    assert fs.read_bytes(run_dir / "x") == b"1"
    fs.delete(run_dir / "x")
    with RunLock(run_dir, command="run") as held:
        with pytest.raises(RunLocked, match=f"run on host {socket.gethostname()}, pid {os.getpid()}"):
            RunLock(run_dir, command="fill").acquire()
        assert read_holder(run_dir) == held.holder
    assert _names(run_dir) == []
    # A lock left by a driver on another host that stopped beating a minute ago: taken over.
    stale = {"host": "elsewhere", "pid": 7, "pid_start": None, "command": "fill", "token": "0" * 16,
             "started": "2026-01-01T00:00:00+00:00", "heartbeat": "2026-01-01T00:00:00+00:00"}
    fs.write_bytes(run_dir / "driver.lock", json.dumps(stale).encode(), temp_prefix=".tmp-")
    with caplog.at_level(logging.WARNING, logger="store.lock"), RunLock(run_dir, command="run"):
        assert read_holder(run_dir).host == socket.gethostname()
    assert "taking over the lock of fill on host elsewhere, pid 7" in caplog.text
    assert _names(run_dir) == []


def test_a_storage_that_cannot_be_reached_is_an_error_never_damage(s3_results, make_records):
    configs, store = _finished_run(s3_results, make_records, {})
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bucket = s3_results.split("/")[2]
    away = location(f"s3://{bucket}/results?endpoint_override=127.0.0.1:{port}&scheme=http") / RUN
    part = away / store.part_path(configs[0].config_id, 1).name
    with pytest.raises(StorageError) as info:
        part_problem(part)  # a reader must not count the part as damaged, nor the driver move it aside
    assert str(part) in str(info.value) and info.value.reason
    with pytest.raises(StorageError):
        RunStore(away.parent, RUN).quarantine_unreadable()
    assert check(s3_results, RUN).ok and _names(store.dir)[-1].endswith(".parquet")  # nothing was moved aside
