"""The two ways of running a sweep that tilesweep is compared with.

- `sequential_main`: the hand-written loop, one process, the model loaded once,
  the configs one after another. Run as ``python -m benchmarks.baselines`` in a
  fresh process so that its wall time includes the imports and the model load,
  as tilesweep's workers and Tune's trials pay them too.
- `run_tune_grid`: a Ray Tune grid search with one trial per config; each trial
  builds its own `ModelHost`, the usual way to put a measurement under Tune.

Both return per-config finish times (epoch seconds, the same clock the parent
reads) so that time to first result is measured the same way for every method.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _summarise(config: dict[str, Any], records: list[Any]) -> dict[str, Any]:
    ok = [r for r in records if r.status == "ok"]
    totals = [r.t_total_ms for r in ok if r.t_total_ms is not None]
    return {
        "tiling": f"{config['tiling_rows']}x{config['tiling_cols']}",
        "records": len(records),
        "ok": len(ok),
        "t_total_ms_median": statistics.median(totals) if totals else None,
        "finished": time.time(),
    }


def measure_sequentially(model: str, configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Load the model once, then measure every config in order."""
    from workers import MeasureConfig, ModelHost

    host = ModelHost(model)
    return [_summarise(c, host.measure(MeasureConfig(**c))) for c in configs]


def sequential_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.baselines", description="the sequential loop baseline")
    parser.add_argument("configs", type=Path, help="JSON: {'model': str, 'configs': [MeasureConfig kwargs]}")
    parser.add_argument("out", type=Path, help="JSON written here: one summary per config")
    args = parser.parse_args(argv)
    job = json.loads(args.configs.read_text())
    started = time.time()
    summaries = measure_sequentially(job["model"], job["configs"])
    args.out.write_text(json.dumps({"started": started, "configs": summaries}))
    return 0


def _tune_trial(params: dict[str, Any]) -> dict[str, Any]:
    # Each trial is its own process with its own model: what a Tune user writes.
    from workers import MeasureConfig, ModelHost

    host = ModelHost(params["model"])
    config = params["config"]
    summary = _summarise(config, host.measure(MeasureConfig(**config)))
    return {k: v for k, v in summary.items() if v is not None}


def run_tune_grid(model: str, configs: list[dict[str, Any]], *, concurrency: int,
                  cpus: int) -> dict[str, Any]:
    """One Tune trial per config, `concurrency` at a time, on a fresh local Ray instance.

    Returns wall seconds (Ray start included and excluded) and per-trial summaries.
    """
    import ray
    from ray import tune

    t0 = time.perf_counter()
    epoch0 = time.time()
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    try:
        ready = time.perf_counter() - t0
        with tempfile.TemporaryDirectory(prefix="tilesweep-tune-") as storage:
            tuner = tune.Tuner(
                tune.with_resources(_tune_trial, {"cpu": 1}),
                param_space={"model": model, "config": tune.grid_search(configs)},
                tune_config=tune.TuneConfig(max_concurrent_trials=concurrency),
                run_config=tune.RunConfig(storage_path=storage, name="grid", verbose=0),
            )
            grid = tuner.fit()
            trials = [r.metrics for r in grid]
            errors = [str(r.error) for r in grid if r.error is not None]
        wall = time.perf_counter() - t0
    finally:
        ray.shutdown()
    return {"epoch0": epoch0, "wall_s": wall, "startup_s": ready, "trials": trials, "errors": errors}


def run_sequential_process(model: str, configs: list[dict[str, Any]], work_dir: Path) -> dict[str, Any]:
    """Run `sequential_main` in a fresh interpreter; wall time from spawn to exit."""
    import subprocess

    job = work_dir / "sequential-configs.json"
    out = work_dir / "sequential-out.json"
    job.write_text(json.dumps({"model": model, "configs": configs}))
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    epoch0 = time.time()
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "benchmarks.baselines", str(job), str(out)],
                          env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"the sequential baseline failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    result = json.loads(out.read_text())
    return {"epoch0": epoch0, "wall_s": wall, "startup_s": result["started"] - epoch0, "trials": result["configs"]}


if __name__ == "__main__":
    raise SystemExit(sequential_main())
