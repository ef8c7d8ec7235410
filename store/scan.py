"""One lazy polars frame over every result row, one attempt per config.

`scan` is how everything above the store reads results: the analysis tables,
`tilesweep query` and `report`, the end-of-run table, the invariant. It is lazy,
so a caller's filters are pushed down into the Parquet scan and nothing is read
until `.collect()`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import polars as pl
import pyarrow as pa

from store import fs
from store.fs import Location
from store.parts import part_files, readable
from store.schema import SCHEMA
from workers.record import STATUS_OK

log = logging.getLogger(__name__)

# The schema's dtypes in polars terms, derived from the one Arrow schema.
# (`pa.nulls`, not `SCHEMA.empty_table()`: building arrays from Python imports pandas, 0.3 s of every command.)
POLARS_SCHEMA: pl.Schema = pl.from_arrow(  # type: ignore[union-attr]
    pa.Table.from_arrays([pa.nulls(0, f.type) for f in SCHEMA], schema=SCHEMA)).schema
# A config is identified by these two columns; several attempts of it share them.
KEYS = ("run_id", "config_id")


def empty() -> pl.LazyFrame:
    """A lazy frame with the results schema and no rows."""
    return pl.LazyFrame(schema=POLARS_SCHEMA)


def scan(results: str | Location | Sequence[str | Location]) -> pl.LazyFrame:
    """One lazy frame over every result row under `results`, one attempt per config.

    Args:
        results: a results root (all runs), one run directory, a part file, or a
            list of any of these; each a local path or a URI (``s3://bucket/prefix``, `store.fs`).

    Returns:
        A `pl.LazyFrame` with exactly the schema's columns and dtypes. Per
        ``(run_id, config_id)`` it keeps the rows of the attempt `store.parts.kept`
        names: the latest ok one, or, when no attempt is ok, the latest failed one.
        A path with no parts gives an empty frame.

    Raises:
        ResultsError: a path does not exist.
        StorageError: an object store that cannot be asked.
    """
    files = readable(part_files(results))
    if not files:
        log.debug("no result parts under %s", results)
        return empty()
    lf = fs.scan_parquet(
        files,
        hive_partitioning=False,
        # Parts written before a field was added to `Record` lack that column:
        # it reads as null instead of failing the whole scan.
        missing_columns="insert",
        extra_columns="ignore",
        schema=POLARS_SCHEMA,
        cast_options=pl.ScanCastOptions(integer_cast="upcast", float_cast="upcast"),
    )
    return dedupe(lf)


def dedupe(lf: pl.LazyFrame) -> pl.LazyFrame:
    """`store.parts.kept` over rows: per ``(run_id, config_id)`` the latest ok attempt, else the latest failed."""
    ok = pl.col("status") == STATUS_OK
    keys = list(KEYS)
    latest_ok = pl.when(ok).then(pl.col("attempt")).max().over(keys)
    latest_any = pl.col("attempt").max().over(keys)
    return lf.filter(pl.col("attempt") == pl.coalesce(latest_ok, latest_any))
