"""The two ways of running a sweep that tilesweep is compared with.

- the sequential loop (`sequential_main`): one process, the model loaded once, the
  configs one after another; the hand-written way. It runs as
  ``python -m benchmarks.baselines`` in a fresh interpreter so that its wall time
  includes the imports and the model load, which tilesweep's workers and Tune's
  trials pay too.
- a Ray Tune grid search (`run_tune_grid`): one trial per config, each trial
  builds its own `ModelHost`; the usual way to put a measurement under Tune.

Both report, per config, the epoch time at which its records were in the hands
of the process that collects them, so time to first result means the same thing
for every method.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.cluster import worker_env

log = logging.getLogger(__name__)


def summarise(config: dict[str, Any], records: list[Any]) -> dict[str, Any]:
    """What a baseline keeps of one config: counts, the median total, when it arrived."""
    ok = [r for r in records if r.status == "ok"]
    totals = [r.t_total_ms for r in ok if r.t_total_ms is not None]
    return {
        "tiling": f"{config['tiling_rows']}x{config['tiling_cols']}",
        "records": len(records),
        "ok": len(ok),
        "t_total_ms_median": statistics.median(totals) if totals else None,
        "error": next((f"{r.error_type}: {r.error}" for r in records if r.status != "ok"), None),
        "finished": time.time(),
    }


def sequential_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.baselines", description="the sequential-loop baseline")
    parser.add_argument("job", type=Path, help="JSON: {'model': str, 'configs': [MeasureConfig keyword dicts]}")
    parser.add_argument("out", type=Path, help="JSON written here: when the model was loaded, one summary per config")
    args = parser.parse_args(argv)
    job = json.loads(args.job.read_text())

    from workers import MeasureConfig, ModelHost

    host = ModelHost(job["model"])
    loaded = time.time()
    summaries = [summarise(c, host.measure(MeasureConfig(**c))) for c in job["configs"]]
    args.out.write_text(json.dumps({"loaded": loaded, "configs": summaries}))
    return 0


def run_sequential(model: str, configs: list[dict[str, Any]], work_dir: Path) -> dict[str, Any]:
    """`sequential_main` in a fresh interpreter; wall time from spawn to exit.

    Raises:
        RuntimeError: the loop exited with an error (its stderr tail is in the message).
    """
    job, out = work_dir / "sequential-job.json", work_dir / "sequential-out.json"
    job.write_text(json.dumps({"model": model, "configs": configs}))
    epoch0 = time.time()
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "benchmarks.baselines", str(job), str(out)],
                          env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")},
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"the sequential baseline exited {proc.returncode}: {proc.stderr[-2000:]}")
    data = json.loads(out.read_text())
    return {"epoch0": epoch0, "wall_s": wall, "startup_s": 0.0, "model_loaded_s": data["loaded"] - epoch0,
            "arrivals": [c["finished"] for c in data["configs"]], "configs": data["configs"]}


def _tune_trial(params: dict[str, Any]) -> dict[str, Any]:
    # What a Tune user writes: each trial is its own process and loads its own model.
    from workers import MeasureConfig, ModelHost

    host = ModelHost(params["model"])
    config = params["config"]
    summary = summarise(config, host.measure(MeasureConfig(**config)))
    return {k: v for k, v in summary.items() if v is not None}


def run_tune_grid(model: str, configs: list[dict[str, Any]], *, concurrency: int, cpus: int) -> dict[str, Any]:
    """One Tune trial per config, `concurrency` at a time, on a fresh local Ray instance.

    Returns wall seconds (Ray's start included), Ray's start-up, and when each trial's
    result reached the Tune driver (a `tune.Callback`).

    Raises:
        RuntimeError: a trial failed.
    """
    # The legacy reporter prints nothing at verbose=0; the new one prints a banner to stdout,
    # where the benchmark's table goes.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    import ray
    from ray import tune

    class Arrivals(tune.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            self.times.append(time.time())

    worker_env()
    epoch0 = time.time()
    t0 = time.perf_counter()
    # address="local": a private instance even when another Ray cluster runs on this machine.
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING)
    try:
        startup = time.perf_counter() - t0
        arrivals = Arrivals()
        with tempfile.TemporaryDirectory(prefix="tilesweep-tune-") as storage:
            tuner = tune.Tuner(
                tune.with_resources(_tune_trial, {"cpu": 1}),
                param_space={"model": model, "config": tune.grid_search(configs)},
                tune_config=tune.TuneConfig(max_concurrent_trials=concurrency),
                run_config=tune.RunConfig(storage_path=storage, name="grid", verbose=0, callbacks=[arrivals]),
            )
            grid = tuner.fit()
        wall = time.perf_counter() - t0
        errors = [str(r.error) for r in grid if r.error is not None]
        trials = [dict(r.metrics or {}) for r in grid]
    finally:
        ray.shutdown()
    if errors:
        raise RuntimeError(f"{len(errors)} Tune trial(s) failed; first: {errors[0][:1000]}")
    return {"epoch0": epoch0, "wall_s": wall, "startup_s": startup, "arrivals": sorted(arrivals.times),
            "configs": [{k: t.get(k) for k in ("tiling", "records", "ok", "t_total_ms_median", "error")} for t in trials]}


if __name__ == "__main__":
    raise SystemExit(sequential_main())
