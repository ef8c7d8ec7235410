"""The polars query layer over a results directory.

Everything here is lazy: `scan` returns one `pl.LazyFrame` over every Parquet
part, and each question (`summary`, `by_crops`, `by_tokens`, `missing`,
`method_gap`, `additivity`) is a function from that frame to another lazy
frame, so filters written by the caller are pushed down into the scan and
nothing is read until `.collect()`.

Results layout (written by the driver): ``<results>/<run_id>/part-<config_id>-
<attempt>.parquet`` plus ``<results>/<run_id>/manifest.json``. A config that was
retried has several parts; readers keep one attempt per ``(run_id, config_id)``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from orchestrator.schema import SCHEMA
from workers.record import STATUS_OK

log = logging.getLogger(__name__)

# The schema's dtypes in polars terms, derived from the one Arrow schema.
POLARS_SCHEMA: pl.Schema = pl.from_arrow(SCHEMA.empty_table()).schema  # type: ignore[union-attr]

KEYS = ("run_id", "config_id")
CONFIG_COLUMNS = (
    "model", "profile", "family", "tiling_rows", "tiling_cols", "crops",
    "image_tokens", "sequence_tokens", "status", "error",
)
# Stage name -> column, hook method first, then the subtraction method.
STAGES: dict[str, str] = {
    "preprocess": "t_preprocess_ms",
    "vision": "t_vision_ms",
    "projector": "t_projector_ms",
    "llm_prefill": "t_llm_prefill_ms",
    "lm_head": "t_lm_head_ms",
    "total": "t_total_ms",
    "prefill_step": "t_prefill_step_ms",
    "vision_only": "t_vision_only_ms",
    "llm_sub": "t_llm_sub_ms",
}
STATS = ("median", "mean", "std", "p5", "p95")
# The token axis: every image token the processor inserts into the sequence.
# It is what `tilings.geometry` predicts for any image, so fits and plots over it
# can be evaluated for sizes never measured.
TOKENS = "sequence_tokens"

_PART_GLOB = "part-*.parquet"


def stat_column(stage: str, stat: str) -> str:
    """Name of a summary column, e.g. ``stat_column("vision", "median") == "vision_median_ms"``."""
    return f"{stage}_{stat}_ms"


def _as_paths(results: str | Path | Sequence[str | Path]) -> list[Path]:
    if isinstance(results, (str, Path)):
        return [Path(results)]
    paths = [Path(p) for p in results]
    if not paths:
        raise ValueError("no results path given; pass a results root, a run directory or a list of them")
    return paths


def part_files(results: str | Path | Sequence[str | Path]) -> list[Path]:
    """The Parquet parts under a results root, a run directory, a part file, or a list of them.

    Temporary files of an in-progress write (``.tmp-*``) are never picked up.
    Raises `ValueError` naming a path that does not exist.
    """
    files: set[Path] = set()
    for path in _as_paths(results):
        if not path.exists():
            raise ValueError(
                f"results path {str(path)!r} does not exist; pass a results root "
                "(<results>/<run_id>/part-*.parquet) or one run directory"
            )
        if path.is_file():
            if path.suffix != ".parquet":
                raise ValueError(f"results path {str(path)!r} is a file but not a .parquet part; pass its directory")
            files.add(path.resolve())
            continue
        # A run directory holds parts directly; a results root holds run directories.
        for found in (*path.glob(_PART_GLOB), *path.glob(f"*/{_PART_GLOB}")):
            if not found.name.startswith(".tmp-") and found.is_file():
                files.add(found.resolve())
    return sorted(files)


def empty() -> pl.LazyFrame:
    """A lazy frame with the results schema and no rows."""
    return pl.LazyFrame(schema=POLARS_SCHEMA)


def scan(results: str | Path | Sequence[str | Path]) -> pl.LazyFrame:
    """One lazy frame over every result row under `results`, one attempt per config.

    Args:
        results: a results root (all runs), one run directory, a part file, or a
            list of any of these.

    Returns:
        A `pl.LazyFrame` with exactly the schema's columns and dtypes. Per
        ``(run_id, config_id)`` it keeps the rows of the latest attempt whose
        status is ok, or, when no attempt is ok, of the latest failed attempt.
        A path with no parts gives an empty frame.

    Raises:
        ValueError: a path does not exist.
    """
    files = part_files(results)
    if not files:
        log.debug("no result parts under %s", results)
        return empty()
    lf = pl.scan_parquet(
        [str(f) for f in files],
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
    """Keep one attempt per ``(run_id, config_id)``: the latest ok one, else the latest failed one."""
    ok = pl.col("status") == STATUS_OK
    keys = list(KEYS)
    latest_ok = pl.when(ok).then(pl.col("attempt")).max().over(keys)
    latest_any = pl.col("attempt").max().over(keys)
    return lf.filter(pl.col("attempt") == pl.coalesce(latest_ok, latest_any))


def _lazy(lf: pl.LazyFrame | pl.DataFrame) -> pl.LazyFrame:
    return lf.lazy() if isinstance(lf, pl.DataFrame) else lf


def _stage_aggs(stages: Iterable[str] = STAGES) -> list[pl.Expr]:
    """Median, mean, std, p5 and p95 of each stage over the ok rows of a group."""
    ok = pl.col("status") == STATUS_OK
    aggs: list[pl.Expr] = []
    for stage in stages:
        col = pl.col(STAGES[stage]).filter(ok)
        aggs += [
            col.median().alias(stat_column(stage, "median")),
            col.mean().alias(stat_column(stage, "mean")),
            col.std().alias(stat_column(stage, "std")),
            col.quantile(0.05, interpolation="linear").alias(stat_column(stage, "p5")),
            col.quantile(0.95, interpolation="linear").alias(stat_column(stage, "p95")),
        ]
    return aggs


def summary(lf: pl.LazyFrame | pl.DataFrame) -> pl.LazyFrame:
    """One row per ``(run_id, config_id)``: the config's columns, ``n`` and stage statistics.

    For every stage in `STAGES` (both methods) the columns ``<stage>_<stat>_ms``
    hold median, mean, std, p5 and p95 over the config's ok repeats. A failed
    config appears with its status, its error and ``n == 0`` (statistics null).
    Sorted by run, crops, tokens and tiling.
    """
    ok = pl.col("status") == STATUS_OK
    return (
        _lazy(lf)
        .group_by(list(KEYS))
        .agg(
            *(pl.col(c).first() for c in CONFIG_COLUMNS),
            ok.sum().cast(pl.Int64).alias("n"),
            *_stage_aggs(),
        )
        .sort(["run_id", "crops", TOKENS, "tiling_rows", "tiling_cols", "config_id"])
    )


def manifests(results: str | Path | Sequence[str | Path]) -> dict[str, dict[str, Any]]:
    """``{run_id: manifest}`` for every ``manifest.json`` under `results` (run dir name as the key)."""
    found: dict[str, dict[str, Any]] = {}
    for path in _as_paths(results):
        if not path.exists():
            raise ValueError(f"results path {str(path)!r} does not exist; pass a results root or one run directory")
        if path.is_file():
            path = path.parent
        for manifest in (*path.glob("manifest.json"), *path.glob("*/manifest.json")):
            try:
                found[manifest.parent.name] = json.loads(manifest.read_text())
            except json.JSONDecodeError as exc:
                # A broken manifest must not hide the results themselves.
                log.warning("ignoring unreadable %s: %s", manifest, exc)
    return found
