"""``python -m benchmarks [--quick] [--only NAME,...] [--out DIR]`` (what ``make bench`` runs).

Runs the benchmarks one after another in this process, writes
``<out>/<name>.json`` for each and ``<out>/README.md`` (the Markdown table), and
prints the table.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import REPO_ROOT, Context, Result, machine_info, markdown_report, write_atomic, write_json

# name -> module; run in this order (additivity reuses the sweep that speedup ran).
BENCHMARKS: dict[str, str] = {
    "scheduling": "benchmarks.scheduling",
    "speedup": "benchmarks.speedup",
    "overhead": "benchmarks.overhead",
    "additivity": "benchmarks.additivity",
    "adaptive": "benchmarks.adaptive",
    "scale": "benchmarks.scale",
    "control": "benchmarks.control",
}

log = logging.getLogger("benchmarks")


def parse_only(text: str | None) -> list[str]:
    """``"speedup,overhead"`` -> those names in run order; None -> all.

    Raises:
        ValueError: an unknown benchmark name.
    """
    if text is None:
        return list(BENCHMARKS)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown or not names:
        raise ValueError(f"--only {text!r}: unknown benchmark(s) {unknown}; pick from {', '.join(BENCHMARKS)}")
    return [n for n in BENCHMARKS if n in names]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (what the tests run), a minute or two")
    parser.add_argument("--only", metavar="NAME,...", help=f"run only these: {', '.join(BENCHMARKS)}")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results",
                        help="where the JSON files and README.md go (default: benchmarks/results)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def run(names: list[str], *, quick: bool, out: Path) -> list[Result]:
    """Run the named benchmarks, write their files; return their results."""
    # One thread per op everywhere: the workers, the loops and Tune's trials share a few cores.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    machine = machine_info()
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="tilesweep-bench-") as work:
        context = Context(work_dir=Path(work))
        for name in names:
            module = importlib.import_module(BENCHMARKS[name])
            log.info("benchmark %s%s ...", name, " (quick)" if quick else "")
            t0 = time.perf_counter()
            result = module.run(quick=quick, context=context)
            result.wall_s = time.perf_counter() - t0
            log.info("benchmark %s done in %.1f s", name, result.wall_s)
            write_json(result, out, machine)
            results.append(result)
    machine_end = machine_info()
    machine["load_average_end"] = machine_end["load_average"]
    command = "python -m benchmarks" + (" --quick" if quick else "")
    write_atomic(out / "README.md", markdown_report(results, machine, command=command))
    for result in results:  # the machine line with the load at the end, in every file
        write_json(result, out, machine)
    return results


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        names = parse_only(args.only)
    except ValueError as exc:
        sys.stderr.write(f"python -m benchmarks: error: {exc}\n")
        return 2
    run(names, quick=args.quick, out=args.out)
    sys.stdout.write((args.out / "README.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
