"""Results on object storage, end to end: a real sweep into S3, a server that stalls mid-sweep, bad URIs.

The server is moto's S3 server on the loopback (the session's `s3_server`); the
sweep runs through the CLI in this process on the session's Ray cluster. Between
the sweep and the server sits a small TCP proxy that can stall: it keeps every
connection open and forwards nothing, as a server that hangs does. The S3
client's own timeouts (``request_timeout=1`` in the URI) bound the stall.

Bad URIs are refused like the other bad input (`test_bad_input.py`): one line,
exit 2, nothing written anywhere, in seconds and before Ray starts.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from analysis import query
from orchestrator import cli

pytestmark = pytest.mark.ray

# One actor: a model load is most of a sweep's time on a small machine, and two load no faster here.
FAST = ["--warmup", "0", "--repeats", "2", "--workers", "1"]


class StallingProxy:
    """A TCP proxy to `upstream` on 127.0.0.1; `stall()` makes every connection, old and new, go silent."""

    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self.flowing = threading.Event()
        self.flowing.set()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def stall(self) -> None:
        self.flowing.clear()

    def resume(self) -> None:
        self.flowing.set()

    def close(self) -> None:
        self.flowing.set()
        for s in [self.listener, *self.sockets]:
            s.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.sockets.append(client)
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        self.flowing.wait()
        try:
            server = socket.create_connection(self.upstream)
        except OSError:
            client.close()
            return
        self.sockets.append(server)
        for src, dst in ((client, server), (server, client)):
            threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                self.flowing.wait()  # stalled: hold the bytes, keep the connection open
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:g}s waiting for {what}"
        time.sleep(0.05)


def test_a_sweep_into_s3_survives_a_stalled_server_and_status_query_report_read_it_there(
        ray_cluster, s3_server, s3_results, tmp_path, capsys, caplog, assert_invariant):
    bucket = s3_results.split("/")[2]
    host, port = s3_server.endpoint.rsplit("/", 1)[-1].split(":")
    proxy = StallingProxy((host, int(port)))
    results = f"{s3_results}?endpoint_override=127.0.0.1:{proxy.port}&scheme=http&request_timeout=1"
    argv = ["run", "--results", results, "--run-id", "s3", "--tilings", "1x1,1x2,2x1", *FAST]
    parts = lambda: {k: v for k, v in s3_server.objects(bucket).items() if "/part-" in k}  # noqa: E731
    client = s3_server.client()

    # The server stalls once the first part is in: the next request of the driver hangs until its timeout.
    def stall_after_first_part() -> None:
        listed = lambda: client.list_objects_v2(Bucket=bucket, Prefix="results/s3/part-").get("KeyCount")  # noqa: E731
        _wait_for(lambda: listed() or done.is_set(), 300, "the first part")
        proxy.stall()

    done = threading.Event()
    watcher = threading.Thread(target=stall_after_first_part, daemon=True)
    watcher.start()
    capsys.readouterr()
    t0 = time.monotonic()
    try:
        code = cli.main(argv)
    finally:
        done.set()
        watcher.join()
    stalled_s = time.monotonic() - t0
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 1, err
    assert len(lines) == 1 and lines[0].startswith("tilesweep run: cannot write the results of "), err
    assert f"{s3_results}/s3" in lines[0] and "run the same command again to resume" in lines[0]
    finished = parts()
    assert 1 <= len(finished) < 3

    proxy.resume()
    with caplog.at_level("INFO"):
        assert cli.main(argv) == 0  # the same command: measures what is missing
    assert "taking over the lock of run" in caplog.text  # the stalled driver could not delete its lock
    objects = s3_server.objects(bucket)
    assert all(objects[k] == v for k, v in finished.items())  # nothing finished was lost or rewritten
    # One part per config; the one whose write stalled was never stored, so no attempt number was used up.
    assert sorted(k.rsplit("/", 1)[-1] for k in objects if "/part-" in k) == sorted(
        f"part-{cid}-1.parquet" for cid in _planned(results, "s3"))
    assert_invariant(results, "s3")

    # The readers, from the object store, through the CLI and the Python API.
    capsys.readouterr()
    assert cli.main(["status", "--results", results, "--check"]) == 0
    out = capsys.readouterr().out
    assert "run s3 (tiny-molmo2, profile molmo2): 3/3 done, 0 failed, 0 missing" in out and "invariant holds" in out
    assert cli.main(["query", "--results", results, "SELECT tiling, n FROM summary ORDER BY tiling",
                     "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines() == ["tiling,n", "1x1,2", "1x2,2", "2x1,2"]
    assert cli.main(["report", "--results", results, "-o", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "report.html").stat().st_size > 10_000
    assert query.summary(query.scan(results)).collect().height == 3

    # The planted secret key went nowhere: not into an object, a report file, the output or the logs.
    secret = os.environ["AWS_SECRET_ACCESS_KEY"].encode()
    written = [*s3_server.objects(bucket).values(),
               *(p.read_bytes() for p in Path(tmp_path).rglob("*") if p.is_file())]
    said = (err + capsys.readouterr().err + caplog.text).encode()
    assert secret not in said and not any(secret in blob for blob in written)
    assert stalled_s < 120  # the stall was bounded by the client's timeouts, not waited out
    proxy.close()


def _planned(results: str, run_id: str) -> list[str]:
    from store.runs import RunStore

    return list(RunStore(results, run_id).read_manifest().planned)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# (id, how the environment is changed, the results URI given the fresh bucket's, words the one line must hold)
BAD_URIS = [
    ("unknown-scheme", {}, lambda uri: "nope://bucket/results", ["unknown scheme 'nope'", "s3://BUCKET/PREFIX"]),
    ("missing-bucket", {}, lambda uri: "s3://no-such-bucket-tilesweep/results",
     ["cannot write results to 's3://no-such-bucket-tilesweep/results/", "NoSuchBucket during PutObject: The specified bucket does not exist",
      "create the bucket, or check its name"]),
    ("no-credentials", {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None,
                        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/credentials", "AWS_CONFIG_FILE": "/nonexistent/config"},
     lambda uri: uri, ["no credentials for 's3://", "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"]),
    ("unreachable-endpoint", {"AWS_ENDPOINT_URL": "http://127.0.0.1:{closed}"}, lambda uri: uri,
     ["cannot write results to 's3://", "cannot connect to the endpoint 127.0.0.1:{closed} within 2s",
      "Connection refused", "is reachable"]),
    ("credentials-in-uri", {}, lambda uri: uri.replace("s3://", "s3://AKIAX:hunter2-secret@"),
     ["carries credentials", "AWS_ACCESS_KEY_ID"]),
]


@pytest.mark.parametrize("env, make_uri, needles", [c[1:] for c in BAD_URIS], ids=[c[0] for c in BAD_URIS])
def test_a_bad_results_uri_is_one_line_exit_2_and_writes_nothing(s3_server, s3_results, tmp_path, monkeypatch,
                                                                    capsys, snapshot, env, make_uri, needles):
    closed = _closed_port()
    for name, value in env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value.format(closed=closed))
    monkeypatch.chdir(tmp_path)
    uri = make_uri(s3_results)
    bucket = s3_results.split("/")[2]
    capsys.readouterr()
    t0 = time.monotonic()
    code = cli.main(["run", "--results", uri, "--tilings", "1x1", *FAST])  # a new run: preflight checks the store
    elapsed = time.monotonic() - t0
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("tilesweep run: error: ") and "Traceback" not in err
    for needle in needles:
        assert needle.format(closed=closed) in lines[0], lines[0]
    assert "hunter2" not in err
    assert s3_server.objects(bucket) == {} and snapshot(tmp_path) == {}  # nothing written, here or there
    assert elapsed < 15, f"refused after {elapsed:.1f}s"  # before Ray: a local cluster alone takes longer


def test_readers_of_an_unreachable_store_say_so_in_one_line(s3_results, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_closed_port()}")
    # `report` reads as `query` does (`analysis.query.scan_results`), `compact` finds runs as `status` does.
    for argv in (["status", "--results", s3_results, "--check"], ["query", "--results", s3_results, "SELECT 1"]):
        capsys.readouterr()
        assert cli.main(argv) == 2, argv
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == 1 and "cannot use s3://" in lines[0] and "NETWORK_CONNECTION" in lines[0], lines
        assert "check --results (the bucket, the endpoint: AWS_ENDPOINT_URL" in lines[0]
    assert list(tmp_path.iterdir()) == []
