"""The rooms and the arrows between them, checked on the source.

tilesweep ← tilings ← workers ← store ← analysis, and store ← orchestrator: a
package imports only the rooms below it, orchestrator reaches analysis only in the
commands that show results, nothing imports in a circle (between packages, or
between modules, imports inside functions included), and the light rooms keep the
heavy libraries out. Every import statement counts, wherever it stands.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tilesweep", "tilings", "workers", "store", "analysis", "orchestrator")
# What each package may import of the others.
ALLOWED: dict[str, set[str]] = {
    "tilesweep": set(),
    "tilings": {"tilesweep"},
    "workers": {"tilesweep", "tilings"},
    "store": {"tilesweep", "tilings", "workers"},
    "analysis": {"tilesweep", "tilings", "workers", "store"},
    "orchestrator": {"tilesweep", "tilings", "workers", "store"},
}
# The CLI commands that show results may read them through analysis.
ANALYSIS_USERS = {"orchestrator.commands.run", "orchestrator.commands.query", "orchestrator.commands.report"}
# Third-party packages a room must never import.
BANNED: dict[str, set[str]] = {
    "tilesweep": {"torch", "numpy", "ray", "polars", "pyarrow", "transformers"},
    "tilings": {"torch", "numpy", "ray", "polars", "pyarrow", "transformers"},
    "workers": {"ray", "polars", "pyarrow"},
    "store": {"ray", "torch", "transformers"},
    "analysis": {"ray", "torch", "transformers"},
}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, root: Path, modules: set[str] = frozenset()) -> set[str]:
    """Every module `path` imports, anywhere in it (relative imports resolved).

    ``from pkg import name`` counts as importing ``pkg.name`` when that is a module
    (one of `modules`), else as importing ``pkg``.
    """
    me = module_name(path, root)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return found


def _files(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    return {module_name(p, root): p for pkg in packages for p in (root / pkg).rglob("*.py")}


def graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """``{module: project modules it imports}`` over the packages under `root`."""
    files = _files(root, packages)
    return {mod: {m for m in imports(path, root, set(files)) if m in files and m != mod}
            for mod, path in files.items()}


def problems(root: Path, packages: tuple[str, ...] = PACKAGES) -> list[str]:
    """One line per arrow that points the wrong way, per banned import, and per import cycle."""
    out = []
    files = _files(root, packages)
    for mod, path in sorted(files.items()):
        pkg = mod.split(".")[0]
        for target in sorted(imports(path, root, set(files))):
            top = target.split(".")[0]
            if top in packages and top != pkg and top not in ALLOWED[pkg]:
                if not (top == "analysis" and mod in ANALYSIS_USERS):
                    out.append(f"{mod} imports {target}: {pkg} may import only {sorted(ALLOWED[pkg]) or 'nothing'}")
            if top in BANNED.get(pkg, ()):
                out.append(f"{mod} imports {target}: {pkg} must not import {top}")
    out += [f"import cycle: {' -> '.join(c)}" for c in cycles(graph(root, packages))]
    packages_graph: dict[str, set[str]] = defaultdict(set)
    for mod, targets in graph(root, packages).items():
        packages_graph[mod.split(".")[0]] |= {t.split(".")[0] for t in targets} - {mod.split(".")[0]}
    out += [f"package cycle: {' -> '.join(c)}" for c in cycles(packages_graph)]
    return out


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each as a closed path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component) + [sorted(component)[0]])

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_project_keeps_its_layers():
    assert problems(ROOT) == []


def test_every_package_is_checked():
    on_disk = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"benchmarks", "tests"}
    assert on_disk == set(PACKAGES), "a new top-level package needs its place in ALLOWED and BANNED"


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir(exist_ok=True)
        (tmp_path / pkg / "__init__.py").touch()
    return tmp_path


@pytest.mark.parametrize("files, needle", [
    # an arrow up, even from inside a function
    ({"store/runs.py": "def f():\n    from orchestrator.plan import plan\n"},
     "store.runs imports orchestrator.plan: store may import only"),
    # the results side reaching into the analysis side
    ({"store/invariant.py": "from analysis.query import scan\n"}, "store.invariant imports analysis.query"),
    # orchestrator's machinery (not a command that shows results) reading analysis
    ({"orchestrator/sweep.py": "from analysis import query\n"}, "orchestrator.sweep imports analysis"),
    # two modules importing each other, one of them inside a function
    ({"store/runs.py": "from store.scan import scan\n", "store/scan.py": "def f():\n    from store import runs\n"},
     "import cycle: store.runs -> store.scan -> store.runs"),
    # a relative import counts like an absolute one
    ({"store/a.py": "from . import b\n", "store/b.py": "from .a import x\n"}, "import cycle: store.a -> store.b"),
    ({"workers/host.py": "import ray\n"}, "workers.host imports ray: workers must not import ray"),
    ({"tilings/select.py": "import numpy as np\n"}, "tilings must not import numpy"),
])
def test_the_checker_finds_what_it_must(tmp_path, files, needle):
    found = problems(_tree(tmp_path, files))
    assert any(needle in p for p in found), found


def test_the_checker_allows_the_commands_that_show_results(tmp_path):
    root = _tree(tmp_path, {"orchestrator/commands/report.py": "from analysis import report\n",
                            "analysis/report.py": "from store.scan import scan\n", "store/scan.py": ""})
    assert problems(root) == []
