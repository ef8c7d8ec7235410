"""benchmarks/gpu_check.sh on the CPU (the tiny model): the GPU script cannot rot between GPU runs."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

PYTHON = sys.executable
REPO = Path(__file__).resolve().parents[2]


SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


def test_gpu_check_smoke_on_cpu(no_ray_env, tmp_path):
    out = tmp_path / "out"
    # The script's CPU defaults, trimmed to two tilings to keep the test folder fast.
    env = {**no_ray_env, "PYTHON": PYTHON, "TILESWEEP_GPU_CHECK_MODEL": "tiny-molmo2",
           "TILESWEEP_GPU_CHECK_TILINGS": "1x1,2x2", "TILESWEEP_WHEELS": str(tmp_path / "no-wheels")}
    done = subprocess.run(["bash", str(SCRIPT), str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    records = json.loads((out / "records.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    assert {r["status"] for r in records} == {"ok"}
    assert len(records) == len(summary["configs"]) * summary["repeats"] == 2 * 3
    assert summary["model"] == "tiny-molmo2" and summary["all_finite"] and not summary["failed"]
    for row in summary["configs"]:
        for key in ("hook_overhead_pct", "additivity_coverage_pct", "additivity_remainder_ms",
                    "subtraction_bias_pct", "subtraction_bias_ms"):
            assert math.isfinite(row[key]), key
        assert 0 < row["additivity_coverage_pct"] <= 100
        m = row["median_ms"]
        assert row["subtraction_bias_ms"] != 0 and m["t_llm_prefill_ms"] > 0
    assert "overhead%" in (out / "summary.txt").read_text()
    assert "overall medians" in done.stdout


def test_gpu_check_stops_with_one_line_when_transformers_lacks_molmo2(no_ray_env, tmp_path):
    fake = tmp_path / "old"
    (fake / "transformers").mkdir(parents=True)
    (fake / "transformers" / "__init__.py").write_text("__version__ = '4.44.0'\n")
    env = {**no_ray_env, "PYTHON": PYTHON, "PYTHONPATH": f"{fake}:{no_ray_env['PYTHONPATH']}",
           "TILESWEEP_WHEELS": str(tmp_path / "no-wheels")}
    done = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out")], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 3
    assert done.stderr.strip().splitlines()[-1:] == [
        "gpu_check: transformers 4.44.0 has no Molmo2 or torchvision is missing; put a transformers>=5.24 wheel "
        "(and torchvision matching torch) in the wheel folder and rerun"]
