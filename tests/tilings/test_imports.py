"""tilings stays pure: importing it (and running `tilesweep plan`) pulls in neither torch nor ray."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "ray", "transformers", "numpy")


def modules_loaded_after(code: str) -> set[str]:
    probe = code + "\nimport sys\nprint(' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split("\n")[-2].split())


def test_tilings_imports_no_heavy_package():
    loaded = modules_loaded_after(
        "import tilings\n"
        "from tilings import *\n"
        "tilings.geometry(3000, 200, 'molmo-v1'); tilings.enumerate_tilings('molmo2', tilings.PROFILES['molmo2'].families)"
    )
    assert "tilings" in loaded
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_the_plan_command_imports_no_heavy_library():
    loaded = modules_loaded_after(
        "import contextlib, io\n"
        "from orchestrator.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert main(['plan', '--profile', 'molmo-v1', '--family', 'all']) == 0"
    )
    assert "tilings" in loaded
    # `plan` answers at once: not even the results store's libraries are loaded.
    heavy = {"torch", "ray", "polars", "pyarrow", "matplotlib"}
    assert not loaded & heavy, sorted(loaded & heavy)
