"""Faults to the driver process itself: SIGKILL mid-sweep, and a results directory it cannot write.

The driver runs as the installed `tilesweep` script in its own process (its own
session, so the whole group can be killed) and joins the session's Ray cluster with
``--address``. The resume runs the same command line in this process.

Tests run as root here, where file permissions are not enforced. A directory that
cannot be written is made real by running the driver without the capabilities that
bypass permissions (``CAP_DAC_OVERRIDE``, ``CAP_DAC_READ_SEARCH``, dropped from the
child's bounding set before it starts); as any other user a plain ``chmod`` does it.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator import cli
from store.invariant import attempts

pytestmark = pytest.mark.ray

TILESWEEP = Path(sys.prefix) / "bin" / "tilesweep"
TILINGS = "1x1,1x2,1x3,1x4,2x1,2x2,3x1,4x1"
_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2


def _drop_permission_override() -> None:
    """preexec_fn: this child, even as root, is held to file permissions."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def permissions_enforced_child() -> dict:
    """Popen kwargs under which a child obeys file permissions; skips where that cannot be had."""
    if os.geteuid() != 0:
        return {}
    probe = subprocess.run([sys.executable, "-c", "pass"], preexec_fn=_drop_permission_override,
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip("running as root without CAP_SETPCAP: cannot make file permissions apply")
    return {"preexec_fn": _drop_permission_override}


def model_host_pids() -> set[int]:
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(b"ray::ModelHost"):
                    pids.add(int(entry.name))
            except OSError:
                continue
    return pids


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


def whole_parts(run_dir: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in run_dir.glob("part-*.parquet")}


def test_driver_killed_with_sigkill_then_the_same_command_measures_only_what_is_missing(
        ray_cluster, tmp_path, env_without_ray_address, assert_invariant, capsys, caplog):
    """Also the run lock (`store.lock`): a second driver on the run while the first measures is refused in
    one line naming it, and the lock the SIGKILLed driver left is taken over by the resume at once."""
    results = tmp_path / "results"
    run_dir = results / "killed"
    argv = ["run", "--address", ray_cluster.address, "--results", str(results), "--run-id", "killed",
            "--tilings", TILINGS, "--warmup", "0", "--repeats", "2", "--workers", "2"]
    # 4x1 hangs on its first attempt, so the driver is surely mid-sweep when it is killed.
    env = {**env_without_ray_address, "TILESWEEP_INJECT": "hang@4x1/1"}
    hosts_before = model_host_pids()
    with open(tmp_path / "driver.log", "w") as log:
        proc = subprocess.Popen([str(TILESWEEP), *argv], stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        try:
            wait_for(lambda: len(whole_parts(run_dir)) >= 2 or proc.poll() is not None, 180, "two parts")
            assert proc.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
            ours = model_host_pids() - hosts_before
            # A fill of the same run meanwhile: refused before Ray starts, naming the running driver.
            capsys.readouterr()
            assert cli.main(["fill", "--results", str(results), "--run-id", "killed", "--tilings", "1x1"]) == 2
            lines = capsys.readouterr().err.splitlines()
            assert len(lines) == 1 and lines[0].startswith("tilesweep fill: error: run 'killed' is in use by another "
                                                           f"driver (run on host {socket.gethostname()}, pid {proc.pid}, "
                                                           "since "), lines
            assert f"delete {run_dir / 'driver.lock'}" in lines[0]
            os.killpg(proc.pid, signal.SIGKILL)  # the driver and anything it started in its group
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
    assert proc.returncode == -signal.SIGKILL and ours
    # Ray kills a dead driver's actors: none of its host processes lingers (the hung one included).
    wait_for(lambda: not (ours & model_host_pids()), 60, "the killed driver's actors to exit")
    before = whole_parts(run_dir)
    done_before = attempts(run_dir)
    assert 2 <= len(done_before) < 8

    assert (run_dir / "driver.lock").exists()  # SIGKILL left it: the resume must not be blocked by it
    with caplog.at_level(logging.WARNING, logger="store.lock"):
        assert cli.main(argv) == 0  # the same command, without the injected hang
    assert f"run killed: taking over the lock of run on host {socket.gethostname()}, pid {proc.pid}" in caplog.text
    assert f"its process {proc.pid} is gone" in caplog.text and not (run_dir / "driver.lock").exists()
    after = attempts(run_dir)
    assert len(after) == 8
    # Nothing measured twice: the configs done before keep their one part, untouched.
    assert {cid: after[cid] for cid in done_before} == done_before
    assert all(whole_parts(run_dir)[name] == stat for name, stat in before.items())
    assert all(len(a) == 1 for a in after.values())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    resumed = manifest["invocations"][-1]
    # The refused fill added no invocation; a fill now (of a tiling already measured: no Ray) is let in.
    assert len(manifest["invocations"]) == 2 and resumed["measured"] == 8 - len(done_before)
    assert_invariant(results, "killed")
    assert cli.main(["fill", "--results", str(results), "--run-id", "killed", "--tilings", "1x1"]) == 0
    assert [i["command"] for i in json.loads((run_dir / "manifest.json").read_text())["invocations"]] == [
        "run", "run", "fill"]
    assert_invariant(results, "killed")


def test_a_results_directory_that_cannot_be_written_is_refused_before_any_work(tmp_path, env_without_ray_address):
    child = permissions_enforced_child()
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        t0 = time.monotonic()
        proc = subprocess.run([str(TILESWEEP), "run", "--results", str(locked / "results"), "--tilings", "1x1"],
                              capture_output=True, text=True, timeout=120, env=env_without_ray_address, **child)
        elapsed = time.monotonic() - t0
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.splitlines()
        # One line, and no log line before it: no Ray cluster was started, no model loaded.
        assert len(lines) == 1 and "Permission denied" in lines[0], proc.stderr
        assert f"cannot write results to '{locked}/results/" in lines[0] and "fix its permissions" in lines[0]
        assert list(locked.iterdir()) == [] and elapsed < 30
    finally:
        locked.chmod(0o700)


def test_a_results_directory_made_read_only_mid_sweep_stops_cleanly_and_resumes(
        ray_cluster, tmp_path, env_without_ray_address, assert_invariant):
    """The full-disk case: a write fails mid-sweep. Finished parts stay whole, the driver says so
    in one line (exit 1), and once the directory is writable again the same command finishes."""
    child = permissions_enforced_child()
    results = tmp_path / "results"
    run_dir = results / "ro"
    argv = ["run", "--address", ray_cluster.address, "--results", str(results), "--run-id", "ro",
            "--tilings", TILINGS, "--warmup", "0", "--repeats", "2", "--workers", "2", "--config-timeout", "5"]
    # 4x1 hangs once and is retried after the timeout: a write surely comes after the lock.
    env = {**env_without_ray_address, "TILESWEEP_INJECT": "hang@4x1/1"}
    with open(tmp_path / "driver.log", "w") as log:
        proc = subprocess.Popen([str(TILESWEEP), *argv], stdout=subprocess.DEVNULL, stderr=log, env=env,
                                start_new_session=True, **child)
        try:
            wait_for(lambda: len(whole_parts(run_dir)) >= 1 or proc.poll() is not None, 180, "a part")
            run_dir.chmod(0o500)
            proc.wait(120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            run_dir.chmod(0o755)
    err = (tmp_path / "driver.log").read_text()
    last = err.strip().splitlines()[-1]
    assert proc.returncode == 1, err[-3000:]
    assert last.startswith("tilesweep run: cannot write the results of ") and "Permission denied" in last
    assert "run the same command again to resume" in last and "Traceback" not in err
    before = whole_parts(run_dir)
    assert before and not list(run_dir.glob(".tmp-*"))

    assert cli.main(argv) == 0
    assert len(attempts(run_dir)) == 8
    assert all(whole_parts(run_dir)[name] == stat for name, stat in before.items())
    assert_invariant(results, "ro")
