"""The run/fill/status subcommands without a cluster: flags, one-line errors, status tables."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator import cli
from orchestrator import spec as specs
from orchestrator.commands import fill, run, status
from orchestrator.plan import plan, select_points
from orchestrator.resume import fill_spec, resolve
from orchestrator.spec import build_spec
from store.manifest import Manifest
from store.runs import RunStore
from tilesweep.errors import SpecError
from tilings import PROFILES, Tiling, tiling_geometry

RUN_FLAGS = {"--spec", "--model", "--revision", "--trust-remote-code", "--profile", "--dtype", "--attn-implementation",
             "--family", "--tilings", "--crops", "--tokens", "--warmup", "--repeats", "--min-duration", "--decode-tokens",
             "--block-spans", "--seed", "--workers", "--gpus-per-worker", "--results", "--run-id", "--address",
             "--max-attempts", "--config-timeout", "--start-timeout", "--share-gpus", "--energy", "--precision",
             "--max-repeats", "--max-duration"}


def flags(module) -> set[str]:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return {s for a in parser._actions for s in a.option_strings} - {"-h", "--help"}


def test_flags_are_pinned():
    # Users and scripts rely on these names; a new flag is a decision, not an accident. Every setting of
    # the spec has one (they are generated from its fields), so this pins the spec's settings too.
    assert flags(run) == RUN_FLAGS
    assert flags(fill) == RUN_FLAGS
    assert flags(status) == {"--results", "--run-id", "--check"}


def test_every_flag_reaches_the_spec():
    args = cli.build_parser().parse_args([
        "run", "--model", "tiny-molmo-v1", "--profile", "molmo-v1", "--family", "kx1", "--tilings", "1x2",
        "--crops", "3", "--warmup", "2", "--repeats", "4", "--dtype", "float32", "--decode-tokens", "5",
        "--workers", "3", "--gpus-per-worker", "0.5", "--results", "out", "--run-id", "r9",
        "--address", "auto", "--max-attempts", "5", "--config-timeout", "60", "--revision", "main",
        "--attn-implementation", "eager", "--min-duration", "0.5", "--block-spans", "--seed", "7",
        "--start-timeout", "30", "--trust-remote-code", "--share-gpus", "--energy", "0.25"])
    spec = resolve(args.spec, specs.given(args))
    assert (spec.model, spec.profile, spec.families, spec.tilings, spec.crops) == (
        "tiny-molmo-v1", "molmo-v1", ("kx1",), ((1, 2),), (3,))
    assert (spec.warmup, spec.repeats, spec.dtype, spec.decode_tokens) == (2, 4, "float32", 5)
    assert (spec.workers, spec.gpus_per_worker, spec.results, spec.run_id) == (3, 0.5, "out", "r9")
    assert (spec.address, spec.max_attempts, spec.config_timeout_s) == ("auto", 5, 60.0)
    assert (spec.revision, spec.attn_implementation, spec.min_duration_s, spec.block_spans, spec.seed) == (
        "main", "eager", 0.5, True, 7)
    assert (spec.start_timeout_s, spec.trust_remote_code, spec.share_gpus, spec.energy_s) == (30.0, True, True, 0.25)


def test_bad_values_print_one_line_each_and_write_nothing(tmp_path, capsys):
    code = cli.main(["run", "--results", str(tmp_path), "--repeats", "0", "--warmup", "x", "--family", "zz"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == ["tilesweep run: error: spec: warmup: must be an integer, got 'x'",
                   "tilesweep run: error: spec: repeats: must be >= 1, got 0"]
    assert os.listdir(tmp_path) == []


def test_unreachable_crop_count_is_one_line_before_ray(tmp_path, capsys):
    code = cli.main(["run", "--results", str(tmp_path), "--crops", "3,12"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "crop count 12 is unreachable with profile 'molmo2'" in err[0]
    assert os.listdir(tmp_path) == []


def test_fill_plans_only_what_it_is_given(tmp_path, make_records):
    """fill ignores the run's families: every tiling of a crop count, or the named families' ones."""
    write_run(tmp_path, make_records)  # a 1xk run
    seen = []
    for argv in (["--crops", "7"], ["--crops", "7", "--family", "2xk"], ["--tilings", "3x2"]):
        args = cli.build_parser().parse_args(["fill", "--results", str(tmp_path), *argv])
        seen.append(fill_spec(args.spec, specs.given(args)))
    chosen = [sorted(p.tiling for p in select_points(spec, PROFILES["molmo2"])) for spec in seen]
    assert chosen == [[(1, 6), (2, 3), (3, 2), (6, 1)], [(2, 3)], [(3, 2)]]
    assert all(spec.run_id == "r1" and spec.model == "tiny-molmo2" for spec in seen)


def test_fill_needs_crops_and_a_run(tmp_path, capsys):
    assert cli.main(["fill", "--results", str(tmp_path)]) == 2
    assert "fill needs --crops" in capsys.readouterr().err
    assert cli.main(["fill", "--crops", "3", "--results", str(tmp_path)]) == 2
    assert f"no run under {str(tmp_path)!r} to fill" in capsys.readouterr().err
    assert cli.main(["status", "--results", str(tmp_path)]) == 2
    assert "no run under" in capsys.readouterr().err


def test_unreachable_address_is_one_line_exit_2_and_writes_nothing(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "run", "--address", f"127.0.0.1:{port}",
         "--results", str(tmp_path / "results")],
        capture_output=True, text=True, timeout=120, env={**os.environ, "RAY_ADDRESS": ""})
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert lines[-1].startswith(f"tilesweep run: error: cannot reach Ray at '127.0.0.1:{port}'")
    assert not any("Traceback" in line for line in lines)
    assert not (tmp_path / "results").exists()


def write_run(results: Path, make_records) -> dict:
    """A run planned for 1xk (8 tilings): 1x1..1x4 ok, 1x5 failed, the rest missing."""
    spec = build_spec(None, {"families": "1xk", "run_id": "r1", "results": str(results)})
    configs = plan(spec, PROFILES["molmo2"])
    store = RunStore(results, "r1")
    store.write_manifest(Manifest(run_id="r1", created_at="2026-11-26T10:00:00+00:00", spec=spec.to_dict(),
                                  profile={"name": "molmo2"}, planned={c.config_id: c.entry() for c in configs}))
    by_label = {c.label(): c for c in configs}
    for label in ("1x1", "1x2", "1x3", "1x4"):
        c = by_label[label]
        store.write_part(make_records("r1", c.config_id, 1, tiling=(c.tiling.rows, c.tiling.cols)))
    c = by_label["1x5"]
    store.write_part(make_records("r1", c.config_id, 1, tiling=(1, 5), status="failed"))
    return by_label


def test_status_counts_per_crop_count_and_tiling(tmp_path, make_records, capsys):
    write_run(tmp_path, make_records)
    report = status.run_status(str(tmp_path), None)
    assert report["total"] == {"planned": 8, "done": 4, "failed": 1, "missing": 3}
    assert report["by_axis"][3] == {"planned": 1, "done": 1, "failed": 0, "missing": 0}
    assert report["by_axis"][6] == {"planned": 1, "done": 0, "failed": 1, "missing": 0}
    assert report["by_axis"][9] == {"planned": 1, "done": 0, "failed": 0, "missing": 1}
    assert report["by_tiling"]["1x5"]["failed"] == 1 and report["by_tiling"]["1x8"]["missing"] == 1
    assert cli.main(["status", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "run r1 (tiny-molmo2, profile molmo2): 4/8 done, 1 failed, 3 missing"
    assert out[2].split() == ["crops", "planned", "done", "failed", "missing"]
    assert out[3].split() == ["2", "1", "1", "0", "0"]
    row = next(line.split() for line in out if line.split()[:1] == ["1x5"])
    image_tokens = tiling_geometry(Tiling(1, 5), PROFILES["molmo2"]).image_tokens
    assert row == ["1x5", "1xk", "6", str(image_tokens), "0", "1", "0"]
    assert cli.main(["status", "--results", str(tmp_path), "--run-id", "nope"]) == 2
    err = capsys.readouterr().err
    assert "no run 'nope'" in err and "runs there: r1" in err


def test_the_resume_hint_repeats_what_a_fill_selected(tmp_path, make_records):
    from orchestrator.resume import resume_command

    write_run(tmp_path, make_records)
    args = cli.build_parser().parse_args(["fill", "--results", str(tmp_path), "--crops", "3,7", "--family", "2xk"])
    spec = fill_spec(args.spec, specs.given(args))
    assert resume_command(spec, "fill", "r1") == f"tilesweep fill --run-id r1 --results {tmp_path} --crops 3,7 --family 2xk"
    assert resume_command(spec, "run", "r1") == f"tilesweep run --run-id r1 --results {tmp_path}"


def test_a_run_measured_with_a_fixed_count_is_not_resumed_with_the_adaptive_rule(tmp_path):
    spec = build_spec(None, {"families": "1xk", "run_id": "r1", "results": str(tmp_path)})
    RunStore(tmp_path, "r1").write_manifest(Manifest(
        run_id="r1", created_at="2026-11-26T10:00:00+00:00", spec=spec.to_dict(), measurement=spec.measurement(),
        profile={"name": "molmo2"}, planned={c.config_id: c.entry() for c in plan(spec, PROFILES["molmo2"])}))
    with pytest.raises(SpecError) as err:
        resolve(None, {"run_id": "r1", "results": str(tmp_path), "precision_pct": "2"})
    assert err.value.problems == [
        "run 'r1' was measured with precision_pct=None, not 2.0; drop --precision to resume it, or pass a new --run-id"]
    assert resolve(None, {"run_id": "r1", "results": str(tmp_path)}).precision_pct is None
