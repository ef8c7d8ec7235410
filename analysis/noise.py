"""Which configs' figures noise may have bent, and what to do about it.

Per config (ok rows only), from the raw samples:

- ``negative``: repeats with a negative time (``t_llm_sub`` goes negative when the
  vision path alone took longer than the whole step it is subtracted from: noise
  larger than the LLM's share);
- ``precision_pct``: the least precise stage, the half-width of the 95% interval
  of its median in percent of it (`workers.precision`, the rule the adaptive
  stopping uses), flagged when over the run's ``--precision`` target, or over
  `DEFAULT_TARGET_PCT` for a run with a fixed count;
- ``n`` under `workers.precision.MIN_SAMPLES`: no interval exists at all;
- ``worst_cv_pct``: the largest coefficient of variation over the stages.

`flags` gives the flagged configs as a frame (the report's table), `advice` the
lines the end-of-run summary prints under its table.
"""

from __future__ import annotations

import polars as pl

from analysis.query import tiling_label
from workers.precision import MIN_SAMPLES, STAGES, stage_precision, worst
from workers.record import STATUS_OK

DEFAULT_TARGET_PCT = 5.0
# Per-repeat columns whose negative value is a measurement artefact.
NEGATIVE = (*STAGES, "t_llm_sub_ms")
_CONFIG = ("run_id", "config_id", "family", "crops", "image_tokens", "sequence_tokens")
COLUMNS = ("tiling", "family", "crops", "image_tokens", "n", "precision_pct", "target_pct", "worst_cv_pct",
           "negative", "stop_reason", "problem")


def per_config(rows: pl.LazyFrame | pl.DataFrame) -> pl.DataFrame:
    """One row per config: n, precision, target, worst CV, negative repeats, stop reason, and the problem (or null)."""
    lf = rows.lazy() if isinstance(rows, pl.DataFrame) else rows
    grouped = (
        lf.filter(pl.col("status") == STATUS_OK)
        .group_by(["run_id", "config_id"])
        .agg(
            tiling_label().first(),
            *[pl.col(c).first() for c in _CONFIG[2:]],
            pl.len().alias("n"),
            pl.col("precision_target_pct").first().alias("target_pct"),
            pl.col("stop_reason").first(),
            pl.max_horizontal([(pl.col(c) < 0).sum() for c in NEGATIVE]).alias("negative"),
            pl.max_horizontal([100.0 * pl.col(c).std() / pl.col(c).mean() for c in STAGES]).alias("worst_cv_pct"),
            *[pl.col(c) for c in STAGES],
        )
        .sort(["run_id", "crops", "sequence_tokens", "tiling"])
        .collect()
    )
    records = []
    for row in grouped.iter_rows(named=True):
        samples = {c: row.pop(c) for c in STAGES}
        reached = worst(stage_precision({c: v for c, v in samples.items() if v and None not in v}))
        target = row["target_pct"] if row["target_pct"] is not None else DEFAULT_TARGET_PCT
        problems = []
        if row["negative"]:
            problems.append(f"negative times in {row['negative']} of {row['n']} repeats")
        if row["n"] < MIN_SAMPLES:
            problems.append(f"{row['n']} samples: too few for a 95% interval of the median")
        elif reached is not None and reached > target:
            problems.append(f"median only within ±{reached:.1f}% (target {target:g}%)")
        records.append({**row, "precision_pct": reached, "target_pct": target,
                        "problem": "; ".join(problems) or None})
    schema = {**grouped.drop(list(STAGES)).schema, "precision_pct": pl.Float64, "target_pct": pl.Float64,
              "problem": pl.String}
    return pl.DataFrame(records, schema=schema)


def flags(rows: pl.LazyFrame | pl.DataFrame, table: pl.DataFrame | None = None) -> pl.DataFrame:
    """The configs with a problem, in `COLUMNS` order (empty when none has one); `table`: `per_config(rows)` if known."""
    table = per_config(rows) if table is None else table
    return table.filter(pl.col("problem").is_not_null()).select(COLUMNS)


def advice(rows: pl.LazyFrame | pl.DataFrame, table: pl.DataFrame | None = None) -> list[str]:
    """Lines for the end of a run: what is wrong, with which configs, and what to do (empty when nothing is).

    `table`: `per_config(rows)` when the caller has it already (it walks every config in Python).
    """
    table = per_config(rows) if table is None else table
    if table.height == 0:
        return []
    lines = []

    def tilings(mask: pl.Expr) -> tuple[int, str]:
        hit = table.filter(mask)["tiling"].to_list()
        shown = ", ".join(hit[:8]) + (f" and {len(hit) - 8} more" if len(hit) > 8 else "")
        return len(hit), shown

    count, shown = tilings(pl.col("negative") > 0)
    if count:
        lines.append(f"noise: negative times in {count} config(s) ({shown}): the noise there is larger than the "
                     "difference being measured; quiet the machine, or add repeats (--precision 2)")
    count, shown = tilings(pl.col("n") < MIN_SAMPLES)
    if count:
        lines.append(f"noise: {count} of {table.height} config(s) have fewer than {MIN_SAMPLES} samples, too few "
                     "for a 95% interval of the median; for figures you will quote, run with --precision 2 "
                     "(adaptive) or --repeats 10")
    count, shown = tilings((pl.col("n") >= MIN_SAMPLES) & (pl.col("precision_pct") > pl.col("target_pct")))
    if count:
        lines.append(f"noise: {count} config(s) ({shown}) have a median less precise than the target; quiet the "
                     "machine or raise --max-repeats / --max-duration")
    return lines
