"""The run lock (`store.lock`): one driver per run; a dead holder never blocks the next one.

Pure file tests on a local directory (the same lock on object storage is in
`test_object_store.py`). Holders in other processes are lock files written as
those processes would write them: their pid, its start time and their host.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest

from store import lock as locks
from store.lock import Holder, RunLock, read_holder
from tilesweep.errors import RunLocked


def _plant(run_dir, **fields) -> Holder:
    """A lock file as another driver would have written it (defaults: this host, the parent process)."""
    now = datetime.now(timezone.utc).isoformat()
    holder = Holder(**{"host": socket.gethostname(), "pid": os.getppid(), "pid_start": locks._start_time(os.getppid()),
                       "command": "fill", "started": now, "heartbeat": now, "token": "feedfacefeedface", **fields})
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "driver.lock").write_bytes(holder.dumps())
    return holder


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_second_driver_is_refused_in_one_line_naming_the_holder_and_the_fix(tmp_path):
    run_dir = tmp_path / "results" / "r1"
    with RunLock(run_dir, command="run"):
        written = json.loads((run_dir / "driver.lock").read_text())
        assert written["pid"] == os.getpid() and written["host"] == socket.gethostname()
        assert set(written) == {"host", "pid", "pid_start", "command", "started", "heartbeat", "token"}
        with pytest.raises(RunLocked) as info:
            RunLock(run_dir, command="fill").acquire()
        message = str(info.value)
        assert "\n" not in message
        for needle in (f"run 'r1' is in use by another driver (run on host {socket.gethostname()}, pid {os.getpid()}, "
                       f"since {written['started']}", "wait for it to end", f"delete {run_dir / 'driver.lock'}"):
            assert needle in message, message
        assert json.loads((run_dir / "driver.lock").read_text()) == written  # the refused one changed nothing
    assert list(tmp_path.iterdir()) == []  # released (and the directories it made for a new run removed)
    with RunLock(run_dir, command="fill"):  # and then the next one takes it
        assert read_holder(run_dir).command == "fill"


def test_a_live_driver_in_another_process_on_this_host_is_refused(tmp_path):
    holder = _plant(tmp_path)
    with pytest.raises(RunLocked, match=re.escape(f"(fill on host {holder.host}, pid {holder.pid}, since {holder.started})")):
        RunLock(tmp_path, command="run").acquire()
    assert read_holder(tmp_path) == holder


@pytest.mark.parametrize("case, fields, reason", [
    ("dead pid", lambda: {"pid": _dead_pid()}, "its process .* is gone"),
    ("pid reused", lambda: {"pid_start": locks._start_time(os.getppid()) + 1}, "is now another process"),
    ("other host, silent", lambda: {"host": "elsewhere", "heartbeat": (datetime.now(timezone.utc)
                                                                     - timedelta(seconds=61)).isoformat()},
     "no heartbeat for 6[01]s"),
    ("this process, not held", lambda: {"pid": os.getpid(), "pid_start": locks._start_time(os.getpid())},
     "this process holds no such lock"),
])
def test_a_dead_holders_lock_is_taken_over_with_one_log_line(tmp_path, caplog, case, fields, reason):
    if locks._start_time(os.getppid()) is None:
        pytest.skip("needs /proc")
    stale = _plant(tmp_path, **fields())
    with caplog.at_level(logging.WARNING, logger="store.lock"), RunLock(tmp_path, command="run") as taken:
        assert read_holder(tmp_path).token == taken.holder.token != stale.token
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and f"taking over the lock of fill on host {stale.host}, pid {stale.pid}" in lines[0]
    assert re.search(reason, lines[0]), lines[0]
    assert not (tmp_path / "driver.lock").exists()


def test_a_fresh_heartbeat_from_another_host_is_respected_and_an_unreadable_lock_taken_over(tmp_path, caplog):
    holder = _plant(tmp_path, host="elsewhere", pid=1)
    with pytest.raises(RunLocked, match=r"host elsewhere, pid 1, .*heartbeat \d+s ago.*after 60s without a heartbeat"):
        RunLock(tmp_path, command="run").acquire()
    assert read_holder(tmp_path) == holder
    (tmp_path / "driver.lock").write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="store.lock"), RunLock(tmp_path, command="run"):
        pass
    assert "an unreadable lock file: it does not parse" in caplog.text


def test_the_heartbeat_is_refreshed_and_a_lost_lock_is_noticed_and_left_alone(tmp_path, caplog):
    lock = RunLock(tmp_path, command="run", heartbeat_s=0.05)
    with lock:
        first = read_holder(tmp_path)
        deadline = time.monotonic() + 5
        while read_holder(tmp_path).heartbeat == first.heartbeat:
            assert time.monotonic() < deadline, "the heartbeat was never refreshed"
            time.sleep(0.02)
        assert read_holder(tmp_path).started == first.started and read_holder(tmp_path).token == first.token
        # Another driver took it over (as if this one had been silent past the stale limit).
        other = dataclasses.replace(first, token="0123456789abcdef", pid=1)
        with caplog.at_level(logging.WARNING, logger="store.lock"):
            (tmp_path / "driver.lock").write_bytes(other.dumps())
            while "lost its lock" not in caplog.text:
                assert time.monotonic() < deadline, caplog.text
                time.sleep(0.02)
    assert read_holder(tmp_path) == other  # the release deleted nothing of the new holder's
    assert "taken over meanwhile" in caplog.text


def test_a_takeover_removes_what_a_holder_killed_mid_heartbeat_left(tmp_path):
    _plant(tmp_path, pid=_dead_pid())
    (tmp_path / "driver.lock.123-abcd-driver.lock").write_text("half a heartbeat")
    (tmp_path / "manifest.json").write_text("{}")
    with RunLock(tmp_path, command="run"):
        assert sorted(p.name for p in tmp_path.iterdir()) == ["driver.lock", "manifest.json"]


def test_the_lock_is_released_on_an_error_and_a_new_run_leaves_no_directory(tmp_path):
    run_dir = tmp_path / "results" / "new"
    with pytest.raises(KeyboardInterrupt), RunLock(run_dir, command="run"):
        assert (run_dir / "driver.lock").exists()
        raise KeyboardInterrupt  # Ctrl-C, or SIGTERM turned into the same by the driver
    assert list(tmp_path.iterdir()) == []  # bad input found after the lock: nothing written, not even directories
    with RunLock(run_dir, command="run"):
        (run_dir / "manifest.json").write_text("{}")
    assert [p.name for p in run_dir.iterdir()] == ["manifest.json"]  # what the run wrote stays
