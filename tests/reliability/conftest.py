"""Shared pieces of the reliability suite: a small real run, CLI capture and directory snapshots.

Every fault test ends with `assert_invariant` (`store.invariant.check`), so
"nothing lost, nothing duplicated" is checked the same way after every fault.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator import cli
from store.invariant import InvariantReport, check

# Small and quick: the tiny model, no warm-up, two timed repeats, two actors.
_FAST = ["--warmup", "0", "--repeats", "2", "--workers", "2"]


def _assert_invariant(results: Path, run_id: str, planned=None) -> InvariantReport:
    report = check(results, run_id, planned)
    assert report.ok, "\n".join(report.problems)
    assert report.counts["missing"] == 0 and report.counts.get("temporaries", 0) == 0
    return report


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


@pytest.fixture
def assert_invariant() -> Callable[..., InvariantReport]:
    """``assert_invariant(results, run_id, planned=None)``: the run holds one result or failure per
    planned config in whole files (the problems are the assertion message); returns the report."""
    return _assert_invariant


@pytest.fixture
def snapshot() -> Callable[[Path], dict[str, tuple[int, int]]]:
    """``snapshot(root)``: every path under `root` with size and mtime; equal snapshots: nothing written."""
    return _snapshot


@pytest.fixture
def env_without_ray_address() -> dict[str, str]:
    """The environment for a subprocess that must not join the test session's cluster by accident."""
    return {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}


@pytest.fixture(scope="module")
def finished_run(ray_cluster, tmp_path_factory) -> tuple[Path, str]:
    """(results root, run id) of a real finished sweep of three tilings, made once per module."""
    results = tmp_path_factory.mktemp("finished")
    code = cli.main(["run", "--results", str(results), "--run-id", "base", "--tilings", "1x1,1x2,2x1", *_FAST])
    assert code == 0
    return results, "base"


@pytest.fixture
def run_copy(finished_run, tmp_path) -> tuple[Path, str]:
    """A fresh copy of `finished_run` for one test to damage: (results root, run id)."""
    results, run_id = finished_run
    shutil.copytree(results, tmp_path / "results")
    return tmp_path / "results", run_id
