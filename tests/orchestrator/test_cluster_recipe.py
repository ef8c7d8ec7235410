"""The README's "On a GPU cluster" recipe, against a real head started with `ray start --head` on this machine.

Ray 2.60 turns token authentication on for a head started where a token exists
(``~/.ray/auth_token``: any local `ray.init()`, a plain `tilesweep run` included,
writes one). Then `ray job submit` is refused with ``AuthenticationError`` until the
submitting machine has the head's token and ``RAY_AUTH_MODE=token``. This test starts
such a head (its own HOME, a generated token, free ports, one logical GPU, a short
temporary directory), checks that refusal, submits the recipe's `tilesweep run` (a
one-config sweep of the tiny model) with the token passed as the README says
(``RAY_AUTH_TOKEN_PATH``), checks the results with `tilesweep status --check`, and
checks that `tilesweep run --address` without the token is one line, exit 2.

It stops only the processes it started: everything in the session of its
`ray start` (`ray stop` would stop every Ray on the machine, other tests' included).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.extended]  # `ray start --head` of its own

BIN = Path(sys.prefix) / "bin"


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def stop_session(sid: int) -> None:
    """SIGKILL every process of session `sid` (the head's GCS, raylet, dashboard, agents and workers)."""
    for _ in range(3):
        alive = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.getsid(int(entry)) == sid:
                        os.kill(int(entry), signal.SIGKILL)
                        alive.append(entry)
                except (ProcessLookupError, PermissionError):
                    pass
        if not alive:
            return
        time.sleep(0.5)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="stops the head through /proc")
def test_the_cluster_recipe_against_a_local_head(tmp_path):
    started = time.monotonic()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH"))}
    base.update(PATH=f"{BIN}{os.pathsep}{base.get('PATH', '')}", OMP_NUM_THREADS="1", RAY_USAGE_STATS_ENABLED="0")
    head_home, client_home = tmp_path / "head-home", tmp_path / "client-home"
    head_home.mkdir()
    client_home.mkdir()
    head_env = {**base, "HOME": str(head_home)}
    client_env = {**base, "HOME": str(client_home)}  # a machine without the token
    # The head machine has a token, as any machine where a local ray.init() ran does.
    subprocess.run([str(BIN / "ray"), "get-auth-token", "--generate"], env=head_env, check=True,
                   capture_output=True, timeout=60)
    token_on_head = head_home / ".ray" / "auth_token"
    assert token_on_head.is_file()
    gcs, dashboard, client_server, agent = free_ports(4)
    ray_tmp = Path(tempfile.mkdtemp(prefix="tsr-", dir="/tmp"))  # Ray's socket paths must stay under 108 bytes
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs}",
         f"--dashboard-port={dashboard}", f"--ray-client-server-port={client_server}",
         f"--dashboard-agent-listen-port={agent}", "--dashboard-host=127.0.0.1", "--num-cpus=1", "--num-gpus=1",
         f"--temp-dir={ray_tmp}", "--disable-usage-stats"],
        env=head_env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    steps = {"token": time.monotonic() - started}
    try:
        out, _ = head.communicate(timeout=180)
        assert head.returncode == 0, out[-3000:]
        steps["ray start"] = time.monotonic() - started
        results = tmp_path / "results"
        submit = [str(BIN / "ray"), "job", "submit", "--address", f"http://127.0.0.1:{dashboard}", "--",
                  "tilesweep", "run", "--address", "auto", "--gpus-per-worker", "1", "--workers", "1",
                  "--tilings", "1x1", "--repeats", "1", "--warmup", "0", "--results", str(results)]

        # Without the head's token the job API refuses the submission.
        denied = subprocess.run(submit, env=client_env, capture_output=True, text=True, timeout=120)
        assert denied.returncode != 0 and "AuthenticationError" in denied.stdout + denied.stderr
        assert not results.exists()
        steps["refused"] = time.monotonic() - started

        # Joining by address without the token: one line, exit 2 (runs while the job below runs).
        joining = subprocess.Popen([str(BIN / "tilesweep"), "run", "--address", f"127.0.0.1:{gcs}",
                                    "--results", str(tmp_path / "not-written")],
                                   env=client_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        # The recipe: the token copied to the submitting machine, named by RAY_AUTH_TOKEN_PATH.
        token_here = client_home / "ray-auth-token"
        shutil.copy(token_on_head, token_here)
        with_token = {**client_env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_here)}
        job = subprocess.run(submit, env=with_token, capture_output=True, text=True, timeout=300)
        assert job.returncode == 0, (job.stdout + job.stderr)[-4000:]
        assert "succeeded" in job.stdout + job.stderr
        steps["job"] = time.monotonic() - started
        status = subprocess.run([str(BIN / "tilesweep"), "status", "--check", "--results", str(results)],
                                env=client_env, capture_output=True, text=True, timeout=120)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "invariant holds: 1 planned, 1 ok, 0 failed, 0 missing" in status.stdout

        steps["status"] = time.monotonic() - started
        _, err = joining.communicate(timeout=120)
        lines = err.strip().splitlines()
        assert joining.returncode == 2 and len(lines) == 1, err[-3000:]
        assert f"Ray at '127.0.0.1:{gcs}' refused this client's token" in lines[0]
        assert "RAY_AUTH_MODE=token" in lines[0] and not (tmp_path / "not-written").exists()
    finally:
        stop_session(head.pid)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    steps["stopped"] = time.monotonic() - started
    print("cluster recipe, seconds from the start:", ", ".join(f"{k} {v:.1f}" for k, v in steps.items()))
