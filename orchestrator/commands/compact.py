"""`tilesweep compact [--results DIR] [--run-id ID]`: a finished run's parts become one Parquet file (`store.compact`).

Every reader of a run of thousands of configs pays per part file; a compacted
run is one file and reads as fast as polars reads it. What readers see does not
change: the same kept attempt of every config, before, during (a crash at any
point) and after. Only a finished run whose invariant holds is compacted; the
others are named on stderr with the reason and left as they were (exit 1).
Compacting again folds in parts written since (a resume of failed configs).
"""

from __future__ import annotations

import argparse
import sys
from typing import IO

from orchestrator.commands._results import DEFAULT_RESULTS, add_results_argument
from store.compact import compact
from store.runs import list_runs
from tilesweep.errors import ResultsError, UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_results_argument(parser)
    parser.add_argument("--run-id", action="append", default=None, metavar="ID",
                        help="only this run (repeatable); default: every run under --results")


def main(args: argparse.Namespace, stdout: IO[str] | None = None) -> int:
    stdout = stdout or sys.stdout
    results = args.results or DEFAULT_RESULTS
    known = [r for _, r in list_runs(results)]
    unknown = [r for r in args.run_id or () if r not in known]
    if unknown:
        raise UsageError(f"no run {', '.join(map(repr, unknown))} under {results!r} to compact; runs there: "
                         f"{', '.join(known) or 'none'}")
    if not known:
        raise UsageError(f"no run under {results!r} to compact; pass --results the directory that holds the runs")
    failed = 0
    for run_id in args.run_id or known:
        try:
            done = compact(results, run_id)
        except ResultsError as exc:
            failed += 1
            sys.stderr.write(f"tilesweep compact: run {run_id} not compacted: {' '.join(str(exc).split())}\n")
            continue
        if done.parts:
            stdout.write(f"run {run_id}: {done.parts} part(s) compacted into compacted.parquet ({done.configs} "
                         f"configs, {done.rows} rows)\n")
        else:
            stdout.write(f"run {run_id}: nothing new to compact ({done.configs} configs in compacted.parquet"
                         + (f"; {done.removed} part(s) an earlier compaction left removed" if done.removed else "")
                         + ")\n")
    return 1 if failed else 0
