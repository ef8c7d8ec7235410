"""`tilesweep report RESULTS -o DIR`: PNG figures, report.html (self-contained) and report.md (`analysis.report`)."""

from __future__ import annotations

import argparse
import sys

from analysis import report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", metavar="RESULTS", help="results root, or one run directory")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="directory to write into (created if missing)")
    parser.add_argument(
        "--run-id", action="append", default=None, metavar="ID",
        help="only this run (repeatable); default: every run under RESULTS, one section each",
    )


def main(args: argparse.Namespace) -> int:
    written = report.build(args.results, args.output, run_ids=args.run_id)
    html = next(p for p in written if p.name == "report.html")
    sys.stdout.write(f"{html}\n")
    return 0
