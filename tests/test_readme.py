"""The README's examples run as written, on the results of one default sweep.

Every fenced block of README.md names its language (``sh``, ``python``, ``text``,
``yaml``). Each ``sh`` and ``python`` block runs, unless the line above it is
``<!-- no-test: reason -->`` (a GPU, a cloud cluster, `make`, a sweep of minutes).
Shell lines run one by one through bash in a temporary directory holding a copy of
the results of `make sweep` (the session's `default_sweep`, not a new sweep), with
the project's ``.venv/bin`` first on PATH; the Python blocks run in order in one
interpreter there, sharing their names as a reader's session would, and every
``expression  # value`` line whose comment is a value is checked against it. The
README's example run id is replaced by the copied run's id. The test fails on the
first example that exits non-zero, prints a traceback or claims a wrong value, and
when a runnable block did not run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
LANGUAGES = {"sh", "python", "text", "yaml"}
RUNNABLE = {"sh", "python"}
NO_TEST = re.compile(r"<!--\s*no-test:\s*(\S.*?)\s*-->")
# The run id the README's examples name; the test puts the copied run's id in its place.
EXAMPLE_RUN_ID = "20261127-224721-20e2"


@dataclass(frozen=True)
class Block:
    language: str
    code: str
    line: int  # of the opening fence, 1-based
    skip: str | None  # the no-test reason, if any


def readme_blocks(text: str) -> list[Block]:
    """The fenced blocks, each with its language and the no-test marker on the nearest non-blank line above."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if not lines[i].startswith("```"):
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        above = next((lines[k].strip() for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        marker = NO_TEST.fullmatch(above)
        blocks.append(Block(lines[i][3:].strip(), "\n".join(lines[i + 1:end]), i + 1,
                            marker.group(1) if marker else None))
        i = end + 1
    return blocks


def shell_commands(code: str) -> list[str]:
    """The commands of a shell block: continuation lines joined, blank and comment-only lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", code)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_every_block_names_its_language_and_whether_it_runs():
    text = README.read_text()
    blocks = readme_blocks(text)
    assert len(blocks) >= 15
    for block in blocks:
        assert block.language in LANGUAGES, f"README.md:{block.line}: fence without a known language"
        if block.skip is not None:
            assert block.language in RUNNABLE, f"README.md:{block.line}: no-test marker on a {block.language} block"
    # A marker that does not parse would silently make its block run (or fail): every "no-test" must be one.
    assert text.count("no-test") == sum(b.skip is not None for b in blocks)
    runnable = [b for b in blocks if b.language in RUNNABLE and b.skip is None]
    assert sum(b.language == "sh" for b in runnable) >= 3 and sum(b.language == "python" for b in runnable) >= 3


# Runs in the temporary directory: every python block in order in one namespace; for each
# top-level expression whose line ends in `# <value>`, the value is compared with it.
PYTHON_RUNNER = r'''
import ast, io, json, sys, tokenize

def claim_of(comment):
    """The value a comment states, as text, or None for a comment that describes."""
    claim = comment.lstrip("#").strip()
    return claim if claim[:1] and (claim[0].isdigit() or claim[0] in "([{'\"-") else None

def matches(value, claim):
    for text in (claim, claim.split(" (")[0].split()[0]):
        try:
            if ast.literal_eval(text) == value:
                return True
        except (ValueError, SyntaxError):
            pass
    if "..." in claim:
        return repr(value).startswith(claim.split("...")[0])
    return claim in (repr(value), str(value))

results, ns = [], {"__name__": "__readme__"}
for block in json.load(sys.stdin):
    src = block["code"]
    comments = {t.start[0]: t.string for t in tokenize.generate_tokens(io.StringIO(src).readline)
                if t.type == tokenize.COMMENT}
    for node in ast.parse(src).body:
        where = f"README.md:{block['line'] + node.lineno}"
        if isinstance(node, ast.Expr):
            value = eval(compile(ast.Expression(node.value), where, "eval"), ns)
            claim = claim_of(comments.get(node.end_lineno, ""))
            if claim is not None:
                results.append({"where": where, "claim": claim, "got": repr(value), "ok": matches(value, claim)})
        else:
            exec(compile(ast.Module([node], []), where, "exec"), ns)
print(json.dumps(results))
'''


@pytest.mark.slow
def test_the_readme_examples_run_as_written(default_sweep, tmp_path):
    assert default_sweep.proc.returncode == 0, default_sweep.proc.stderr[-3000:]
    text = README.read_text()
    blocks = readme_blocks(text)
    (run_dir,) = [p for p in default_sweep.results.iterdir() if p.is_dir()]
    shutil.copytree(default_sweep.results, tmp_path / "results")
    assert EXAMPLE_RUN_ID in text, "the README's examples no longer name EXAMPLE_RUN_ID; update the test"

    # The sample output is what the sweep prints: the same title and the same columns.
    sample = next(b for b in blocks if b.language == "text" and b.code.startswith("run "))
    printed = default_sweep.proc.stdout.splitlines()
    title = next(i for i, line in enumerate(printed) if line.startswith(f"run {run_dir.name}: "))
    assert sample.code.splitlines()[0].split(":", 1)[1] == printed[title].split(":", 1)[1]
    assert sample.code.splitlines()[1].split() == printed[title + 1].split()

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(PATH=f"{Path(sys.prefix) / 'bin'}{os.pathsep}{env.get('PATH', '')}", OMP_NUM_THREADS="1",
               HF_HUB_OFFLINE="1")  # an example that reaches for the network fails here, as on an offline machine
    ran: list[int] = []
    took: list[tuple[float, str]] = []  # printed with -s: where the test's time goes
    for block in blocks:
        if block.language != "sh" or block.skip is not None:
            continue
        for command in shell_commands(block.code.replace(EXAMPLE_RUN_ID, run_dir.name)):
            started = time.monotonic()
            done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                                  timeout=300)
            where = f"README.md:{block.line}: {command}"
            assert done.returncode == 0, f"{where}\nexit {done.returncode}\n{done.stderr[-3000:]}"
            assert "Traceback" not in done.stderr, f"{where}\n{done.stderr[-3000:]}"
            assert done.stdout.strip() or ">" in command, f"{where}: printed nothing"
            took.append((time.monotonic() - started, command))
        ran.append(block.line)

    python = [{"code": b.code.replace(EXAMPLE_RUN_ID, run_dir.name), "line": b.line}
              for b in blocks if b.language == "python" and b.skip is None]
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", PYTHON_RUNNER], input=json.dumps(python), cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    took.append((time.monotonic() - started, "the python blocks"))
    claims = json.loads(done.stdout.strip().splitlines()[-1])
    wrong = [c for c in claims if not c["ok"]]
    assert not wrong, "README values that the code does not give:\n" + "\n".join(
        f"{c['where']}: says {c['claim']}, gives {c['got']}" for c in wrong)
    assert len(claims) >= 4  # the tilings examples state their values
    ran += [b["line"] for b in python]

    runnable = [b.line for b in blocks if b.language in RUNNABLE and b.skip is None]
    assert sorted(ran) == runnable
    # The examples did what they say: fill measured the 9-crop tiling the default families lack (4x2),
    # on one new actor (one config to measure: no second model loaded for nothing).
    (run_after,) = [p for p in (tmp_path / "results").iterdir() if p.is_dir()]
    parts_after = {p.name for p in run_after.glob("part-*.parquet")}
    assert len(parts_after - {p.name for p in run_dir.glob("part-*.parquet")}) == 1
    hosts = [json.loads((d / "manifest.json").read_text())["hosts"] for d in (run_dir, run_after)]
    assert len(hosts[1]) == len(hosts[0]) + 1
    print("\n".join(f"{seconds:6.1f} s  {command}" for seconds, command in took))
