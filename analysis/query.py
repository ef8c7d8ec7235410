"""The questions tilesweep answers, as polars frames over the results.

`scan` (from `store.scan`) gives one lazy frame over every result row, one attempt
per config. Each question here (`summary`, `by_crops`, `by_tokens`, `missing`,
`method_gap`, `additivity`) is a function from that frame to another lazy frame,
so filters written by the caller are pushed down into the scan and nothing is read
until `.collect()`.

"Tokens" here always means `TOKENS`, the sequence tokens: every token the image
adds to the text. Image tokens (the placeholders the vision features fill) are the
column ``image_tokens`` and are named so wherever they are meant.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from store.fs import ObjectPath
from store.parts import part_files
from store.scan import KEYS, POLARS_SCHEMA, empty, scan
from tilesweep.errors import ResultsError, UsageError
from workers.record import STATUS_OK

__all__ = [
    "CONFIG_COLUMNS", "DECODE", "GROWTH_STAGES", "KEYS", "POLARS_SCHEMA", "STAGES", "STATS", "TOKENS", "additivity",
    "by_crops", "by_tokens", "empty", "method_gap", "missing", "scan", "scan_results", "stat_column", "summary",
    "tiling_label", "tiling_list",
]

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
# Decoding, filled only with ``--decode-tokens N`` > 0 (null otherwise): time to first
# token and time per output token. Summarised like the stages, kept apart from them
# because they are not parts of the one prefill forward.
DECODE: dict[str, str] = {"ttft": "t_ttft_ms", "tpot": "t_tpot_ms"}
STATS = ("median", "mean", "std", "p5", "p95")
# The token axis: every image token the processor inserts into the sequence.
# It is what `tilings.geometry` predicts for any image, so fits and plots over it
# can be evaluated for sizes never measured.
TOKENS = "sequence_tokens"

_ORDER = ["run_id", "crops", TOKENS, "tiling_rows", "tiling_cols", "config_id"]
_PER_CONFIG = ("family", "tiling", "tiling_rows", "tiling_cols", "crops", "image_tokens", TOKENS)


def scan_results(results: str | Path | Sequence[str | Path]) -> pl.LazyFrame:
    """`scan`, for the commands that show results (`query`, `report`): a path without a run is an error.

    `results` may be a URI (``s3://bucket/prefix``) as anywhere in the store (`store.fs`).

    Both commands say the same about the same directory: a missing path and a
    directory that holds no result part are each one `ResultsError` (exit 2).

    Raises:
        ResultsError: the path does not exist, or holds no part.
    """
    if not part_files(results):
        shown = str(results) if isinstance(results, (str, Path, ObjectPath)) else ", ".join(map(str, results))
        raise ResultsError(f"no run under {shown!r} (no result part there); start one with `tilesweep run`, "
                           "or pass --results the directory that holds the runs")
    return scan(results)


def stat_column(stage: str, stat: str) -> str:
    """Name of a summary column, e.g. ``stat_column("vision", "median") == "vision_median_ms"``."""
    return f"{stage}_{stat}_ms"


def _lazy(lf: pl.LazyFrame | pl.DataFrame) -> pl.LazyFrame:
    return lf.lazy() if isinstance(lf, pl.DataFrame) else lf


def _stage_aggs(stages: Mapping[str, str] = STAGES) -> list[pl.Expr]:
    """Median, mean, std, p5 and p95 of each stage (name -> column) over the ok rows of a group."""
    ok = pl.col("status") == STATUS_OK
    aggs: list[pl.Expr] = []
    for stage, column in stages.items():
        col = pl.col(column).filter(ok)
        aggs += [
            col.median().alias(stat_column(stage, "median")),
            col.mean().alias(stat_column(stage, "mean")),
            col.std().alias(stat_column(stage, "std")),
            col.quantile(0.05, interpolation="linear").alias(stat_column(stage, "p5")),
            col.quantile(0.95, interpolation="linear").alias(stat_column(stage, "p95")),
        ]
    return aggs


def tiling_label() -> pl.Expr:
    """``"2x4"``. Built with `concat_str`: `pl.format` panics in polars 2.1's streaming
    engine when it follows a filter over an in-memory frame."""
    return pl.concat_str([pl.col("tiling_rows"), pl.col("tiling_cols")], separator="x").alias("tiling")


def tiling_list(mask: pl.Expr | None = None) -> pl.Expr:
    """In an aggregation: the group's distinct tilings, ordered by (rows, cols), as ``"1x8, 2x4"``."""
    label, keys = tiling_label(), [pl.col("tiling_rows"), pl.col("tiling_cols")]
    if mask is not None:
        label, keys = label.filter(mask), [k.filter(mask) for k in keys]
    return label.sort_by(keys).unique(maintain_order=True).str.join(", ")


def summary(lf: pl.LazyFrame | pl.DataFrame) -> pl.LazyFrame:
    """One row per ``(run_id, config_id)``: the config's columns, ``n`` and stage statistics.

    For every stage in `STAGES` (both methods) and `DECODE` (``ttft``, ``tpot``:
    null unless the run decoded tokens) the columns ``<stage>_<stat>_ms`` hold
    median, mean, std, p5 and p95 over the config's ok repeats. A failed
    config appears with its status, its error and ``n == 0`` (statistics null).
    Sorted by run, crops, tokens and tiling.
    """
    ok = pl.col("status") == STATUS_OK
    return (
        _lazy(lf)
        .group_by(list(KEYS))
        .agg(
            *(pl.col(c).first() for c in CONFIG_COLUMNS),
            tiling_label().first(),
            ok.sum().cast(pl.Int64).alias("n"),
            *_stage_aggs({**STAGES, **DECODE}),
        )
        .sort(_ORDER)
    )


# Stages whose growth the by-crops / by-tokens tables follow.
GROWTH_STAGES = ("vision", "projector", "llm_prefill", "lm_head", "total", "llm_sub")


def _ok_rows(lf: pl.LazyFrame | pl.DataFrame) -> pl.LazyFrame:
    return _lazy(lf).filter(pl.col("status") == STATUS_OK)


def _medians(stages: Iterable[str]) -> list[pl.Expr]:
    return [pl.col(STAGES[s]).median().alias(stat_column(s, "median")) for s in stages]


def by_crops(lf: pl.LazyFrame | pl.DataFrame) -> pl.LazyFrame:
    """Per run, model, profile and crop count: median stage times over every ok repeat.

    Tilings that share a crop count (1x8 and 2x4) are pooled here; ``tilings``
    names them and ``tokens_min``/``tokens_max`` show how far their token counts
    differ. ``vision_per_crop_ms`` is the vision median divided by crops.
    """
    return (
        _ok_rows(lf)
        .group_by(["run_id", "model", "profile", "crops"])
        .agg(
            tiling_list().alias("tilings"),
            pl.col("config_id").n_unique().alias("n_configs"),
            pl.len().alias("n"),
            pl.col(TOKENS).min().alias("tokens_min"),
            pl.col(TOKENS).max().alias("tokens_max"),
            *_medians(GROWTH_STAGES),
        )
        .with_columns((pl.col("vision_median_ms") / pl.col("crops")).alias("vision_per_crop_ms"))
        .sort(["run_id", "model", "profile", "crops"])
    )


def by_tokens(lf: pl.LazyFrame | pl.DataFrame) -> pl.LazyFrame:
    """Per run, model, profile and token count (`TOKENS`): median stage times over every ok repeat.

    ``llm_prefill_per_token_us`` is the LLM prefill median per token, in microseconds.
    """
    return (
        _ok_rows(lf)
        .group_by(["run_id", "model", "profile", TOKENS])
        .agg(
            tiling_list().alias("tilings"),
            pl.col("image_tokens").first(),
            pl.col("crops").first(),
            pl.col("config_id").n_unique().alias("n_configs"),
            pl.len().alias("n"),
            *_medians(GROWTH_STAGES),
        )
        .with_columns((1000.0 * pl.col("llm_prefill_median_ms") / pl.col(TOKENS)).alias("llm_prefill_per_token_us"))
        .sort(["run_id", "model", "profile", TOKENS])
    )


def _planned_frame(planned: Any) -> tuple[pl.LazyFrame, list[str]]:
    """The planned configs as a lazy frame, and the key columns to anti-join on."""
    if isinstance(planned, (pl.DataFrame, pl.LazyFrame)):
        frame = planned.lazy()
        names = frame.collect_schema().names()
        for keys in (["config_id"], ["tiling_rows", "tiling_cols"], ["crops"]):
            if all(k in names for k in keys):
                return frame, keys
        raise UsageError(
            f"planned frame has columns {names}; it needs config_id, tiling_rows and tiling_cols, or crops"
        )
    items = list(planned)
    if items and all(isinstance(x, int) and not isinstance(x, bool) for x in items):
        return pl.LazyFrame({"crops": items}, schema={"crops": pl.Int64}), ["crops"]
    if items and all(hasattr(x, "config_id") for x in items):  # planned configs, or a manifest's entries
        rows = [x.to_dict() if hasattr(x, "to_dict") else x.to_json() if hasattr(x, "to_json")
                else {"config_id": x.config_id} for x in items]
        return pl.LazyFrame(rows), ["config_id"]
    if items and all(isinstance(x, str) for x in items):
        return pl.LazyFrame({"config_id": items}, schema={"config_id": pl.String}), ["config_id"]
    if items and all(isinstance(x, Sequence) and len(x) == 2 for x in items):
        rows, cols = zip(*((int(r), int(c)) for r, c in items))
        frame = pl.LazyFrame({"tiling_rows": rows, "tiling_cols": cols}, schema={"tiling_rows": pl.Int64, "tiling_cols": pl.Int64})
        return frame, ["tiling_rows", "tiling_cols"]
    raise UsageError(
        f"cannot tell what is planned from {items[:3]!r}...; pass crop counts (ints), "
        "tilings ((rows, cols) pairs or Tiling), config ids (str) or a polars frame"
    )


def missing(lf: pl.LazyFrame | pl.DataFrame, planned: Any) -> pl.LazyFrame:
    """The planned configs that have no ok result in `lf`, as an anti-join.

    Args:
        lf: result rows (e.g. `scan(...)`, filtered to a model or run as needed).
        planned: crop counts (ints), tilings (``(rows, cols)`` pairs or `tilings.Tiling`),
            config ids (str), planned configs (objects with ``config_id``, e.g. from
            `orchestrator.plan.plan` or a `store.Manifest`'s ``planned``), or a polars frame with ``config_id``, ``tiling_rows`` +
            ``tiling_cols``, or ``crops`` columns (the first of these it has is the key).

    Returns:
        The planned rows (their original columns, order kept) without an ok result.
    """
    frame, keys = _planned_frame(planned)
    done = _ok_rows(lf).select(keys).unique()
    return frame.join(done, on=keys, how="anti", maintain_order="left")


def _per_config(lf: pl.LazyFrame | pl.DataFrame, *aggs: pl.Expr) -> pl.LazyFrame:
    return (
        _ok_rows(lf)
        .with_columns(tiling_label())
        .group_by(list(KEYS))
        .agg(*(pl.col(c).first() for c in _PER_CONFIG), pl.len().alias("n"), *aggs)
        .sort(_ORDER)
    )


def method_gap(lf: pl.LazyFrame | pl.DataFrame) -> pl.LazyFrame:
    """Per config: how far the subtraction method lands from the hook method.

    ``llm_gap_ms`` is the median over repeats of ``t_llm_sub - t_llm_prefill``
    (both from the same repeat), ``llm_gap_pct`` that gap relative to the hook
    LLM median. ``total_gap_ms`` compares ``t_vision + t_llm_sub`` (what the
    subtraction method says the forward costs) with the hook total.
    """
    llm, sub, vision, total = (pl.col(STAGES[s]) for s in ("llm_prefill", "llm_sub", "vision", "total"))
    return _per_config(
        lf,
        llm.median().alias("hook_llm_ms"),
        sub.median().alias("sub_llm_ms"),
        (sub - llm).median().alias("llm_gap_ms"),
        total.median().alias("hook_total_ms"),
        (vision + sub).median().alias("sub_total_ms"),
        (vision + sub - total).median().alias("total_gap_ms"),
    ).with_columns(
        (100.0 * pl.col("llm_gap_ms") / pl.col("hook_llm_ms")).alias("llm_gap_pct"),
        (100.0 * pl.col("total_gap_ms") / pl.col("hook_total_ms")).alias("total_gap_pct"),
    )


def additivity(lf: pl.LazyFrame | pl.DataFrame) -> pl.LazyFrame:
    """Per config: does ``T_total ≈ T_vision + T_projector + T_LLM_prefill + T_lm_head`` hold?

    ``other_ms`` is the median over repeats of ``t_total`` minus the four timed
    stages (the glue between them: embedding merge, masks, ...); ``other_pct`` is
    the median of that remainder as a share of ``t_total``. A stage that was not
    timed counts as zero, so its time shows up in the remainder.
    """
    parts = pl.sum_horizontal(*(pl.col(STAGES[s]) for s in ("vision", "projector", "llm_prefill", "lm_head")))
    total = pl.col(STAGES["total"])
    return _per_config(
        lf,
        total.median().alias("total_ms"),
        parts.median().alias("stages_ms"),
        (total - parts).median().alias("other_ms"),
        (100.0 * (total - parts) / total).median().alias("other_pct"),
    )
