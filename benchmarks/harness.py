"""What every benchmark returns, the machine it ran on, and the files it writes.

A benchmark is a function ``run(quick: bool, context: Context) -> Result``. A
`Result` holds `Figure` rows (one number each, with its unit and a note such as
the target) plus free-form ``details`` (sizes, raw samples) that go into the
benchmark's JSON file but not into the table. Files are written to a temporary
name and renamed, so an interrupted run never leaves half a JSON behind.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import math
import os
import platform
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# The benchmark package lives at the repository root, next to the packages it measures.
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(kw_only=True, frozen=True, slots=True)
class Figure:
    """One reported number: a row of the Markdown table."""

    name: str
    value: float
    unit: str
    notes: str = ""

    def is_finite(self) -> bool:
        return isinstance(self.value, (int, float)) and math.isfinite(self.value)


@dataclass(kw_only=True, slots=True)
class Result:
    """A benchmark's figures and the details behind them."""

    benchmark: str
    title: str
    quick: bool
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0

    def add(self, name: str, value: float, unit: str, notes: str = "") -> None:
        self.figures.append(Figure(name=name, value=float(value), unit=unit, notes=notes))

    def to_json(self, machine: dict[str, Any]) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "title": self.title,
            "quick": self.quick,
            "wall_s": self.wall_s,
            "figures": [asdict(f) for f in self.figures],
            "details": self.details,
            "machine": machine,
        }


@dataclass(kw_only=True, slots=True)
class Context:
    """State shared between benchmarks of one run (e.g. the records of a real sweep)."""

    work_dir: Path
    shared: dict[str, Any] = field(default_factory=dict)


def _version(dist: str) -> str | None:
    # Read from package metadata so that describing the machine imports nothing heavy.
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def machine_info() -> dict[str, Any]:
    """Where the figures were measured: CPU, cores, memory, library versions, date, load."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_gib": _memory_gib(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "transformers": _version("transformers"),
        "ray": _version("ray"),
        "tilesweep": _version("tilesweep"),
        "git_commit": _git_commit(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def machine_line(machine: dict[str, Any]) -> str:
    line = (
        f"{machine['cpu_model']}, {machine['usable_cores']} cores, {machine['memory_gib']} GiB, "
        f"Python {machine['python']}, torch {machine['torch']}, transformers {machine['transformers']}, "
        f"Ray {machine['ray']}, OMP_NUM_THREADS={machine['omp_num_threads']}, {machine['date']}"
    )
    # The 1-minute load average says how busy the machine was besides the benchmark's own work.
    start, end = machine.get("load_average"), machine.get("load_average_end")
    if start and end:
        line += f"; load average {start[0]:.2f} at the start, {end[0]:.2f} at the end"
    return line


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(result: Result, out_dir: Path, machine: dict[str, Any]) -> Path:
    path = out_dir / f"{result.benchmark}.json"
    # allow_nan=False: a NaN figure is a bug in the benchmark, not a value to store.
    write_atomic(path, json.dumps(result.to_json(machine), indent=2, allow_nan=False, default=str) + "\n")
    return path


def _format_value(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    magnitude = abs(value)
    if magnitude == 0 or magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 0.01:
        return f"{value:.3f}"
    return f"{value:.2e}"


def markdown_table(results: list[Result]) -> str:
    """One row per figure: benchmark, figure, value, unit, notes."""
    lines = ["| Benchmark | Figure | Value | Unit | Notes |", "|---|---|---:|---|---|"]
    for result in results:
        for fig in result.figures:
            notes = fig.notes.replace("|", "\\|")
            lines.append(f"| {result.title} | {fig.name} | {_format_value(fig.value)} | {fig.unit} | {notes} |")
    return "\n".join(lines)


def markdown_report(results: list[Result], machine: dict[str, Any], *, command: str) -> str:
    quick = any(r.quick for r in results)
    header = [
        "# tilesweep benchmarks" + (" (quick sizes)" if quick else ""),
        "",
        f"Measured with `{command}` on: {machine_line(machine)}.",
        "",
    ]
    return "\n".join(header) + markdown_table(results) + "\n"


class Stopwatch:
    """Wall-clock seconds since construction (perf_counter) plus the epoch time it started.

    The epoch start lets durations be compared with timestamps other processes
    wrote (records' ``finished_at``) on the same machine.
    """

    __slots__ = ("_t0", "epoch0")

    def __init__(self) -> None:
        self.epoch0 = time.time()
        self._t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self._t0
