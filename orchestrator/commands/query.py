"""`tilesweep query RESULTS "SQL"`: polars SQL over the results (`analysis.sql`)."""

from __future__ import annotations

import argparse
import sys

from analysis.sql import TABLES, execute
from analysis.tables import FORMATS, render


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = f"polars SQL over the results; tables: {', '.join(TABLES)} (see analysis.query)"
    parser.add_argument("results", metavar="RESULTS", help="results root, or one run directory")
    parser.add_argument(
        "sql", metavar="SQL",
        help='polars SQL, e.g. "SELECT crops, vision_median_ms FROM summary ORDER BY crops"',
    )
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    parser.add_argument(
        "--run-id", action="append", default=None, metavar="ID",
        help="only this run (repeatable); default: every run under RESULTS",
    )


def main(args: argparse.Namespace) -> int:
    sys.stdout.write(render(execute(args.results, args.sql, args.run_id), args.format))
    return 0
