"""``python -m workers`` in a subprocess where ray, polars and pyarrow cannot be imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tilings import geometry, resolution_for

PYTHON = sys.executable
REPO = Path(__file__).resolve().parents[2]

KEYS = {"t_vision_ms", "t_projector_ms", "t_llm_prefill_ms", "t_lm_head_ms", "t_total_ms", "t_prefill_step_ms",
        "t_vision_only_ms", "t_llm_sub_ms", "crops", "image_tokens", "sequence_tokens", "status", "error"}


def run(args: list[str], env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "workers", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_shadow_packages_really_block_ray(no_ray_env):
    done = subprocess.run([PYTHON, "-c", "import ray"], env=no_ray_env, capture_output=True, text=True)
    assert done.returncode != 0 and "ray is not installed here" in done.stderr


def test_json_records_without_ray(no_ray_env):
    done = run(["--model", "tiny-molmo2", "--tiling", "1x3,2x2", "--repeats", "2", "--warmup", "0", "--json"], no_ray_env)
    assert done.returncode == 0, done.stderr
    records = json.loads(done.stdout)
    assert len(records) == 4
    for rec in records:
        assert KEYS <= rec.keys()
        predicted = geometry(*resolution_for((rec["tiling_rows"], rec["tiling_cols"]), "molmo2"), "molmo2")
        assert (rec["crops"], rec["image_tokens"], rec["sequence_tokens"]) == (
            predicted.crops, predicted.image_tokens, predicted.sequence_tokens)
        assert rec["image_tokens_actual"] == predicted.image_tokens
        assert rec["status"] == "ok" and rec["error"] is None
        assert rec["t_llm_sub_ms"] == rec["t_prefill_step_ms"] - rec["t_vision_only_ms"]
    assert [(r["tiling_rows"], r["tiling_cols"]) for r in records] == [(1, 3), (1, 3), (2, 2), (2, 2)]


def test_table_shows_both_methods_and_a_failed_config_exits_1(monkeypatch, capsys):
    # In this process (the JSON test above shows it runs without Ray): the table and the exit status.
    from workers.__main__ import main

    monkeypatch.setenv("TILESWEEP_INJECT", "oom@1x2")
    assert main(["--tiling", "1x1", "--tiling", "1x2", "--repeats", "3", "--warmup", "0", "--device", "cpu"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("tiny-molmo2  1x1  378x378 px  crops 2")
    table = {tuple(line.split()[:2]): line.split()[2:] for line in lines[2:12]}
    for method, stage in [("hooks", "vision"), ("hooks", "llm_prefill"), ("hooks", "total"),
                          ("subtraction", "prefill_step"), ("subtraction", "vision_only"), ("subtraction", "llm_sub")]:
        median, p5, p95 = map(float, table[(method, stage)])
        assert p5 <= median <= p95
    assert "FAILED OutOfMemoryError" in "\n".join(lines)


def test_bad_arguments_exit_2_with_one_line(no_ray_env):
    done = run(["--tiling", "1by3"], no_ray_env, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "bad tiling '1by3'" in done.stderr
    done = run(["--module", "vision"], no_ray_env, timeout=60)
    assert done.returncode == 2 and "write STAGE=dotted.path" in done.stderr


def test_importing_workers_loads_neither_torch_nor_ray(no_ray_env):
    """The driver imports `workers` for Record and MeasureConfig; torch comes only with ModelHost."""
    code = ("import sys, workers; from workers import MeasureConfig, Record; "
            "assert 'torch' not in sys.modules and 'ray' not in sys.modules; print('light')")
    done = subprocess.run([PYTHON, "-c", code], env=no_ray_env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "light", done.stderr
