"""GPU check: the instrument on a real GPU, in one short run (``benchmarks/gpu_check.sh [--cpu-smoke] OUTDIR``).

Measures ``molmo2-8b-arch`` (random weights, bf16) and then every other full-size
``-arch`` model, smallest first, while the time budget lasts (a model whose
estimated time, scaled by parameters from the first one, does not fit is skipped
and named): the 1xk and 2xk tilings of grid schemes, the square token grids of
pixel-budget schemes, 3 warm-ups and 10 repeats. Per configuration it reports

- hook overhead: the hooked forward (``t_total``) against the un-hooked prefill
  step on the same inputs (``t_prefill_step``; the two alternate their order per
  repeat), in percent of the latter;
- additivity: how much of ``t_total`` the stages cover, and the remainder in ms;
- subtraction bias: ``t_llm_sub`` (prefill step minus vision alone) against the
  hooked ``t_llm_prefill``, in percent and ms;
- the coefficient of variation of every stage over the repeats, peak memory, and
  energy per forward and mean power (NVML).

Writes ``records.json``, ``summary.json``, ``summary.txt`` (its first line names the
GPU, driver, CUDA, torch and transformers) and ``records.parquet`` (where pyarrow is
installed; ``tilesweep query --results OUTDIR/records.parquet "SQL"`` reads it).

Needs torch and transformers only (no ray or polars); runs from the source tree.
Without CUDA it refuses to run unless ``--cpu-smoke`` asks for the CPU smoke test
(the tiny model, fewer repeats). Environment: ``TILESWEEP_GPU_CHECK_MODELS``
(comma list), ``..._TILINGS`` (``1x1,2x2``: every model), ``..._WARMUP``,
``..._REPEATS``, ``..._ENERGY_S``, ``..._BUDGET_S`` (stop starting models and
configs after it). Exit status: 0 every config measured, 1 a config failed or a
figure is not finite, 2 usage, 4 no usable CUDA device.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ENV = "TILESWEEP_GPU_CHECK_"
FIRST = "molmo2-8b-arch"
CV_STAGES = ("t_vision_ms", "t_projector_ms", "t_llm_prefill_ms", "t_lm_head_ms", "t_total_ms",
             "t_prefill_step_ms", "t_vision_only_ms")
# What the instrument should reach on a GPU (issue figures, reported, not asserted).
TARGETS = {"additivity_coverage_pct": (">=", 97.0), "hook_overhead_pct": ("<=", 0.5), "cv_max_pct": ("<=", 2.0)}
EXIT_NO_CUDA = 4


def _env(name: str, default: str) -> str:
    return os.environ.get(ENV + name) or default


def config_summary(group: list[Any]) -> dict[str, Any]:
    """The figures of one configuration, from its records (medians over repeats)."""
    from workers.summary import column, percentile, stages_sum

    first = group[0]
    out: dict[str, Any] = {
        "model": first.model, "tiling": f"{first.tiling_rows}x{first.tiling_cols}", "crops": first.crops,
        "image_tokens": first.image_tokens, "sequence_tokens": first.sequence_tokens, "status": first.status,
    }
    if first.status != "ok":
        return {**out, "error": f"{first.error_type}: {first.error}"}
    med = {name: percentile(column(group, name), 50) for name in (*CV_STAGES, "t_llm_sub_ms", "t_preprocess_ms")}
    cv = {}
    for name in CV_STAGES:
        values = column(group, name)
        if len(values) > 1 and statistics.fmean(values) > 0:
            cv[name] = 100.0 * statistics.stdev(values) / statistics.fmean(values)
    coverage = [stages_sum(r) / r.t_total_ms for r in group]
    remainder = [r.t_total_ms - stages_sum(r) for r in group]
    bias = [r.t_llm_sub_ms - r.t_llm_prefill_ms for r in group]
    return {
        **out,
        "repeats": len(group),
        "median_ms": med,
        "cv_pct": cv,
        "cv_max_pct": max(cv.values(), default=float("nan")),
        "hook_overhead_pct": 100.0 * (med["t_total_ms"] / med["t_prefill_step_ms"] - 1.0),
        "additivity_coverage_pct": 100.0 * percentile(coverage, 50),
        "additivity_remainder_ms": percentile(remainder, 50),
        "subtraction_bias_ms": percentile(bias, 50),
        "subtraction_bias_pct": 100.0 * (med["t_llm_sub_ms"] / med["t_llm_prefill_ms"] - 1.0),
        "cold_start_ms": first.t_cold_start_ms,
        "peak_mem_gib": first.peak_mem_bytes / 2**30 if first.peak_mem_bytes else None,
        "energy_j_per_forward": first.energy_j_per_forward,
        "power_mean_w": first.power_mean_w,
        "sm_clock_mhz": [first.sm_clock_start_mhz, first.sm_clock_end_mhz],
        "temperature_c": [first.temperature_start_c, first.temperature_end_c],
    }


FIGURES = ("hook_overhead_pct", "additivity_coverage_pct", "additivity_remainder_ms", "subtraction_bias_pct",
           "subtraction_bias_ms", "cv_max_pct")


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_checks(rows: list[dict[str, Any]]) -> str:
    head = (f"{'model':<24}{'tiling':<7}{'crops':>6}{'tokens':>7}{'total':>9}{'llm_hook':>9}{'llm_sub':>9}"
            f"{'ovh%':>7}{'cover%':>7}{'rest_ms':>8}{'bias%':>7}{'cvmax%':>7}{'GiB':>6}{'J/fwd':>7}{'W':>6}")
    lines = [head]
    for row in rows:
        lead = f"{row['model']:<24}{row['tiling']:<7}{row['crops']:>6}{row['image_tokens']:>7}"
        if row["status"] != "ok":
            lines.append(f"{lead}  FAILED {row['error']}")
            continue
        m = row["median_ms"]
        lines.append(
            f"{lead}{m['t_total_ms']:>9.2f}{m['t_llm_prefill_ms']:>9.2f}{m['t_llm_sub_ms']:>9.2f}"
            f"{row['hook_overhead_pct']:>7.2f}{row['additivity_coverage_pct']:>7.1f}"
            f"{row['additivity_remainder_ms']:>8.2f}{row['subtraction_bias_pct']:>7.1f}{row['cv_max_pct']:>7.2f}"
            f"{_fmt(row['peak_mem_gib'], '.1f'):>6}{_fmt(row['energy_j_per_forward'], '.2f'):>7}"
            f"{_fmt(row['power_mean_w'], '.0f'):>6}"
        )
    return "\n".join(lines)


def model_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per model: the median of each figure over its configs, and whether it meets the GPU targets."""
    ok = [r for r in rows if r["status"] == "ok"]
    medians = {key: statistics.median(r[key] for r in ok) if ok else None for key in FIGURES}
    worst_cv = max((r["cv_max_pct"] for r in ok), default=None)
    met = {}
    for key, (op, bound) in TARGETS.items():
        value = worst_cv if key == "cv_max_pct" else medians[key]
        met[key] = None if value is None else (value >= bound if op == ">=" else value <= bound)
    return {"configs": len(rows), "failed": len(rows) - len(ok), "medians": medians, "worst_cv_pct": worst_cv,
            "targets_met": met}


def environment_line(host_env: dict[str, Any] | None) -> str:
    """The summary's first line: GPU, driver, CUDA, torch and transformers."""
    import torch
    import transformers

    versions = f"torch {torch.__version__}, transformers {transformers.__version__}"
    if not torch.cuda.is_available():
        return f"CPU smoke test (no GPU); {versions}"
    env = host_env or {}
    name = env.get("gpu_name") or torch.cuda.get_device_name(0)
    mig = {True: "MIG on", False: "MIG off"}.get(env.get("mig_enabled"), "MIG unknown")
    return (f"GPU {name} ({env.get('gpu_uuid') or 'uuid unknown'}, {mig}), driver {env.get('gpu_driver') or 'unknown'}, "
            f"CUDA {torch.version.cuda}, {versions}")


def plan_models(cuda: bool) -> list[str]:
    """The models to measure: the environment's list, else Molmo2-8B then every other -arch model, smallest first."""
    if ENV + "MODELS" in os.environ:
        return [m.strip() for m in os.environ[ENV + "MODELS"].split(",") if m.strip()]
    if not cuda:
        return ["tiny-molmo2"]
    from workers.models import MODELS

    others = [name for name in MODELS if name.endswith("-arch") and name != FIRST]
    return [FIRST, *sorted(others, key=parameters)]


def parameters(name: str) -> int:
    """Parameters of a registered model, counted on the meta device (no memory, no init)."""
    from workers.models import MODELS, build_on_meta, count_parameters

    return count_parameters(build_on_meta(MODELS[name]))


def targets_for(profile: Any) -> list[tuple[tuple[int, int], str]]:
    """1xk and 2xk tilings of a grid scheme; the square token grids of a pixel-budget scheme."""
    from tilings import enumerate_tilings

    if ENV + "TILINGS" in os.environ:
        return [(tuple(int(v) for v in t.split("x")), "") for t in os.environ[ENV + "TILINGS"].split(",")]
    if "1xk" in profile.families:
        return [((t.rows, t.cols), fam) for t, fam in enumerate_tilings(profile, ["1xk", "2xk"])]
    return [((t.rows, t.cols), "square") for t, _ in profile.points("square")]


def config_id(model: str, rows: int, cols: int) -> str:
    return hashlib.sha256(f"gpu-check|{model}|{rows}x{cols}".encode()).hexdigest()[:16]


def measure_model(model: str, *, warmup: int, repeats: int, energy_s: float, deadline: float,
                  log: Any) -> tuple[list[Any], dict[str, Any], list[str]]:
    """Load one model, measure its configs until `deadline`; records, the host's description, skipped tilings."""
    import torch

    from workers import MeasureConfig, ModelHost

    began = time.perf_counter()
    host = ModelHost(model)
    env = host.describe()
    log(f"{model}: {env['parameters'] / 1e9:.2f} B parameters on {env['device']}, {env['dtype']}, "
        f"loaded in {time.perf_counter() - began:.1f} s")
    records, skipped = [], []
    run_id = "gpu-check"
    for (rows, cols), family in targets_for(host.profile):
        if time.perf_counter() > deadline:
            skipped.append(f"{rows}x{cols}")
            continue
        t0 = time.perf_counter()
        recs = host.measure(MeasureConfig(tiling_rows=rows, tiling_cols=cols, family=family, warmup=warmup,
                                          repeats=repeats, energy_s=energy_s, run_id=run_id,
                                          config_id=config_id(model, rows, cols)))
        records += recs
        log(f"  {rows}x{cols}: {recs[0].status} in {time.perf_counter() - t0:.1f} s")
    del host
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return records, env, skipped


def write_parquet(records: list[Any], path: Path) -> str:
    """The records as one Parquet file with the results schema; what happened, in words."""
    try:
        import pyarrow.parquet as pq

        from store.schema import records_to_table
    except ImportError as exc:
        return f"not written ({exc})"
    pq.write_table(records_to_table(records), path)
    return str(path)


def main(argv: list[str]) -> int:
    cpu_smoke = "--cpu-smoke" in argv
    rest = [a for a in argv if a != "--cpu-smoke"]
    if len(rest) != 1 or rest[0].startswith("-"):
        print("usage: gpu_check.py [--cpu-smoke] OUTDIR", file=sys.stderr)
        return 2
    out = Path(rest[0])
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    import torch

    from workers.summary import format_table, group_by_config, to_jsonable

    cuda = torch.cuda.is_available()
    if not cuda and not cpu_smoke:
        print("gpu_check: no usable CUDA device (torch.cuda.is_available() is False); run it on a GPU machine, or "
              "pass --cpu-smoke for the CPU smoke test", file=sys.stderr)
        return EXIT_NO_CUDA
    out.mkdir(parents=True, exist_ok=True)
    warmup = int(_env("WARMUP", "3" if cuda else "1"))
    repeats = int(_env("REPEATS", "10" if cuda else "3"))
    energy_s = float(_env("ENERGY_S", "0.5"))
    budget_s = float(_env("BUDGET_S", "420"))
    began = time.perf_counter()
    deadline = began + budget_s

    def log(text: str) -> None:
        print(text, flush=True)

    models = plan_models(cuda)
    sizes = {m: parameters(m) for m in models} if cuda else {}
    records: list[Any] = []
    hosts: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    per_param_s = None
    for model in models:
        left = deadline - time.perf_counter()
        if left <= 0:
            skipped[model] = "no time left"
            continue
        if per_param_s is not None and model in sizes and per_param_s * sizes[model] > left:
            skipped[model] = f"estimated {per_param_s * sizes[model]:.0f} s, {left:.0f} s left"
            log(f"{model}: skipped ({skipped[model]})")
            continue
        t0 = time.perf_counter()
        recs, env, cut = measure_model(model, warmup=warmup, repeats=repeats, energy_s=energy_s,
                                       deadline=deadline, log=log)
        records += recs
        hosts[model] = env
        if cut:
            skipped[model] = f"tilings {', '.join(cut)} (time budget)"
        if per_param_s is None and model in sizes and not cut:
            per_param_s = (time.perf_counter() - t0) / sizes[model]

    rows = [config_summary(g) for g in group_by_config(records).values()]
    first_env = next(iter(hosts.values()), None)
    header = environment_line(first_env)
    summary = {
        "environment": header,
        "host": first_env,
        "warmup": warmup, "repeats": repeats, "energy_s": energy_s, "budget_s": budget_s,
        "elapsed_s": time.perf_counter() - began,
        "skipped": skipped,
        "models": {m: model_summary([r for r in rows if r["model"] == m]) for m in hosts},
        "targets": {k: f"{op} {bound:g}" for k, (op, bound) in TARGETS.items()},
        "configs": rows,
        "all_finite": all(math.isfinite(r[k]) for r in rows if r["status"] == "ok" for k in FIGURES),
        "failed": [f"{r['model']} {r['tiling']}" for r in rows if r["status"] != "ok"],
    }
    (out / "records.json").write_text(json.dumps([to_jsonable(r) for r in records], indent=1))
    summary["parquet"] = write_parquet(records, out / "records.parquet")
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    per_model = "\n".join(
        f"{m}: " + ", ".join(f"{k} {_fmt(v, '.2f')}" for k, v in s["medians"].items())
        + f"; worst CV {_fmt(s['worst_cv_pct'], '.2f')}%; targets met: "
        + ", ".join(f"{k} {v}" for k, v in s["targets_met"].items())
        for m, s in summary["models"].items())
    text = "\n\n".join([header, format_checks(rows), "per model (medians over configs):\n" + per_model,
                        format_table(records)])
    (out / "summary.txt").write_text(text + "\n")
    print(text)
    print(f"elapsed {summary['elapsed_s']:.0f} s" + (f"; skipped: {json.dumps(skipped)}" if skipped else ""))
    return 0 if records and not summary["failed"] and summary["all_finite"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
