"""Polars frames as aligned text, Markdown, HTML, CSV and JSON.

Shared by `tilesweep query` (text, CSV, JSON on stdout) and `tilesweep report`
(Markdown and HTML), so a table reads the same wherever it is printed. Aligned
text goes through `tilesweep.text.table`, the one text renderer of the project.
"""

from __future__ import annotations

import html
import math
from datetime import datetime

import polars as pl

from tilesweep.text import table

FORMATS = ("table", "csv", "json")


def format_value(value: object) -> str:
    """One cell as text: floats with a precision that suits milliseconds, nulls empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        magnitude = abs(value)
        if magnitude >= 1000:
            return f"{value:.1f}"
        if magnitude >= 1 or magnitude == 0:
            return f"{value:.3f}"
        if magnitude >= 0.001:
            return f"{value:.4f}"
        return f"{value:.3e}"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return str(value)


def _cells(df: pl.DataFrame) -> list[list[str]]:
    return [[format_value(v) for v in row] for row in df.iter_rows()]


def _numeric(df: pl.DataFrame) -> list[bool]:
    return [dtype.is_numeric() for dtype in df.dtypes]


def to_text(df: pl.DataFrame) -> str:
    """An aligned plain-text table: numbers right-aligned, everything else left-aligned, every row."""
    return table(df.columns, _cells(df), right=_numeric(df), rule=True) + "\n"


def to_markdown(df: pl.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (pipes in cells escaped)."""

    def esc(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    align = ["---:" if num else ":---" for num in _numeric(df)]
    out = ["| " + " | ".join(esc(c) for c in df.columns) + " |", "| " + " | ".join(align) + " |"]
    out += ["| " + " | ".join(esc(c) for c in row) + " |" for row in _cells(df)]
    return "\n".join(out) + "\n"


def to_html(df: pl.DataFrame) -> str:
    """An HTML ``<table>`` with escaped cells; numeric columns carry class ``num``."""
    numeric = _numeric(df)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in df.columns)
    body = []
    for row in _cells(df):
        tds = "".join(
            f'<td class="num">{html.escape(c)}</td>' if num else f"<td>{html.escape(c)}</td>"
            for c, num in zip(row, numeric)
        )
        body.append(f"<tr>{tds}</tr>")
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>\n"


def _flat(df: pl.DataFrame) -> pl.DataFrame:
    """Nested columns (per-block spans) as text, since CSV has no lists."""
    nested = [c for c, t in df.schema.items() if isinstance(t, pl.List)]
    return df.with_columns(
        pl.concat_str(pl.lit("["), pl.col(c).cast(pl.List(pl.String)).list.join(", "), pl.lit("]")).alias(c)
        for c in nested
    )


def render(df: pl.DataFrame, fmt: str) -> str:
    """`df` as text in one of `FORMATS`."""
    if fmt == "table":
        return to_text(df)
    if fmt == "csv":
        return _flat(df).write_csv()
    if fmt == "json":
        return df.write_json() + "\n"
    raise ValueError(f"unknown output format {fmt!r}; choose one of {', '.join(FORMATS)}")
