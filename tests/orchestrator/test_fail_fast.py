"""Failing fast with the cause in one line: a model that cannot load, an address that is not Ray, an actor that cannot start.

Before, `tilesweep run --model some-org/not-a-model` on a machine without network
started Ray, failed two actors and ended after ~45 s with 40 lines, colour codes and
its cause cut off at 500 characters (exit 1); an address whose port answered but was
not Ray's hung for minutes in `ray.init`. Now the first two are refused by the
preflight, before Ray, in one line (exit 2), and an actor that cannot start ends the
sweep with its root cause last, whole. Real parts throughout: the installed script,
the hub cache layout read by `huggingface_hub` itself, real sockets, real Ray actors.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import ray.cloudpickle

from orchestrator import preflight
from orchestrator.cluster import cluster_gpus, worker_plan
from orchestrator.driver import Driver
from orchestrator.plan import plan
from orchestrator.spec import build_spec
from store import invariant
from store.runs import RunStore
from store.scan import scan
from tilesweep.errors import SweepError, UsageError
from tilings import PROFILES
from workers import ModelHost

TILESWEEP = Path(sys.prefix) / "bin" / "tilesweep"
COMMIT = "0123456789abcdef0123456789abcdef01234567"

# The test module is not importable in Ray's workers; its classes travel by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def cache_config(cache: Path, repo: str, config: dict) -> Path:
    """A hub cache entry as `huggingface_hub` lays it out: refs/main names a snapshot holding config.json."""
    entry = cache / ("models--" + repo.replace("/", "--"))
    (entry / "refs").mkdir(parents=True, exist_ok=True)
    (entry / "refs" / "main").write_text(COMMIT)
    snapshot = entry / "snapshots" / COMMIT
    snapshot.mkdir(parents=True, exist_ok=True)
    (snapshot / "config.json").write_text(json.dumps(config))
    return snapshot


def test_an_uncached_hub_id_offline_is_one_line_exit_2_before_ray(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "empty-cache"))
    results = tmp_path / "results"
    started = time.monotonic()
    done = subprocess.run([str(TILESWEEP), "run", "--model", "some-org/not-a-model", "--results", str(results)],
                          capture_output=True, text=True, timeout=120, env=env)
    elapsed = time.monotonic() - started
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(lines) == 1, done.stderr[-2000:]
    line = lines[0]
    for needle in ("'some-org/not-a-model' is a hub id", "HF_HUB_OFFLINE is set", str(tmp_path / "empty-cache"),
                   "`hf download some-org/not-a-model`", "a registered model (tiny-molmo2"):
        assert needle in line, line
    assert "\x1b" not in done.stderr and done.stdout == ""
    assert not results.exists()  # nothing written, no run started
    # No Ray started: a local cluster alone takes longer than this on this machine.
    assert elapsed < 25, f"{elapsed:.1f} s"


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty hub cache and a hub endpoint that refuses connections (no network), as huggingface_hub reads them."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:1")
    for proxy in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):  # a proxy hides the refusal
        monkeypatch.delenv(proxy, raising=False)
    return cache


def spec_for(model: str, **fields):
    return dataclasses.replace(build_spec(None, {"model": model}), **fields)


def test_without_network_the_preflight_reads_only_the_hub_cache(hub):
    from workers.registry import MODELS

    with pytest.raises(UsageError) as err:
        preflight.check_model(spec_for("some-org/not-a-model"))
    assert "cannot connect to 127.0.0.1:1" in str(err.value) and "not in the hub cache" in str(err.value)
    assert not list(hub.iterdir())  # nothing downloaded or created

    # A cached config.json is checked like a local checkpoint, and the refusal names the hub id, not the cache.
    llama = cache_config(hub, "org/llama", {"model_type": "llama"})
    with pytest.raises(UsageError) as err:
        preflight.check_model(spec_for("org/llama"))
    assert str(err.value).startswith("model 'org/llama' has model_type 'llama'; supported:")
    assert str(llama) not in str(err.value)

    cache_config(hub, "org/v1", {"model_type": "molmo"})
    with pytest.raises(UsageError, match="'org/v1' is a Molmo v1 checkpoint.*pass --trust-remote-code"):
        preflight.check_model(spec_for("org/v1"))
    preflight.check_model(spec_for("org/v1", trust_remote_code=True))  # passes: the flag is given

    cache_config(hub, "org/tiny", MODELS["tiny-molmo2"].config().to_dict())
    preflight.check_model(spec_for("org/tiny"))  # a loadable type, cached: passes
    with pytest.raises(UsageError, match="'org/tiny' at revision 'v2' is a hub id"):
        preflight.check_model(spec_for("org/tiny", revision="v2"))  # that revision is not cached


class _Replier:
    """A TCP server on 127.0.0.1 that answers every connection with `reply` (b"": says nothing)."""

    def __init__(self, reply: bytes):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.reply = reply
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.recv(64)
            if self.reply:
                conn.sendall(self.reply)
            time.sleep(5)  # keep the connection open: a silent server must not look like a refusal
            conn.close()


def test_a_port_that_answers_but_is_not_ray_is_refused_in_seconds(ray_cluster):
    web = _Replier(b"HTTP/1.0 400 Bad request\r\n\r\n")
    silent = _Replier(b"")
    for server, said in ((web, "it replied 'HTTP/1.0 '"), (silent, "it replied 'nothing'")):
        started = time.monotonic()
        with pytest.raises(UsageError) as err:
            preflight.check_address(f"127.0.0.1:{server.port}")
        assert time.monotonic() - started < 5  # ray.init retried such a port for minutes
        assert str(err.value).startswith(f"'127.0.0.1:{server.port}' answers but is not Ray ({said}")
        assert "pass the GCS address" in str(err.value)
        server.sock.close()
    preflight.check_address(ray_cluster.address)  # a real GCS passes the same check


class _UnloadableHost:
    """A host whose constructor fails the way a model that cannot load does, with a long message."""

    CAUSE = "model 'org/x' cannot be loaded: " + "a long reason, " * 40 + "and the fix at the very end"

    def __init__(self, **_):
        raise UsageError(self.CAUSE)


def test_an_actor_that_cannot_start_ends_the_sweep_with_its_whole_cause_last(ray_cluster, tmp_path):
    spec = build_spec(None, {"results": str(tmp_path), "run_id": "r", "tilings": "1x1", "repeats": 1,
                             "warmup": 0, "workers": 1})
    driver = Driver(spec, RunStore(spec.results, "r"), worker_plan(spec, cluster_gpus()), host_cls=_UnloadableHost)
    try:
        with pytest.raises(SweepError) as err:
            driver.run(plan(spec, PROFILES["molmo2"]), PROFILES["molmo2"])
    finally:
        driver.shutdown()
    message = str(err.value)
    # one round, not max_attempts of them: the first start failing everywhere means it cannot start at all
    assert message.startswith("no host actor could start (1 failed start(s)); the first: w0 on node "), message[:200]
    assert message.endswith(f": UsageError: {_UnloadableHost.CAUSE}"), message[-300:]
    assert "\x1b" not in message and "\n" not in message and "File \"" not in message
    node = message.split(" on node ", 1)[1].split(" ", 1)[0]
    assert any(n["NodeID"].startswith(node) for n in ray.nodes()), node  # the node it was placed on, named


class _HostBrokenOnOneNode(ModelHost):
    """The real host, except that its constructor raises on the node named by TILESWEEP_TEST_BAD_NODE."""

    def __init__(self, **kwargs):
        node = ray.get_runtime_context().get_node_id()
        if node == os.environ.get("TILESWEEP_TEST_BAD_NODE"):
            raise RuntimeError(f"CUDA error: no kernel image is available (node {node[:12]})")
        super().__init__(**kwargs)


def test_a_host_that_cannot_start_on_one_node_leaves_the_sweep_to_the_other(ray_cluster, tmp_path, caplog):
    gpu_nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU"))
    bad, good = gpu_nodes[0], gpu_nodes[1]
    # two actors of a whole 2-GPU node each: one lands on each node, and the bad one's replacement on the bad node
    spec = build_spec(None, {"results": str(tmp_path), "run_id": "r", "tilings": "1x1,1x2,2x1", "repeats": 1,
                             "warmup": 0, "workers": 2, "gpus_per_worker": 2, "max_attempts": 2})
    store = RunStore(spec.results, "r")
    driver = Driver(spec, store, worker_plan(spec, cluster_gpus()), host_cls=_HostBrokenOnOneNode,
                    actor_env={"TILESWEEP_TEST_BAD_NODE": bad})
    configs = plan(spec, PROFILES["molmo2"])
    with caplog.at_level("WARNING", logger="orchestrator.pool"):
        out = driver.run(configs, PROFILES["molmo2"])
    assert (out.ok, out.failed, out.remaining) == (3, 0, 0)
    rows = scan(tmp_path / "r").collect()
    assert set(rows["node_id"]) == {good} and set(rows["status"]) == {"ok"}
    assert f"on node {bad[:12]}" in caplog.text and "no kernel image" in caplog.text
    assert "given up after 2 failed start(s) in a row; the sweep goes on with" in caplog.text
    report = invariant.check(tmp_path, "r", planned=configs)
    assert report.ok, report.problems
