"""The fault-injection testing hook: parsing, and hang/crash in a real process."""

from __future__ import annotations

import subprocess
import sys

import pytest

from workers import faults

PYTHON = sys.executable


def test_parse_items_with_and_without_attempt():
    assert faults.parse("oom@1x3, hang@2x2/1,") == [faults.Fault("oom", 1, 3), faults.Fault("hang", 2, 2, 1)]
    assert faults.Fault("error", 1, 1, 2).applies(1, 1, 2) and not faults.Fault("error", 1, 1, 2).applies(1, 1, 1)


@pytest.mark.parametrize("bad", ["oom1x3", "boom@1x3", "oom@1x", "oom@axb", "oom@1x3/x"])
def test_bad_items_name_the_format(bad):
    with pytest.raises(ValueError, match=r"<kind>@<rows>x<cols>\[/<attempt>\]"):
        faults.parse(bad)


def test_oom_is_the_real_torch_class(monkeypatch):
    import torch

    monkeypatch.setenv(faults.ENV_VAR, "oom@2x3")
    faults.in_measured_region(1, 3, 1)  # another tiling: nothing happens
    with pytest.raises(torch.OutOfMemoryError):
        faults.in_measured_region(2, 3, 1)


def _start(spec: str, env: dict[str, str]) -> subprocess.Popen:
    code = "from workers import faults; faults.at_config_start(1, 1, 1); print('passed')"
    return subprocess.Popen([PYTHON, "-c", code], env={**env, faults.ENV_VAR: spec},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_hang_blocks_until_killed_and_crash_exits(no_ray_env):
    hung = _start("hang@1x1", no_ray_env)
    with pytest.raises(subprocess.TimeoutExpired):
        hung.wait(timeout=3)
    hung.kill()
    hung.wait()
    crashed = _start("crash@1x1", no_ray_env)
    assert crashed.wait(timeout=60) == faults.CRASH_EXIT_CODE
    other = _start("crash@2x2", no_ray_env)
    assert other.wait(timeout=60) == 0 and other.stdout.read().strip() == "passed"
