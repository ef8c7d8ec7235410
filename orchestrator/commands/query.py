"""`tilesweep query [--results DIR] "SQL"`: polars SQL over the results (`analysis.sql`).

The results path is ``--results``, as in every subcommand (default ``results``, as
`run` writes). The older ``query RESULTS "SQL"`` (the path as the first word)
is still accepted, deprecated: two words are RESULTS and SQL, one word is SQL.
"""

from __future__ import annotations

import argparse
import sys

from analysis.sql import TABLES, execute
from analysis.tables import FORMATS, render
from orchestrator.commands._results import add_results_argument, results_of


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (f"polars SQL over the results. Tables: {', '.join(TABLES)} (see analysis.query). "
                          "Only a query is run (SELECT, or WITH ... SELECT).")
    add_results_argument(parser, positional_form='query RESULTS "SQL"')
    parser.add_argument(
        "sql", metavar="SQL",
        help='polars SQL, e.g. "SELECT crops, vision_median_ms FROM summary ORDER BY crops"',
    )
    # The deprecated form's second word: with it, the first word was RESULTS.
    parser.add_argument("sql_after_results", nargs="?", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    parser.add_argument(
        "--run-id", action="append", default=None, metavar="ID",
        help="only this run (repeatable); default: every run under --results",
    )


def main(args: argparse.Namespace) -> int:
    positional, sql = (args.sql, args.sql_after_results) if args.sql_after_results is not None else (None, args.sql)
    results = results_of(args, positional, "query")
    sys.stdout.write(render(execute(results, sql, args.run_id), args.format))
    return 0
