"""Session-wide fixtures: one local multi-node Ray cluster for every Ray test, and results built from real geometry.

`default_sweep` runs `make sweep` (the README's first command: the embedded default
job on a private local Ray cluster) once per session in a fresh clone; the make-sweep
test checks it and the README test runs the README's examples on a copy of its results.

`ray_cluster` starts `ray.cluster_utils.Cluster` once per test session: a head
node that holds no GPUs and two worker nodes with two logical GPUs each, then
connects this process with `ray.init`. Tests that add or remove nodes must put
the node set back as they found it (`restore_nodes` helps). Starting the cluster
costs a few seconds, so tests that need Ray share it instead of starting their own.

`make test` runs the suite in two pytest-xdist processes: every test that uses the session's cluster or a
sweep of its own (the `ray` mark, `ray_cluster`, `default_sweep`) goes to one of them, in order, as the
`cluster` group (one cluster per session, and sweeps never compete with each other for the 2 cores); the
other process takes the single-threaded tests meanwhile.

`make_records` builds valid result records from real tiling geometry; `synth` is
this module, whose helpers write synthetic results with the real schema into the
real layout, stage times following planted costs plus seeded noise, so the store,
the query layer and the latency model can be checked against the values that
generated them (test modules cannot import a conftest under importlib mode).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from store.schema import records_to_table
from tilings import PROFILES, Tiling, resolution_for, tiling_geometry
from workers.record import STATUS_FAILED, STATUS_OK, Record

CLUSTER_FIXTURES = {"ray_cluster", "ray_nodes_restored", "default_sweep"}
WORKER_NODES = 2
GPUS_PER_NODE = 2
CPUS_PER_NODE = 2


REPO = Path(__file__).resolve().parents[1]


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(config, items):
    """Under xdist (``--dist loadgroup``) the tests that sweep share one process: see the module's docstring.

    xdist 3.8 names an item's group by renaming ``item._nodeid`` to ``<nodeid>@<group>``, which pytest 9's
    structured node ids no longer read, so the groups are silently ignored (pytest-xdist#1386): once every
    other implementation of this hook (xdist's among them) has run, the id takes the new name.
    """
    for item in items:
        if item.get_closest_marker("ray") or CLUSTER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.xdist_group("cluster"))
    result = yield
    renamed = [(item, item._nodeid) for item in items if getattr(item, "_nodeid", item.nodeid) != item.nodeid]
    if renamed:
        from _pytest.nodeid import NodeId  # pytest 9 only: there the rename is lost

        for item, nodeid in renamed:
            item._id = NodeId.parse(nodeid)
    return result


@dataclasses.dataclass(frozen=True)
class DefaultSweep:
    """What `make sweep` did in a fresh clone: the process (its stdout ends with the table) and the results."""

    proc: subprocess.CompletedProcess
    clone: Path

    @property
    def results(self) -> Path:
        return self.clone / "results"


@pytest.fixture(scope="session")
def default_sweep(tmp_path_factory) -> DefaultSweep:
    """`make sweep` on a fresh clone, once per session (about a minute on 2 cores); skipped without git and make."""
    if shutil.which("git") is None or shutil.which("make") is None:
        pytest.skip("needs git and make")
    clone = tmp_path_factory.mktemp("default-sweep") / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    # The clone uses the virtual environment this test runs in (installing one would
    # download wheels); `-o` keeps make from reinstalling into it.
    venv = Path(sys.prefix)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a local cluster, not the test's
    proc = subprocess.run(["make", "sweep", f"VENV={venv}", "-o", str(venv / ".tilesweep-installed")],
                          cwd=clone, capture_output=True, text=True, timeout=900, env=env)
    return DefaultSweep(proc=proc, clone=clone)


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[object]:
    """A head (1 CPU, no GPU) and two worker nodes (2 CPUs, 2 logical GPUs each), connected."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    # Hosts on logical GPUs fall back to the CPU; one thread each keeps four of them
    # from oversubscribing a small machine. The nodes' processes inherit this.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0})
    for _ in range(WORKER_NODES):
        cluster.add_node(num_cpus=CPUS_PER_NODE, num_gpus=GPUS_PER_NODE)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level=logging.WARNING)
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


@contextmanager
def restore_nodes(cluster) -> Iterator[None]:
    """Run a block that removes worker nodes; afterwards, add nodes back until the original count.

    Usage: ``with restore_nodes(ray_cluster): ray_cluster.remove_node(node, allow_graceful=False)``.
    """
    before = len(cluster.worker_nodes)
    try:
        yield
    finally:
        while len(cluster.worker_nodes) < before:
            cluster.add_node(num_cpus=CPUS_PER_NODE, num_gpus=GPUS_PER_NODE)
        cluster.wait_for_nodes()


@pytest.fixture
def ray_nodes_restored(ray_cluster):
    """`ray_cluster`, with its worker nodes put back after the test (for tests that remove nodes)."""
    with restore_nodes(ray_cluster):
        yield ray_cluster


@dataclasses.dataclass(frozen=True)
class S3Server:
    """A real S3-compatible server (moto's server mode) on the loopback: its endpoint URL and the server."""

    endpoint: str
    server: object

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="tilesweep-test", aws_secret_access_key="tilesweep-test")

    def objects(self, bucket: str) -> dict[str, bytes]:
        """Every object in `bucket`, by key."""
        client = self.client()
        keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
        return {k: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server on 127.0.0.1 and a free port, one per test session (skipped without moto and Flask)."""
    moto_server = pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no request log lines among the CLI's stderr
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield S3Server(endpoint=f"http://{host}:{port}", server=server)
    finally:
        server.stop()


# The secret key every S3 test runs with: a test greps what tilesweep wrote and said for it.
PLANTED_SECRET = "tilesweep-planted-secret-5f0c2e9a"


@pytest.fixture
def s3_results(s3_server, monkeypatch) -> str:
    """``s3://<fresh bucket>/results`` on `s3_server`; the environment points the clients at it
    (``AWS_ENDPOINT_URL``) with the credentials in ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "tilesweep-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", PLANTED_SECRET)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # this machine has no instance role to ask
    bucket = f"tilesweep-{os.urandom(6).hex()}"
    s3_server.client().create_bucket(Bucket=bucket)
    return f"s3://{bucket}/results"


@pytest.fixture
def make_records() -> Callable[..., list[Record]]:
    """``make_records(run_id, config_id, attempt, tiling=(1, 2), repeats=2, status="ok")`` -> records."""

    def make(run_id: str, config_id: str, attempt: int = 1, *, tiling: tuple[int, int] = (1, 2),
             repeats: int = 2, status: str = STATUS_OK, t_total: float = 10.0) -> list[Record]:
        profile = PROFILES["molmo2"]
        height, width = resolution_for(tiling, profile)
        geo = tiling_geometry(Tiling(*tiling), profile)
        now = datetime.now(timezone.utc)
        n = repeats if status == STATUS_OK else 1
        return [Record(run_id=run_id, config_id=config_id, attempt=attempt, model="tiny-molmo2",
                       profile=profile.name, family="1xk", tiling_rows=tiling[0], tiling_cols=tiling[1],
                       crops=geo.crops, height=height, width=width, canvas_height=height, canvas_width=width,
                       image_tokens=geo.image_tokens, sequence_tokens=geo.sequence_tokens, repeat=i,
                       repeats=repeats, t_total_ms=t_total + i if status == STATUS_OK else None,
                       status=status, error=None if status == STATUS_OK else "boom",
                       started_at=now, finished_at=now)
                for i in range(n)]

    return make


@dataclasses.dataclass(kw_only=True, frozen=True, slots=True)
class Costs:
    """Planted costs (ms): vision = a + b·crops, llm = c + d·t + e·t², t = sequence tokens."""

    a: float = 2.0
    b: float = 3.0
    c: float = 1.5
    d: float = 0.02
    e: float = 4e-6
    projector: float = 0.8
    lm_head: float = 0.3
    remainder: float = 0.5  # total - (vision + projector + llm + lm_head)
    sub_bias: float = 1.2  # llm_sub - llm_prefill
    noise: float = 0.005  # relative, per stage
    vision_per_token: float = 0.0  # a vision cost that breaks the per-crop assumption


def base_record(**fields) -> Record:
    defaults = dict(
        run_id="run-a", config_id="c1x1", attempt=1, model="tiny-molmo2", profile="molmo2",
        family="1xk", tiling_rows=1, tiling_cols=1, crops=2, height=378, width=378,
        canvas_height=378, canvas_width=378, image_tokens=100, sequence_tokens=120,
        device="cpu", torch_version="2", transformers_version="5", tilesweep_version="0.1",
        dtype="float32", hostname="h",
    )
    defaults.update(fields)
    return Record(**defaults)


def planted(costs: Costs, *, crops: int, tokens: int, rng: np.random.Generator, repeat: int, **fields) -> Record:
    def noisy(x: float) -> float:
        return float(x * (1.0 + costs.noise * rng.standard_normal()))

    vision = noisy(costs.a + costs.b * crops + costs.vision_per_token * tokens)
    llm = noisy(costs.c + costs.d * tokens + costs.e * tokens**2)
    total = vision + costs.projector + llm + costs.lm_head + costs.remainder
    return base_record(
        crops=crops, sequence_tokens=tokens, repeat=repeat,
        t_preprocess_ms=1.0, t_vision_ms=vision, t_projector_ms=costs.projector,
        t_llm_prefill_ms=llm, t_lm_head_ms=costs.lm_head, t_total_ms=total,
        t_prefill_step_ms=total, t_vision_only_ms=vision, t_llm_sub_ms=llm + costs.sub_bias,
        **fields,
    )


def failed(**fields) -> Record:
    fields = {"error_type": "RuntimeError", "error": "CUDA out of memory", **fields}
    return base_record(status=STATUS_FAILED, **fields)


def write_part(root: Path, records: Iterable[Record]) -> Path:
    """One part file in the real layout: <root>/<run_id>/part-<config_id>-<attempt>.parquet."""
    records = list(records)
    first = records[0]
    run_dir = root / first.run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / f"part-{first.config_id}-{first.attempt}.parquet"
    pq.write_table(records_to_table(records), path)
    return path


def write_manifest(root: Path, run_id: str, *, spec: dict | None = None, environment: dict | None = None,
                   planned: dict | None = None) -> Path:
    path = root / run_id / "manifest.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    manifest = {"spec": spec or {}, "environment": environment or {}}
    if planned is not None:
        manifest["planned"] = planned
    path.write_text(json.dumps(manifest))
    return path


def planned_for(profile: str, tilings_: Iterable[tuple[int, int]]) -> dict:
    """A manifest's ``planned`` mapping (config id -> config) for these tilings, ids as `write_sweep` makes them."""
    from tilings import Tiling, tiling_geometry

    out = {}
    for rows, cols in tilings_:
        g = tiling_geometry(Tiling(rows, cols), profile_of(profile))
        out[f"cfg-{rows}x{cols}"] = {"tiling": f"{rows}x{cols}", "family": "", "crops": g.crops,
                                     "image_tokens": g.image_tokens, "sequence_tokens": g.sequence_tokens}
    return out


@pytest.fixture(scope="session")
def synth():
    """This module's helpers (test modules cannot import a conftest under importlib mode)."""
    return sys.modules[__name__]


def write_sweep(
    root: Path,
    costs: Costs = Costs(),
    *,
    profile: str = "molmo-v1",
    families: tuple[str, ...] = ("1xk", "2xk"),
    repeats: int = 5,
    seed: int = 0,
    run_id: str = "run-a",
    skip: Iterable[tuple[int, int]] = (),
) -> list[Record]:
    """A sweep over real tilings (crops and tokens from `tilings`), one part per config."""
    from tilings import enumerate_tilings, resolution_for, tiling_geometry

    rng = np.random.default_rng(seed)
    skip = {tuple(t) for t in skip}
    written: list[Record] = []
    for tiling, family in enumerate_tilings(profile, families):
        if tuple(tiling) in skip:
            continue
        g = tiling_geometry(tiling, profile_of(profile))
        height, width = resolution_for(tiling, profile)
        records = [
            planted(
                costs, crops=g.crops, tokens=g.sequence_tokens, rng=rng, repeat=i,
                run_id=run_id, config_id=f"cfg-{tiling.rows}x{tiling.cols}", profile=profile,
                family=family, tiling_rows=tiling.rows, tiling_cols=tiling.cols,
                height=height, width=width, canvas_height=g.canvas[0], canvas_width=g.canvas[1],
                image_tokens=g.image_tokens,
            )
            for i in range(repeats)
        ]
        write_part(root, records)
        written += records
    return written


def profile_of(name: str):
    from tilings import get_profile

    return get_profile(name)
