"""`tilesweep report [--results DIR] -o DIR`: PNG figures, report.html (self-contained) and report.md (`analysis.report`).

The results path is ``--results``, as in every subcommand (default ``results``);
the older ``report RESULTS -o DIR`` is still accepted, deprecated.
"""

from __future__ import annotations

import argparse
import sys

from analysis import report
from orchestrator.commands._results import add_results_argument, results_of


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_results_argument(parser, positional_form="report RESULTS -o DIR")
    parser.add_argument("results_positional", nargs="?", default=None, help=argparse.SUPPRESS)
    parser.add_argument("-o", "--output", required=True, metavar="DIR",
                        help="directory to write into (created if missing; the files of an earlier report there are "
                             "replaced, others left alone)")
    parser.add_argument(
        "--run-id", action="append", default=None, metavar="ID",
        help="only this run (repeatable); default: every run under --results, one section each",
    )


def main(args: argparse.Namespace) -> int:
    results = results_of(args, args.results_positional, "report")
    written = report.build(results, args.output, run_ids=args.run_id)
    html = next(p for p in written if p.name == "report.html")
    sys.stdout.write(f"{html}\n")
    return 0
