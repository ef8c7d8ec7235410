"""One module of exception types; the CLI turns only those into one-line exits and lets a bug show itself."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from orchestrator import cli
from orchestrator.commands import query as query_command
from tilesweep import errors
from tilesweep.errors import ResultsError, SpecError, SweepError, UsageError

ROOT = Path(__file__).resolve().parents[2]


def test_every_exception_type_lives_in_the_errors_module():
    defined = []
    for pkg in ("tilesweep", "tilings", "workers", "store", "analysis", "orchestrator"):
        for path in (ROOT / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef) and any(
                        getattr(b, "id", getattr(b, "attr", "")).endswith(("Error", "Exception")) for b in node.bases):
                    defined.append(f"{path.relative_to(ROOT)}:{node.name}")
    assert sorted(defined) == sorted(f"tilesweep/errors.py:{name}" for name, obj in vars(errors).items()
                                     if inspect.isclass(obj) and issubclass(obj, Exception)
                                     and obj.__module__ == errors.__name__)


@pytest.mark.parametrize("exc, code, lines", [
    (UsageError("--x 3 is not allowed; pass 1 or 2"), 2, ["tilesweep query: error: --x 3 is not allowed; pass 1 or 2"]),
    (ResultsError("no run 'r' under 'R';\n runs there: a"), 2, ["tilesweep query: error: no run 'r' under 'R'; runs there: a"]),
    (SpecError(["spec: a: bad", "spec: b: worse"]), 2, ["tilesweep query: error: spec: a: bad",
                                                         "tilesweep query: error: spec: b: worse"]),
    (SweepError("no host actor started"), 1, ["tilesweep query: no host actor started"]),
])
def test_project_errors_are_one_line_each(monkeypatch, capsys, exc, code, lines):
    def fail(*args, **kwargs):
        raise exc

    monkeypatch.setattr(query_command, "execute", fail)
    assert cli.main(["query", "results", "SELECT 1"]) == code
    assert capsys.readouterr().err.splitlines() == lines


@pytest.mark.parametrize("bug", [ValueError("a polars internal ValueError"), KeyError("column"), TypeError("x")])
def test_a_bug_keeps_its_traceback(monkeypatch, bug):
    """A bare ValueError from deep inside a library is not bad input: it is not turned into exit 2."""
    def fail(*args, **kwargs):
        raise bug

    monkeypatch.setattr(query_command, "execute", fail)
    with pytest.raises(type(bug)):
        cli.main(["query", "results", "SELECT 1"])


def test_parser_errors_name_the_command_once(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["nope"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("tilesweep: error: ") and "tilesweep tilesweep" not in err and err.count("\n") == 1
    with pytest.raises(SystemExit):
        cli.main(["status", "--bogus"])
    assert capsys.readouterr().err.startswith("tilesweep status: error: unrecognized arguments: --bogus")


def test_help_lists_every_command_without_importing_one(capsys):
    import subprocess
    import sys

    code = ("import sys, contextlib, io\nfrom orchestrator import cli\nout = io.StringIO()\n"
            "with contextlib.redirect_stdout(out):\n    try:\n        cli.main(['--help'])\n"
            "    except SystemExit:\n        pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('orchestrator.commands.')))\n"
            "print(out.getvalue())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    first, _, text = done.stdout.partition("\n")
    assert first == "[]"
    text = " ".join(text.split())
    for name, help_text in cli.COMMANDS.items():
        assert f"{name} {help_text}" in text
