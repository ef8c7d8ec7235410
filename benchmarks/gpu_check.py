"""GPU check: the instrument on a real GPU, in one short run (``benchmarks/gpu_check.sh OUTDIR``).

Measures ``molmo2-8b-arch`` (random weights, bf16) over the 1xk and 2xk tilings
with 3 warm-ups and 10 repeats, then reports per configuration:

- hook overhead: the hooked forward (``t_total``) against the un-hooked prefill
  step on the same inputs (``t_prefill_step``), in percent of the latter;
- additivity: how much of ``t_total`` the stages (vision + projector + LLM
  prefill + head) cover, and the remainder in ms;
- subtraction bias: ``t_llm_sub`` (prefill step minus vision alone) against the
  hooked ``t_llm_prefill``, in percent and ms.

Needs only torch and transformers (no ray, polars or pyarrow); runs from the
source tree. Without CUDA it runs the tiny model with fewer repeats, a smoke test.
Environment: ``TILESWEEP_GPU_CHECK_MODEL``, ``..._TILINGS`` (``1x1,2x2``),
``..._WARMUP``, ``..._REPEATS``, ``..._BUDGET_S`` (stop starting configs after it).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

ENV = "TILESWEEP_GPU_CHECK_"


def _env(name: str, default: str) -> str:
    return os.environ.get(ENV + name) or default


def config_summary(group: list[Any]) -> dict[str, Any]:
    """The three figures of one configuration, from its records (medians over repeats)."""
    from workers.summary import column, percentile, stages_sum

    first = group[0]
    out: dict[str, Any] = {
        "tiling": f"{first.tiling_rows}x{first.tiling_cols}", "crops": first.crops,
        "image_tokens": first.image_tokens, "sequence_tokens": first.sequence_tokens, "status": first.status,
    }
    if first.status != "ok":
        return {**out, "error": f"{first.error_type}: {first.error}"}
    med = {name: percentile(column(group, name), 50) for name in (
        "t_vision_ms", "t_projector_ms", "t_llm_prefill_ms", "t_lm_head_ms", "t_total_ms",
        "t_prefill_step_ms", "t_vision_only_ms", "t_llm_sub_ms", "t_preprocess_ms")}
    coverage = [stages_sum(r) / r.t_total_ms for r in group]
    remainder = [r.t_total_ms - stages_sum(r) for r in group]
    bias = [r.t_llm_sub_ms - r.t_llm_prefill_ms for r in group]
    return {
        **out,
        "repeats": len(group),
        "median_ms": med,
        "hook_overhead_pct": 100.0 * (med["t_total_ms"] / med["t_prefill_step_ms"] - 1.0),
        "additivity_coverage_pct": 100.0 * percentile(coverage, 50),
        "additivity_remainder_ms": percentile(remainder, 50),
        "subtraction_bias_ms": percentile(bias, 50),
        "subtraction_bias_pct": 100.0 * (med["t_llm_sub_ms"] / med["t_llm_prefill_ms"] - 1.0),
        "cold_start_ms": first.t_cold_start_ms,
        "peak_mem_gib": first.peak_mem_bytes / 2**30 if first.peak_mem_bytes else None,
        "sm_clock_mhz": [first.sm_clock_start_mhz, first.sm_clock_end_mhz],
        "temperature_c": [first.temperature_start_c, first.temperature_end_c],
        "power_w": [first.power_start_w, first.power_end_w],
    }


def format_checks(rows: list[dict[str, Any]]) -> str:
    head = (f"{'tiling':<7}{'crops':>6}{'tokens':>8}{'total':>10}{'llm_hook':>10}{'llm_sub':>10}"
            f"{'overhead%':>11}{'cover%':>8}{'rest_ms':>9}{'bias%':>8}{'bias_ms':>9}")
    lines = [head]
    for row in rows:
        if row["status"] != "ok":
            lines.append(f"{row['tiling']:<7}{row['crops']:>6}{row['image_tokens']:>8}  FAILED {row['error']}")
            continue
        m = row["median_ms"]
        lines.append(
            f"{row['tiling']:<7}{row['crops']:>6}{row['image_tokens']:>8}{m['t_total_ms']:>10.2f}"
            f"{m['t_llm_prefill_ms']:>10.2f}{m['t_llm_sub_ms']:>10.2f}{row['hook_overhead_pct']:>11.2f}"
            f"{row['additivity_coverage_pct']:>8.1f}{row['additivity_remainder_ms']:>9.2f}"
            f"{row['subtraction_bias_pct']:>8.1f}{row['subtraction_bias_ms']:>9.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: gpu_check.py OUTDIR", file=sys.stderr)
        return 2
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    import torch

    from tilings import enumerate_tilings
    from workers import MeasureConfig, ModelHost
    from workers.summary import format_table, group_by_config, to_jsonable

    cuda = torch.cuda.is_available()
    model = _env("MODEL", "molmo2-8b-arch" if cuda else "tiny-molmo2")
    warmup = int(_env("WARMUP", "3" if cuda else "1"))
    repeats = int(_env("REPEATS", "10" if cuda else "3"))
    budget_s = float(_env("BUDGET_S", "360"))
    began = time.perf_counter()

    host = ModelHost(model)
    load_s = time.perf_counter() - began
    env = host.describe()
    print(f"gpu_check: {model} on {env['device']} ({env['gpu_name'] or 'CPU'}), {env['dtype']}, "
          f"loaded in {load_s:.1f} s", flush=True)
    if ENV + "TILINGS" in os.environ:
        wanted = [(tuple(int(v) for v in t.split("x")), "") for t in os.environ[ENV + "TILINGS"].split(",")]
    elif cuda:
        wanted = [((t.rows, t.cols), fam) for t, fam in enumerate_tilings(host.profile, ["1xk", "2xk"])]
    else:
        wanted = [((1, 1), "1xk"), ((1, 4), "1xk"), ((2, 2), "2xk")]

    records, skipped = [], []
    for (rows, cols), family in wanted:
        if time.perf_counter() - began > budget_s:
            skipped.append(f"{rows}x{cols}")
            continue
        t0 = time.perf_counter()
        recs = host.measure(MeasureConfig(tiling_rows=rows, tiling_cols=cols, family=family, warmup=warmup,
                                          repeats=repeats, run_id="gpu-check", config_id=f"{rows}x{cols}"))
        records += recs
        print(f"  {rows}x{cols}: {recs[0].status} in {time.perf_counter() - t0:.1f} s", flush=True)

    rows_out = [config_summary(g) for g in group_by_config(records).values()]
    ok = [r for r in rows_out if r["status"] == "ok"]

    def overall(key: str) -> float | None:
        values = sorted(r[key] for r in ok)
        return values[len(values) // 2] if values else None

    summary = {
        "model": model, "host": env, "load_s": load_s, "warmup": warmup, "repeats": repeats,
        "elapsed_s": time.perf_counter() - began, "skipped": skipped,
        "configs": rows_out,
        "overall": {key: overall(key) for key in (
            "hook_overhead_pct", "additivity_coverage_pct", "subtraction_bias_pct", "subtraction_bias_ms")},
        "all_finite": all(math.isfinite(r[k]) for r in ok for k in (
            "hook_overhead_pct", "additivity_coverage_pct", "additivity_remainder_ms",
            "subtraction_bias_pct", "subtraction_bias_ms")),
        "failed": [r["tiling"] for r in rows_out if r["status"] != "ok"],
    }
    (out / "records.json").write_text(json.dumps([to_jsonable(r) for r in records], indent=1))
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    text = format_checks(rows_out)
    (out / "summary.txt").write_text(text + "\n\n" + format_table(records) + "\n")
    print(text)
    print(f"overall medians: {json.dumps(summary['overall'])}; elapsed {summary['elapsed_s']:.0f} s"
          + (f"; skipped for time: {', '.join(skipped)}" if skipped else ""))
    return 0 if ok and not summary["failed"] and summary["all_finite"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
