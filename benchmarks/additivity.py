"""Benchmark 4: do the hook stages add up to the forward, and how stable is each one?

From tilesweep's real sweep (the one benchmark 2 ran; run here when benchmark 2
was not), per config:

- the remainder ``(t_total - (vision + projector + llm_prefill + lm_head)) / t_total``,
  median over the config's repeats (`analysis.query.additivity`);
- the coefficient of variation (std / mean over repeats) of every stage
  (`analysis.query.summary`).

Reported as the median and the maximum over configs.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from benchmarks.harness import Context, Result

NAME = "additivity"
TITLE = "4. Additivity and stability"
CV_STAGES = ("vision", "projector", "llm_prefill", "lm_head", "total")


def _finite(values: list[Any]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def analyse(run_dir: str | Path) -> dict[str, Any]:
    """Per-config remainder shares and stage CVs of one run directory."""
    from analysis.query import additivity, scan, stat_column, summary

    lf = scan(run_dir)
    add = additivity(lf).collect()
    summ = summary(lf).collect()
    if add.height == 0:
        raise RuntimeError(f"no ok rows under {run_dir}: nothing to check additivity on")
    per_config: dict[str, dict[str, Any]] = {}
    for row in add.iter_rows(named=True):
        per_config[row["tiling"]] = {"other_pct": row["other_pct"], "other_ms": row["other_ms"],
                                     "total_ms": row["total_ms"], "n": row["n"]}
    cv: dict[str, list[float]] = {s: [] for s in CV_STAGES}
    for row in summ.iter_rows(named=True):
        label = f"{row['tiling_rows']}x{row['tiling_cols']}"
        for stage in CV_STAGES:
            mean, std = row[stat_column(stage, "mean")], row[stat_column(stage, "std")]
            value = std / mean if mean and std is not None else None
            per_config.setdefault(label, {})[f"cv_{stage}"] = value
            if value is not None:
                cv[stage].append(value)
    return {"per_config": per_config, "other_pct": _finite(add["other_pct"].to_list()), "cv": cv,
            "repeats": int(summ["n"].median())}


def run(*, quick: bool, context: Context) -> Result:
    result = Result(benchmark=NAME, title=TITLE, quick=quick)
    run_dir = context.shared.get("tilesweep_run_dir")
    source = "the tilesweep sweep of benchmark 2"
    if run_dir is None:
        from benchmarks import speedup

        run_dir = speedup.run_tilesweep(speedup.QUICK if quick else speedup.FULL, context.work_dir)["run_dir"]
        source = "a tilesweep sweep of benchmark 2's configs"
    a = analyse(run_dir)
    shares = a["other_pct"]
    n = len(a["per_config"])
    result.add("t_total - sum(stages), median over configs", statistics.median(shares), "% of t_total",
               f"{n} configs from {source}; per config the median over {a['repeats']} repeats")
    result.add("t_total - sum(stages), max over configs", max(shares), "% of t_total",
               "the glue between stages: embedding merge, masks, position ids")
    for stage in CV_STAGES:
        values = a["cv"][stage]
        if not values:
            raise RuntimeError(f"no CV for stage {stage}: the sweep has fewer than 2 ok repeats per config")
        result.add(f"CV of {stage}, median over configs", statistics.median(values), "std / mean",
                   "per config, over its repeats")
        result.add(f"CV of {stage}, max over configs", max(values), "std / mean", "")
    result.details = {"source": source, "per_config": a["per_config"],
                      "cv_max": {s: max(v) for s, v in a["cv"].items() if v}}
    return result
