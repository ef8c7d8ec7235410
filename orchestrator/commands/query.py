"""`tilesweep query RESULTS "SQL"`: polars SQL over the results.

Tables: ``results`` (one row per timed repeat, one attempt per config),
``summary`` (one row per config), and the question tables ``by_crops``,
``by_tokens``, ``method_gap``, ``additivity``; see `orchestrator.query`.
"""

from __future__ import annotations

import argparse
import sys

HELP = "polars SQL over the results (tables: results, summary, by_crops, by_tokens, method_gap, additivity)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", metavar="RESULTS", help="results root, or one run directory")
    parser.add_argument(
        "sql", metavar="SQL",
        help='polars SQL, e.g. "SELECT crops, vision_median_ms FROM summary ORDER BY crops"',
    )
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output format (default: table)")
    parser.add_argument(
        "--run-id", action="append", default=None, metavar="ID",
        help="only this run (repeatable); default: every run under RESULTS",
    )


def tables(results: str, run_ids: list[str] | None = None) -> dict[str, object]:
    """The lazy frames the SQL sees, by table name."""
    import polars as pl

    from orchestrator import query

    lf = query.scan(results)
    if run_ids:
        known = lf.select(pl.col("run_id").unique().sort()).collect()["run_id"].to_list()
        unknown = [r for r in run_ids if r not in known]
        if unknown:
            raise ValueError(f"no run {', '.join(map(repr, unknown))} under {results!r}; "
                             f"runs there: {', '.join(known) or 'none'}")
        lf = lf.filter(pl.col("run_id").is_in(run_ids))
    return {
        "results": lf,
        "summary": query.summary(lf),
        "by_crops": query.by_crops(lf),
        "by_tokens": query.by_tokens(lf),
        "method_gap": query.method_gap(lf),
        "additivity": query.additivity(lf),
    }


def execute(results: str, sql: str, run_ids: list[str] | None = None):
    """Run `sql` over the tables; a bad query is a `ValueError` with polars' message on one line."""
    import polars as pl

    frames = tables(results, run_ids)
    try:
        return pl.SQLContext(frames).execute(sql, eager=True)
    except pl.exceptions.PolarsError as exc:
        # polars appends the resolved plan after a blank line; the first paragraph is the message.
        message = " ".join(str(exc).split("\n\n")[0].split())
        raise ValueError(f"query failed: {message} (tables: {', '.join(frames)})") from None


def main(args: argparse.Namespace) -> int:
    from orchestrator.report_tables import render

    df = execute(args.results, args.sql, args.run_id)
    sys.stdout.write(render(df, args.format))
    return 0
