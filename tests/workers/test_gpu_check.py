"""benchmarks/gpu_check.sh on the CPU: the GPU script cannot rot between GPU runs.

The smoke run happens in the environment a GPU machine has: torch and torchvision,
no ray, no polars, and every other package only from the wheels `make gpu-deps`
downloads. That environment is a folder of links to this virtual environment's
packages minus those, read by ``python -S`` (no site-packages of its own).
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

PYTHON = sys.executable
REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"
NOT_ON_A_GPU_MACHINE = ("ray", "polars", "_polars_runtime")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def torch_and_its_needs() -> set[str]:
    """torch, torchvision and the packages they require: what a GPU machine's python has anyway."""
    keep = {"torch", "torchvision"}
    for dist in ("torch", "torchvision"):
        for req in importlib.metadata.requires(dist) or []:
            if "extra ==" not in req:
                keep.add(_normal(re.split(r"[ ;<>=!~\[(]", req, maxsplit=1)[0]))
    return keep


def provided_by(wheels: Path) -> set[str]:
    """Top-level names (packages, modules, dist-info folders) the wheels install, torch's own needs aside."""
    keep, names = torch_and_its_needs(), set()
    for wheel in wheels.glob("*.whl"):
        if _normal(wheel.name.split("-")[0]) in keep:
            continue
        with zipfile.ZipFile(wheel) as zf:
            names |= {n.split("/")[0] for n in zf.namelist()}
    return names


def torch_only_python(tmp: Path, wheels: Path) -> Path:
    """A python whose packages are this environment's minus the wheels' and minus ray and polars."""
    site = Path(sysconfig.get_paths()["purelib"])
    farm = tmp / "site"
    farm.mkdir()
    dropped = provided_by(wheels)
    for entry in site.iterdir():
        name = entry.name
        base = name.split("-")[0].lower()
        if name in dropped or base in NOT_ON_A_GPU_MACHINE or base.startswith(NOT_ON_A_GPU_MACHINE[1:]):
            continue
        (farm / name).symlink_to(entry)
    wrapper = tmp / "python"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH="${{PYTHONPATH:+$PYTHONPATH:}}{farm}" exec {PYTHON} -S "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


@pytest.fixture(scope="module")
def gpu_wheels(tmp_path_factory) -> Path:
    """`make gpu-deps` for this machine's Python (the GPU machine's is another: the make variable says which)."""
    wheels = tmp_path_factory.mktemp("whl")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    done = subprocess.run(["make", "-s", "-C", str(REPO), "gpu-deps", f"GPU_PYTHON_VERSION={version}",
                           f"WHEELS={wheels}"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert any(w.name.startswith("transformers-") for w in wheels.glob("*.whl"))
    return wheels


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, "OMP_NUM_THREADS": "1"}


@pytest.mark.extended  # make gpu-deps, a torch-only Python and the CPU smoke run: 50 s
def test_gpu_deps_are_all_the_check_needs_and_without_cuda_it_refuses_unless_asked_for_the_smoke_test(
        gpu_wheels, tmp_path):
    python = torch_only_python(tmp_path, gpu_wheels)
    # This python has no transformers of its own: whatever the check imports comes from the wheels.
    probe = subprocess.run([str(python), "-c", "import importlib.util as u; print(u.find_spec('transformers'))"],
                           env=base_env(), capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip() == "None", probe.stdout + probe.stderr
    env = {**base_env(), "PYTHON": str(python), "TILESWEEP_WHEELS": str(gpu_wheels),
           "TILESWEEP_GPU_CHECK_TILINGS": "1x1"}

    # Everything is there but a GPU: one line, exit 4, nothing written.
    done = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "no")], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 4, done.stdout + done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("gpu_check: no usable CUDA device (torch ") and line.endswith(
        "run it on a GPU machine, or pass --cpu-smoke for the CPU smoke test")
    assert not (tmp_path / "no").exists()

    # The smoke test: the script's CPU defaults, trimmed to one tiling to keep the test folder fast.
    out = tmp_path / "out"
    done = subprocess.run(["bash", str(SCRIPT), "--cpu-smoke", str(out)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    records = json.loads((out / "records.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    assert {r["status"] for r in records} == {"ok"}
    assert len(records) == len(summary["configs"]) * summary["repeats"] == 1 * 3
    assert [r["hooked_first"] for r in records[:3]] == [True, False, True]
    assert set(summary["models"]) == {"tiny-molmo2"} and summary["all_finite"] and not summary["failed"]
    for row in summary["configs"]:
        for key in ("hook_overhead_pct", "additivity_coverage_pct", "additivity_remainder_ms",
                    "subtraction_bias_pct", "subtraction_bias_ms", "cv_max_pct"):
            assert math.isfinite(row[key]), key
        assert 0 < row["additivity_coverage_pct"] <= 100
        assert set(row["cv_pct"]) >= {"t_vision_ms", "t_llm_prefill_ms", "t_total_ms"}
        assert row["energy_j_per_forward"] is None  # no NVML on the CPU: missing, not zero
    text = (out / "summary.txt").read_text()
    assert text.splitlines()[0].startswith("CPU smoke test (no GPU); torch ")
    assert "transformers 5.24" in text.splitlines()[0]
    assert "ovh%" in text and "per model" in text

    # The Parquet file is what `tilesweep query` reads.
    from store.scan import scan

    frame = scan(out / "records.parquet").collect()
    assert frame.height == 3 and set(zip(frame["tiling_rows"], frame["tiling_cols"])) == {(1, 1)}


def test_an_old_transformers_is_named_with_its_version_and_a_bad_call_gets_usage(tmp_path):
    fake = tmp_path / "old"
    (fake / "transformers").mkdir(parents=True)
    (fake / "transformers" / "__init__.py").write_text("__version__ = '5.17.0'\n")
    env = {**base_env(), "PYTHON": PYTHON, "PYTHONPATH": str(fake), "TILESWEEP_WHEELS": str(tmp_path / "none")}
    done = subprocess.run(["bash", str(SCRIPT), "--cpu-smoke", str(tmp_path / "out")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 3
    assert done.stderr.strip().splitlines() == [
        "gpu_check: missing: transformers>=5.24 (found 5.17.0); run `make gpu-deps` on a machine with network and "
        "carry .whl to this one (see the README)"]
    done = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "usage:" in done.stderr
