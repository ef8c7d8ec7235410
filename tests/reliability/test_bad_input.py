"""Bad input, table-driven: every mistake is exit 2 and one line on stderr, with nothing written.

Each case runs the real CLI (`orchestrator.cli.main`) in this process; a few run the
installed `tilesweep` script in a subprocess to show the same end to end (no
traceback, no log line, no Ray started). Each case names the words its one line
must hold: the bad field or value, and the fix.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from orchestrator import cli
from orchestrator.plan import plan
from orchestrator.spec import build_spec
from store.manifest import Manifest
from store.runs import RunStore
from tilings import PROFILES
from workers.record import Record

TILESWEEP = Path(sys.prefix) / "bin" / "tilesweep"


def make_workspace(w: Path) -> None:
    """Files the cases point at: spec files, fake checkpoints, a results root with one small run."""
    (w / "afile").write_text("not a directory\n")
    (w / "unknown.yaml").write_text("repeats: 2\nfoo: 1\n")
    (w / "wrongtype.yaml").write_text("repeats: many\n")
    (w / "list.yaml").write_text("- repeats\n- 2\n")
    (w / "broken.yaml").write_text("repeats: [2\n")
    (w / "revision.yaml").write_text("revision: main\n")
    (w / "emptydir").mkdir()
    for name, model_type in (("v1", "molmo"), ("llama", "llama")):
        (w / name).mkdir()
        (w / name / "config.json").write_text(json.dumps({"model_type": model_type}))
    spec = build_spec(None, {"results": str(w / "existing"), "run_id": "r1", "tilings": "1x1", "repeats": 2})
    config = plan(spec, PROFILES["molmo2"])[0]
    store = RunStore(w / "existing", "r1")
    store.write_manifest(Manifest(run_id="r1", created_at="2026-11-26T10:00:00+00:00", spec=spec.to_dict(),
                                  measurement=spec.measurement(), planned={config.config_id: config.entry()}))
    now = datetime.now(timezone.utc)
    store.write_part([Record(run_id="r1", config_id=config.config_id, attempt=1, model="tiny-molmo2",
                             profile="molmo2", tiling_rows=1, tiling_cols=1, crops=config.crops,
                             height=config.height, width=config.width, canvas_height=config.height,
                             canvas_width=config.width, image_tokens=config.image_tokens,
                             sequence_tokens=config.sequence_tokens, repeat=i, repeats=2, t_total_ms=5.0 + i,
                             started_at=now, finished_at=now) for i in range(2)])
    (w / "broken" / "r").mkdir(parents=True)
    (w / "broken" / "r" / "manifest.json").write_text('{"run_id": "r", ')


R = ["--results", "{w}/results"]
# (id, argv with {w} for the workspace, words the one stderr line must hold)
CASES: list[tuple[str, list[str], list[str]]] = [
    ("spec-unknown-key", ["run", *R, "--spec", "{w}/unknown.yaml"], ["unknown key 'foo'", "allowed keys: model"]),
    ("spec-wrong-type", ["run", *R, "--spec", "{w}/wrongtype.yaml"], ["repeats", "must be an integer", "'many'"]),
    ("spec-not-a-mapping", ["run", *R, "--spec", "{w}/list.yaml"], ["list.yaml", "must be a YAML mapping"]),
    ("spec-invalid-yaml", ["run", *R, "--spec", "{w}/broken.yaml"], ["broken.yaml", "not valid YAML"]),
    ("spec-missing", ["run", *R, "--spec", "{w}/nope.yaml"], ["nope.yaml", "cannot read the spec file", "check the path"]),
    ("revision-on-registered-model", ["run", *R, "--spec", "{w}/revision.yaml"], ["--revision 'main'", "drop it"]),
    ("repeats-zero", ["run", *R, "--repeats", "0"], ["repeats", "must be >= 1", "got 0"]),
    ("repeats-negative", ["run", *R, "--repeats", "-1"], ["repeats", "must be >= 1", "got -1"]),
    ("repeats-fraction", ["run", *R, "--repeats", "1.5"], ["repeats", "must be an integer", "'1.5'"]),
    ("warmup-negative", ["run", *R, "--warmup", "-1"], ["warmup", "must be >= 0", "got -1"]),
    ("decode-tokens-negative", ["run", *R, "--decode-tokens", "-1"], ["decode_tokens", "must be >= 0"]),
    ("tiling-over-max-crops", ["run", *R, "--tilings", "9x9"], ["tiling 9x9 has 82 crops (81 tiles + 1 global view)",
                                                                       "over the 9", "rows*cols <= 8"]),
    ("tiling-malformed", ["run", *R, "--tilings", "3by2"], ["'3by2' is not a tiling", "ROWSxCOLS"]),
    ("tiling-zero", ["run", *R, "--tilings", "0x2"], ["'0x2' is not a tiling", "both >= 1"]),
    ("crops-unreachable", ["run", *R, "--crops", "99"], ["crop count 99 is unreachable", "from 2 to 9"]),
    ("crops-not-a-number", ["run", *R, "--crops", "a"], ["crops", "must be an integer", "'a'"]),
    ("family-unknown", ["run", *R, "--family", "zz"], ["unknown family 'zz'", "allowed: 1xk, 2xk, kx1, all"]),
    ("profile-unknown", ["run", *R, "--profile", "nope"], ["unknown profile 'nope'", "allowed: molmo-v1, molmo2"]),
    ("profile-does-not-fit-model", ["run", *R, "--profile", "molmo-v1"], ["336 px crops", "crop_size 378"]),
    ("model-unknown", ["run", *R, "--model", "nonsense"], ["model 'nonsense'", "registered model (tiny-molmo2"]),
    ("model-path-missing", ["run", *R, "--model", "{w}/no/such/model"], ["no/such/model' does not exist",
                                                                         "holding config.json"]),
    ("model-path-is-a-file", ["run", *R, "--model", "{w}/afile"], ["afile' is a file", "holds config.json"]),
    ("model-dir-without-config", ["run", *R, "--model", "{w}/emptydir"], ["has no config.json",
                                                                          "the one holding config.json"]),
    ("remote-code-without-flag", ["run", *R, "--model", "{w}/v1"], ["model_type 'molmo'", "pass --trust-remote-code"]),
    ("model-type-unsupported", ["run", *R, "--model", "{w}/llama"], ["model_type 'llama'", "supported: 'molmo2'"]),
    ("address-unreachable", ["run", *R, "--address", "127.0.0.1:1"], ["cannot reach Ray at '127.0.0.1:1'",
                                                                       "drop --address"]),
    ("address-dashboard-url", ["run", *R, "--address", "http://127.0.0.1:8265"], ["dashboard", "host:6379"]),
    ("address-malformed", ["run", *R, "--address", "nohost"], ["'nohost' is not host:port", "e.g. 10.0.0.5:6379"]),
    ("results-is-a-file", ["run", "--results", "{w}/afile"], ["the results path is a file",
                                                              "pass --results a directory"]),
    ("results-under-a-file", ["run", "--results", "{w}/afile/sub"], ["afile', part of the results path, is a file",
                                                                     "pass --results a directory"]),
    ("run-id-with-slash", ["run", *R, "--run-id", "a/b"], ["run_id", "'a/b'", "no '/'"]),
    ("max-attempts-zero", ["run", *R, "--max-attempts", "0"], ["max_attempts", "must be >= 1"]),
    ("config-timeout-negative", ["run", *R, "--config-timeout", "-5"], ["config_timeout_s", "must be >= 1"]),
    ("workers-zero", ["run", *R, "--workers", "0"], ["workers", "must be >= 1"]),
    ("gpus-per-worker-negative", ["run", *R, "--gpus-per-worker", "-1"], ["gpus_per_worker", "must be >= 0"]),
    ("dtype-unknown", ["run", *R, "--dtype", "nonsense"], ["--dtype", "'nonsense'", "choose from 'float32'"]),
    ("resume-changes-measurement", ["run", "--results", "{w}/existing", "--run-id", "r1", "--repeats", "5"],
     ["measured with repeats=2, not 5", "pass a new --run-id"]),
    ("fill-without-results", ["fill", "--crops", "3", *R], ["no run under", "start one with `tilesweep run`"]),
    ("fill-without-crops", ["fill", "--results", "{w}/existing"], ["fill needs --crops", "e.g. --crops 3,6,9,12"]),
    ("status-unknown-run", ["status", "--results", "{w}/existing", "--run-id", "nope"],
     ["no run 'nope'", "runs there: r1", "pass one of them to --run-id"]),
    ("status-damaged-manifest", ["status", "--results", "{w}/broken", "--run-id", "r", "--check"],
     ["manifest.json is not valid JSON", "restore it from a copy"]),
    ("query-bad-sql", ["query", "{w}/existing", "SELEC crops FROM summary"], ["query failed", "SELEC",
                                                                              "tables: results, summary"]),
    ("query-unknown-column", ["query", "{w}/existing", "SELECT nope FROM summary"], ["query failed", "nope"]),
    ("query-missing-path", ["query", "{w}/nothing", "SELECT 1"], ["nothing' does not exist",
                                                                   "pass a results root"]),
    ("query-unknown-run", ["query", "{w}/existing", "SELECT 1", "--run-id", "zz"], ["no run 'zz'", "runs there: r1"]),
    ("report-onto-a-file", ["report", "{w}/existing", "-o", "{w}/afile"], ["afile' exists and is a file",
                                                                           "pass a directory"]),
    ("plan-tokens-zero", ["plan", "--image-tokens", "0"], ["--image-tokens", "must be a positive number", "got 0"]),
    ("plan-crops-unreachable", ["plan", "--crops", "99"], ["--crops: crop count 99 is unreachable", "from 2 to 9"]),
    ("unknown-command", ["frobnicate"], ["invalid choice: 'frobnicate'", "choose from"]),
]


def expand(argv: list[str], w: Path) -> list[str]:
    return [a.replace("{w}", str(w)) for a in argv]


@pytest.fixture
def workspace(tmp_path) -> Path:
    make_workspace(tmp_path)
    return tmp_path


def test_the_table_is_big_enough():
    assert len(CASES) >= 25 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("argv, needles", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(workspace, snapshot, capsys, argv, needles):
    before = snapshot(workspace)
    capsys.readouterr()
    code = run_cli(expand(argv, workspace))
    out, err = capsys.readouterr()
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].strip(), err
    # "tilesweep <command>: ..." or, for the command itself, "tilesweep: ..." (never the name twice)
    assert lines[0].startswith(("tilesweep ", "tilesweep:")) and "Traceback" not in err
    assert not lines[0].startswith("tilesweep tilesweep")
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert out == ""
    assert snapshot(workspace) == before


def run_cli(argv: list[str]) -> int:
    try:
        return cli.main(argv)
    except SystemExit as exc:  # argparse's errors exit from inside the parser
        return int(exc.code)


# End to end through the installed script: the same one line, no traceback, no log line.
SUBPROCESS = ["model-unknown", "remote-code-without-flag", "results-under-a-file", "address-unreachable",
              "query-bad-sql", "status-damaged-manifest"]


@pytest.mark.parametrize("case_id", SUBPROCESS)
def test_bad_input_end_to_end_in_the_installed_script(workspace, snapshot, env_without_ray_address, case_id):
    _, argv, needles = next(c for c in CASES if c[0] == case_id)
    before = snapshot(workspace)
    t0 = time.monotonic()
    proc = subprocess.run([str(TILESWEEP), *expand(argv, workspace)], capture_output=True, text=True,
                          timeout=120, env=env_without_ray_address, cwd=workspace)
    elapsed = time.monotonic() - t0
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert all(needle in lines[0] for needle in needles) and proc.stdout == ""
    # Refused before Ray or a model load: well inside the time a local cluster takes to start.
    assert elapsed < 30, f"{case_id} took {elapsed:.1f}s"
    assert snapshot(workspace) == before
