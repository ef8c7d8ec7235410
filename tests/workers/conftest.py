"""Fixtures of the workers tests: the tiny model built once per test module, offline."""

from __future__ import annotations

import os
from pathlib import Path

# No test here may reach a model hub: every model is built from a config in code.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest

REPO = Path(__file__).resolve().parents[2]
BLOCKED = ("ray", "polars", "pyarrow")


@pytest.fixture(scope="module")
def tiny_host():
    """`ModelHost` on the tiny Molmo2, on the CPU (one per test module: building it takes a second)."""
    from workers import ModelHost

    return ModelHost("tiny-molmo2", device="cpu")


@pytest.fixture
def no_ray_env(tmp_path: Path) -> dict[str, str]:
    """Environment for a subprocess in which `import ray` (and polars, pyarrow) fails.

    Shadow packages that raise ImportError come first on PYTHONPATH, the way a
    GPU machine without those packages behaves.
    """
    shadow = tmp_path / "shadow"
    for name in BLOCKED:
        pkg = shadow / name
        pkg.mkdir(parents=True)
        (pkg / "__init__.py").write_text(f"raise ImportError('{name} is not installed here')\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(shadow), str(REPO)])
    env["OMP_NUM_THREADS"] = "1"
    env.pop("TILESWEEP_INJECT", None)
    return env

