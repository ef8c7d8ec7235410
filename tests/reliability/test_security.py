"""Security: remote code only with --trust-remote-code, a loopback-only dashboard, results as data only.

A checkpoint directory whose code would leave a marker file when imported shows
that nothing of it runs without the flag, in the driver or in a worker, and that
the flag is what lets it run. A local cluster started the way `tilesweep run`
starts one is inspected from the operating system's socket table. A static scan of
the source guards against anything that could execute what it reads.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from orchestrator import cli

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("tilesweep", "tilings", "workers", "store", "analysis", "orchestrator")


def remote_code_checkpoint(root: Path, marker: Path) -> Path:
    """A Molmo v1 style checkpoint (``model_type: molmo``) whose Python files create `marker` on import."""
    root.mkdir()
    (root / "config.json").write_text(json.dumps({
        "model_type": "molmo", "architectures": ["MolmoForCausalLM"],
        "auto_map": {"AutoConfig": "configuration_molmo.MolmoConfig",
                     "AutoModelForCausalLM": "modeling_molmo.MolmoForCausalLM"}}))
    code = f"from pathlib import Path\nPath({str(marker)!r}).touch()\n"
    (root / "configuration_molmo.py").write_text(code)
    (root / "modeling_molmo.py").write_text(code)
    return root


def test_remote_code_never_runs_without_the_flag(tmp_path, capsys):
    marker = tmp_path / "code-ran"
    ckpt = remote_code_checkpoint(tmp_path / "ckpt", marker)
    # The driver refuses before Ray or any import of the checkpoint...
    assert cli.main(["run", "--model", str(ckpt), "--results", str(tmp_path / "results")]) == 2
    assert "pass --trust-remote-code" in capsys.readouterr().err
    # ...and so does the worker's host, should anything call it directly.
    from workers import ModelHost

    with pytest.raises(ValueError, match="pass --trust-remote-code"):
        ModelHost(str(ckpt), device="cpu")
    assert not marker.exists() and not (tmp_path / "results").exists()


def test_the_flag_is_what_lets_a_checkpoints_code_run(tmp_path):
    """Control for the test above: with trust_remote_code the same files are imported (the marker
    appears), so the refusal is the flag's doing. In a child process with its own module cache."""
    marker = tmp_path / "code-ran"
    ckpt = remote_code_checkpoint(tmp_path / "ckpt", marker)
    script = ("import torch\nfrom workers.loading import load\n"
              f"load({str(ckpt)!r}, device=torch.device('cpu'), dtype=torch.float32, trust_remote_code=True)\n")
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert marker.exists()


def _listening_ports(pid: int) -> list[tuple[str, int]]:
    """(local address in /proc's hex, port) of every TCP socket `pid` listens on."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                address, port = fields[1].split(":")
                found.append((address, int(port, 16)))
    return found


def _is_loopback(hex_address: str) -> bool:
    if len(hex_address) == 8:  # IPv4, little-endian
        return hex_address[-2:] == "7F"
    words = [hex_address[i:i + 8] for i in range(0, 32, 8)]
    return words == ["00000000", "00000000", "00000000", "01000000"] or (
        words[:3] == ["00000000", "00000000", "FFFF0000"] and words[3][-2:] == "7F")


def _only_metrics(port: int) -> bool:
    """Whether `port` serves Prometheus metrics (read-only text) and nothing like an API or a page."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/version", timeout=5) as response:
            kind = response.headers.get("Content-Type", "")
            return response.status == 200 and kind.startswith("text/plain") and "version=0.0.4" in kind
    except (OSError, ValueError):  # an HTTP error (401 from an API behind a token, 404, ...) or no HTTP
        return False


@pytest.mark.extended  # a local cluster of its own
@pytest.mark.ray
def test_a_local_cluster_started_by_tilesweep_serves_no_dashboard_beyond_loopback(tmp_path, env_without_ray_address):
    """Ray's dashboard is off: Ray reports no URL for it, and every socket its process opens off
    loopback serves Prometheus metrics only (Ray keeps its metrics exporter in that process, on
    every interface; Ray's own internal services listen where Ray puts them, see the README)."""
    script = """
import json, time
from pathlib import Path
import ray
from orchestrator.cluster import connect
assert connect(None, num_cpus=1)
node = ray._private.worker._global_node
session = node.get_session_dir_path()
pids = []
for entry in Path("/proc").iterdir():
    if entry.name.isdigit():
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\\0", b" ").decode()
        except OSError:
            continue
        if "dashboard/dashboard.py" in cmd and session in cmd:
            pids.append(int(entry.name))
time.sleep(2)  # let it bind what it binds
print(json.dumps({"pids": pids, "url": node.webui_url}), flush=True)
input()
ray.shutdown()
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env_without_ray_address, cwd=tmp_path)
    try:
        line = proc.stdout.readline()
        assert line, "the child did not start a cluster"
        started = json.loads(line)
        sockets = [s for pid in started["pids"] for s in _listening_ports(pid)]
        exposed = [port for address, port in sockets if not _is_loopback(address) and not _only_metrics(port)]
    finally:
        proc.communicate("\n", timeout=120)
    assert started["url"] in ("", None)
    assert exposed == []


@pytest.mark.parametrize("content_type, status, metrics_only", [
    ("text/plain; version=0.0.4; charset=utf-8", 200, True),
    ("application/json", 200, False),  # an API answering
    ("text/html", 401, False),  # a page or an API behind a token
])
def test_the_probe_tells_a_metrics_exporter_from_anything_else(content_type, status, metrics_only):
    """Control for the test above, against real HTTP servers on loopback."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.end_headers()
            self.wfile.write(b'{"ray_version": "2.60.0"}' if "json" in content_type else b"# HELP x\n")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert _only_metrics(server.server_port) is metrics_only
    finally:
        server.shutdown()


# Calls that would execute or unpickle what they read.
_UNSAFE_CALLS = {"eval", "exec", "pickle.load", "pickle.loads", "cloudpickle.load", "cloudpickle.loads",
                 "marshal.load", "marshal.loads", "shelve.open", "dill.load", "dill.loads", "joblib.load",
                 "yaml.load", "yaml.unsafe_load", "yaml.full_load", "pd.read_pickle", "pandas.read_pickle"}
_UNSAFE_MODULES = {"pickle", "cloudpickle", "marshal", "shelve", "dill", "joblib"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def unsafe_uses(source: str, filename: str) -> list[str]:
    """Every call or import in `source` through which data could become code."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names]
            if isinstance(node, ast.ImportFrom):
                names = [node.module or "", *(f"{node.module}.{n}" for n in names)]
            found += [f"{where} imports {n}" for n in names if n.split(".")[-1] in _UNSAFE_MODULES]
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        keywords = {k.arg: k.value for k in node.keywords}
        if name in _UNSAFE_CALLS:
            found.append(f"{where} calls {name}")
        if name.endswith("torch.load"):
            safe = keywords.get("weights_only")
            if not (isinstance(safe, ast.Constant) and safe.value is True):
                found.append(f"{where} calls torch.load without weights_only=True")
        if name.endswith("np.load") or name.endswith("numpy.load"):
            if isinstance(keywords.get("allow_pickle"), ast.Constant) and keywords["allow_pickle"].value:
                found.append(f"{where} calls {name} with allow_pickle")
        remote = keywords.get("trust_remote_code")
        if isinstance(remote, ast.Constant) and remote.value is True and not filename.endswith(GATED):
            found.append(f"{where} passes trust_remote_code=True outside the gated loader")
    return found


# Where a checkpoint's own code may be loaded: Molmo v1's loader (an `Architecture` with
# remote_code=True), which `workers.loading.load` calls only after `_check_model_type` saw the flag.
GATED = ("workers/loading.py", "workers/molmo.py")


def test_the_scan_finds_what_it_looks_for():
    bad = ("import pickle\nfrom ray import cloudpickle\nimport yaml, torch\n"
           "pickle.loads(b'')\neval('1')\nyaml.load(s)\ntorch.load(p)\ntorch.load(p, weights_only=False)\n"
           "f(x, trust_remote_code=True)\n")
    found = unsafe_uses(bad, "x.py")
    assert len(found) == 8, found
    good = "import yaml, torch\nyaml.safe_load(s)\ntorch.load(p, weights_only=True)\njson.loads(t)\n"
    assert unsafe_uses(good, "x.py") == []


def test_no_source_executes_or_unpickles_what_it_reads():
    files = [p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))]
    assert len(files) > 20
    found = [u for path in files for u in unsafe_uses(path.read_text(), str(path.relative_to(REPO)))]
    assert found == []
