"""One CLI grammar, and what a new user meets first: fill on an unknown run, who measured a run, the results path,
-v, parser errors, `python -m workers` spelled like `tilesweep run`. None of these start Ray."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

import pytest

from analysis import report_data
from analysis.query import scan
from analysis.sql import TABLES
from orchestrator import cli
from orchestrator import spec as specs
from orchestrator.cluster import WorkerPlan
from orchestrator.commands import query, report, status
from orchestrator.commands._results import results_of
from orchestrator.driver import Driver
from orchestrator.plan import plan, profile_dict
from orchestrator.spec import build_spec
from store.manifest import Invocation, Manifest
from store.runs import RunStore
from tilesweep import fields
from tilings import PROFILES
from workers import runtime
from workers.__main__ import build_parser as workers_parser
from workers.__main__ import main as workers_main
from workers.config import Timing

MEASURED_ARGV = ["tilesweep", "run", "--family", "1xk", "--results", "R"]


def finished_run(results, make_records, *, run_id: str = "r1") -> Manifest:
    """A finished 1xk run (all 8 configs ok) whose one invocation measured them, as a driver records it."""
    spec = build_spec(None, {"families": "1xk", "run_id": run_id, "results": str(results)})
    configs = plan(spec, PROFILES["molmo2"])
    env = {"argv": MEASURED_ARGV, "hostname": "gpu-node-7"}
    invocation = Invocation(command="run", started_at="2026-11-26T10:00:00+00:00", spec=spec.to_dict(),
                            planned=tuple(c.config_id for c in configs), environment=env,
                            finished_at="2026-11-26T10:05:00+00:00", measured=len(configs), ok=len(configs), failed=0)
    manifest = Manifest(run_id=run_id, created_at="2026-11-26T10:00:00+00:00", spec=spec.to_dict(),
                        measurement=spec.measurement(), profile=profile_dict(PROFILES["molmo2"]),
                        planned={c.config_id: c.entry() for c in configs}, invocations=(invocation,),
                        environment=env)
    store = RunStore(results, run_id)
    store.write_manifest(manifest)
    for c in configs:
        store.write_part(make_records(run_id, c.config_id, 1, tiling=(c.tiling.rows, c.tiling.cols)))
    return manifest


def tree(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# ----- fill and provenance -----

def test_fill_of_an_unknown_run_is_exit_2_naming_the_runs_and_writes_nothing(tmp_path, make_records, capsys):
    finished_run(tmp_path, make_records)
    before = tree(tmp_path)
    # The closed port makes the old behaviour (plan a new run, then reach for Ray) fail fast, with another message.
    code = cli.main(["fill", "--crops", "3", "--results", str(tmp_path), "--run-id", "nope",
                     "--address", "127.0.0.1:9"])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("tilesweep fill: error: no run 'nope' under")
    assert "runs there: r1" in err[0] and "never starts one" in err[0]
    assert tree(tmp_path) == before


def test_fill_help_says_the_run_id_is_the_latest_run(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["fill", "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--run-id ID the run to fill, an existing run id (default: the latest run under --results)" in text
    assert "new timestamped id" not in text


def test_a_no_op_resume_is_recorded_but_the_report_credits_the_invocation_that_measured(
        tmp_path, make_records, capsys):
    finished_run(tmp_path, make_records)
    # Every config is done: this plans, finds nothing to measure and needs no Ray.
    assert cli.main(["run", "--results", str(tmp_path), "--run-id", "r1"]) == 0
    capsys.readouterr()
    manifest = RunStore(tmp_path, "r1").read_manifest()
    noop = manifest.invocations[-1]
    assert len(manifest.invocations) == 2 and not noop.measured and noop.environment["argv"] == sys.argv
    assert manifest.environment["argv"] == MEASURED_ARGV  # the run's environment is still the measuring one
    env = report_data.environment(manifest, scan(tmp_path).collect())
    values = dict(zip(env["key"], env["value"]))
    assert values["argv"] == " ".join(MEASURED_ARGV) and values["hostname"] == "gpu-node-7"
    assert values["measured_by.1"].startswith("run at 2026-11-26T10:00:00+00:00: 8 config(s), 8 ok, 0 failed")
    assert "measured_by.2" not in values


# ----- the results path, -v and parser errors -----

def test_every_results_reader_takes_dash_dash_results_with_runs_default(tmp_path):
    for module in (status, query, report):
        parser = argparse.ArgumentParser()
        module.add_arguments(parser)
        action = next(a for a in parser._actions if a.dest == "results")
        assert action.option_strings == ["--results"], module.__name__
    run_default = build_spec(None, {}).results
    parser = cli.build_parser()
    args = parser.parse_args(["query", "SELECT 1"])
    assert results_of(args, None, "query") == run_default == "results"
    args = parser.parse_args(["report", "-o", str(tmp_path)])
    assert results_of(args, args.results_positional, "report") == run_default


def test_query_reads_the_default_results_directory(tmp_path, synth, monkeypatch, capsys):
    synth.write_sweep(tmp_path / "results", families=("1xk",), repeats=2, run_id="run-a")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["query", "SELECT count(*) AS n FROM summary", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"n": 12}]


def test_the_positional_results_path_is_a_deprecated_alias(tmp_path, synth, capsys):
    synth.write_sweep(tmp_path, families=("1xk",), repeats=2, run_id="run-a")
    sql = "SELECT tiling, n FROM summary ORDER BY crops, tiling"
    assert cli.main(["query", "--results", str(tmp_path), sql, "--format", "csv"]) == 0
    new = capsys.readouterr()
    assert cli.main(["query", str(tmp_path), sql, "--format", "csv"]) == 0
    old = capsys.readouterr()
    assert old.out == new.out and old.out.count("\n") == 13 and old.err == ""
    # Given both ways and differently: one line, exit 2.
    assert cli.main(["query", "--results", str(tmp_path), str(tmp_path / "other"), sql]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "results path given twice" in err[0] and "--results DIR" in err[0]
    assert cli.main(["report", "--results", str(tmp_path), "elsewhere", "-o", str(tmp_path / "out")]) == 2
    assert "given twice" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_help_states_the_grammar(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    top = " ".join(capsys.readouterr().out.split())
    assert "results path as --results DIR (default results" in top
    with pytest.raises(SystemExit):
        cli.main(["query", "--help"])
    text = capsys.readouterr().out
    assert "usage: tilesweep query [-h] [-v] [--results DIR]" in text
    assert all(name in " ".join(text.split()) for name in TABLES)  # every table the SQL sees


@pytest.mark.parametrize("argv", [["status", "-v"], ["-v", "status"], ["status", "--verbose", "--check"]])
def test_verbose_before_or_after_the_subcommand(argv):
    assert cli.build_parser().parse_args(argv).verbose is True


def test_verbose_defaults_to_off():
    assert cli.build_parser().parse_args(["status"]).verbose is False


@pytest.mark.parametrize("argv, command", [
    (["run", "--bogus"], "run"), (["query"], "query"), (["report"], "report"), (["status", "extra"], "status"),
    (["plan", "--format", "x"], "plan"), (["fill", "--repeats"], "fill"), (["-v", "report", "--nope"], "report"),
])
def test_parser_errors_name_the_subcommand_once(argv, command, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(argv)
    err = capsys.readouterr().err.splitlines()
    assert done.value.code == 2 and len(err) == 1
    assert err[0].startswith(f"tilesweep {command}: error: ") and "tilesweep tilesweep" not in err[0]


def test_spec_keys_are_the_flag_names_or_the_setting_names(tmp_path, capsys):
    spec_file = tmp_path / "sweep.yaml"
    spec_file.write_text("family: [2xk]\nconfig-timeout: 60\nattn-implementation: eager\ndecode-tokens: 2\n")
    by_flag = specs.build_spec(spec_file)
    spec_file.write_text("families: [2xk]\nconfig_timeout_s: 60\nattn_implementation: eager\ndecode_tokens: 2\n")
    assert specs.build_spec(spec_file) == by_flag
    assert (by_flag.families, by_flag.config_timeout_s, by_flag.attn_implementation) == (("2xk",), 60.0, "eager")
    spec_file.write_text("familes: [2xk]\n")
    assert cli.main(["run", "--spec", str(spec_file), "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "unknown key 'familes' (did you mean 'families'?)" in err[0]
    assert not (tmp_path / "r").exists()


# ----- python -m workers spelled like tilesweep run -----

def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}


def test_workers_cli_takes_the_run_flags_of_one_config():
    run_parser = argparse.ArgumentParser()
    specs.add_flags(run_parser)  # `tilesweep run`'s flags
    timing = {fields.flag_of(f) for f, _ in fields.settings(Timing)}
    per_config = {"--model", "--revision", "--trust-remote-code", "--profile", "--dtype", "--attn-implementation",
                  "--tilings", *timing}
    assert "--repeats" in per_config and per_config <= _flags(run_parser)
    assert per_config <= _flags(workers_parser())
    # The older spellings still parse, to the same settings.
    new = workers_parser().parse_args(["--tilings", "1x2", "--attn-implementation", "eager", "--dtype", "bfloat16"])
    old = workers_parser().parse_args(["--tiling", "1x2", "--attn", "eager", "--dtype", "bfloat16"])
    assert vars(new) == vars(old)


def test_workers_dtypes_are_the_run_dtypes_plus_short_aliases(capsys):
    assert runtime.DTYPES == specs.DTYPES
    assert [runtime.dtype_name(d) for d in (*specs.DTYPES, "bf16", "FP16", "fp32")] == [
        "float32", "float16", "bfloat16", "bfloat16", "float16", "float32"]
    # Refused before any model loads: one line naming the value and the allowed names.
    assert workers_main(["--dtype", "float8"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "'float8'" in err[0] and "float32, float16, bfloat16" in err[0]


def test_workers_cli_uses_a_sweep_hosts_thread_count(tmp_path):
    assert workers_parser().parse_args([]).threads == runtime.HOST_THREADS
    assert workers_parser().parse_args(["--threads", "4"]).threads == 4

    class Host:  # never started: only the actor options are built
        def describe(self): ...

    spec = dataclasses.replace(build_spec(None, {}), run_id="x")
    for workers in (WorkerPlan(count=1, num_gpus=0), WorkerPlan(count=1, num_gpus=1)):
        driver = Driver(spec, RunStore(tmp_path, "x"), workers, host_cls=Host, host_kwargs={})
        assert driver.actor_env["OMP_NUM_THREADS"] == str(runtime.HOST_THREADS)
        assert driver.actor_env["MKL_NUM_THREADS"] == str(runtime.HOST_THREADS)
    assert not os.listdir(tmp_path)


def test_results_readers_flags_are_pinned():
    def flags(module) -> set[str]:
        parser = argparse.ArgumentParser()
        module.add_arguments(parser)
        return {s for a in parser._actions for s in a.option_strings} - {"-h", "--help"}

    assert flags(status) == {"--results", "--run-id", "--check"}
    assert flags(query) == {"--results", "--format", "--run-id"}
    assert flags(report) == {"--results", "-o", "--output", "--run-id"}
