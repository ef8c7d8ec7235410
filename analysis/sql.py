"""polars SQL over the results: the tables `tilesweep query` sees, by name.

``results`` is one row per timed repeat (one attempt per config); the others are
the questions of `analysis.query`, each a lazy frame over the same rows.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

import polars as pl

from analysis import query
from tilesweep.errors import ResultsError, UsageError

# name -> the frame it is, from the result rows; `results` is the rows themselves.
TABLES: dict[str, Callable[[pl.LazyFrame], pl.LazyFrame]] = {
    "results": lambda lf: lf,
    "summary": query.summary,
    "by_crops": query.by_crops,
    "by_tokens": query.by_tokens,
    "method_gap": query.method_gap,
    "additivity": query.additivity,
}


def tables(results: str | Path | Sequence[str | Path], run_ids: Sequence[str] | None = None) -> dict[str, pl.LazyFrame]:
    """The lazy frames the SQL sees, by table name, over `results` (only `run_ids`, when given).

    Raises:
        ResultsError: the path does not exist or holds no run, or a run id is not under it.
    """
    lf = query.scan_results(results)
    if run_ids:
        known = lf.select(pl.col("run_id").unique().sort()).collect()["run_id"].to_list()
        unknown = [r for r in run_ids if r not in known]
        if unknown:
            raise ResultsError(f"no run {', '.join(map(repr, unknown))} under {str(results)!r}; "
                               f"runs there: {', '.join(known) or 'none'}")
        lf = lf.filter(pl.col("run_id").is_in(list(run_ids)))
    return {name: make(lf) for name, make in TABLES.items()}


# The first word of a statement that only reads: SELECT, or WITH ... SELECT. Anything
# else (CREATE, DROP, COPY, TRUNCATE, DELETE, SHOW, EXPLAIN, ...) is refused before
# polars sees it: polars would run some of them against the in-memory tables and
# print an empty answer, which reads like a result.
_QUERY_WORDS = ("SELECT", "WITH")
# Leading whitespace, comments and opening parentheses before the first word.
_LEAD = re.compile(r"\A(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?\*/|\()*", re.DOTALL)
_WORD = re.compile(r"[A-Za-z_]+")


def check_query(sql: str) -> None:
    """`sql` is a query (SELECT, or WITH ... SELECT).

    Raises:
        UsageError: another kind of statement, named by its first word.
    """
    lead = _LEAD.match(sql)
    word = _WORD.match(sql, lead.end() if lead else 0)
    first = word.group(0).upper() if word else ""
    if first not in _QUERY_WORDS:
        shown = repr(first) if first else "an empty statement"
        raise UsageError(f"query failed: only a query is run, got {shown}; start the statement with SELECT (or "
                         f"WITH ... SELECT), e.g. \"SELECT * FROM summary\" (tables: {', '.join(TABLES)})")


def execute(results: str | Path | Sequence[str | Path], sql: str, run_ids: Sequence[str] | None = None) -> pl.DataFrame:
    """Run `sql`, one SELECT (or WITH ... SELECT), over the tables.

    Raises:
        UsageError: not a query, or a query polars refuses (its message on one line).
        ResultsError: see `tables`.
    """
    check_query(sql)
    frames = tables(results, run_ids)
    try:
        return pl.SQLContext(frames).execute(sql, eager=True)
    except pl.exceptions.PolarsError as exc:
        # polars appends the resolved plan after a blank line; the first paragraph is the message.
        message = " ".join(str(exc).split("\n\n")[0].split())
        raise UsageError(f"query failed: {message} (tables: {', '.join(frames)})") from None
