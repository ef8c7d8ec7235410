"""Plain-text tables: the one renderer behind every aligned table tilesweep prints.

`tilesweep plan`, `tilesweep status`, the table a sweep ends with and
`tilesweep query` all print through `table`, so columns line up the same way
everywhere: text left-aligned, numbers right-aligned, two spaces between columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], *, right: Sequence[bool] | None = None,
          rule: bool = False, title: str | None = None) -> str:
    """Rows of cells as aligned lines (no trailing newline).

    Args:
        header: column names.
        rows: cells; anything that is not a string is shown with `str` (None as ``-``).
        right: per column, right-align it; default: columns whose cells are all numbers.
        rule: a line of dashes under the header.
        title: a line above the header.
    """
    cells = [[_cell(v) for v in row] for row in rows]
    if right is None:
        right = [all(isinstance(row[i], (int, float)) and not isinstance(row[i], bool) for row in rows) and bool(rows)
                 for i in range(len(header))]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(header)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right)).rstrip()

    out = [title] if title is not None else []
    out.append(line(list(header)))
    if rule:
        out.append("  ".join("-" * w for w in widths))
    out += [line(r) for r in cells]
    return "\n".join(out)


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)
