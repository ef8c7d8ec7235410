"""Benchmark 2: the same tiny-model sweep three ways, in one run, on the same machine.

1. tilesweep: `orchestrator.sweep.sweep` (what ``tilesweep run`` calls) with 2 CPU
   workers on a local Ray cluster it starts itself;
2. the sequential loop: one fresh process, `ModelHost` once, every config in turn;
3. Ray Tune: `tune.Tuner` with `tune.grid_search` over the configs, 2 trials at a
   time, each trial loading its own model.

All three measure the same `MeasureConfig`s (every 1xk, 2xk and kx1 tiling of the
tiny Molmo2, the same warm-up and repeats), one thread per op. Wall time runs
from the call (Ray's start included) to the last result; time to first result
from the call to the moment the first config's records reach the collecting
process (tilesweep's driver, the loop, Tune's driver). With 2 workers on 2
cores tilesweep can beat the loop by at most about 2x.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.baselines import run_sequential, run_tune_grid
from benchmarks.cluster import worker_env
from benchmarks.driver_run import StampingProgress
from benchmarks.harness import Context, Result

NAME = "speedup"
TITLE = "2. Real sweep speed-up"
MODEL = "tiny-molmo2"
WORKERS = 2


@dataclass(kw_only=True, frozen=True, slots=True)
class SweepSize:
    families: tuple[str, ...] = ("1xk", "2xk", "kx1")
    tilings: tuple[tuple[int, int], ...] = ()  # explicit tilings replace the families
    warmup: int = 1
    repeats: int = 5  # enough samples for benchmark 4's coefficients of variation


FULL = SweepSize()
QUICK = SweepSize(tilings=((1, 1), (1, 2)), warmup=1, repeats=2)


def sweep_spec(size: SweepSize, results: Path) -> Any:
    from orchestrator.spec import SweepSpec

    return SweepSpec(model=MODEL, families=size.families, tilings=size.tilings, warmup=size.warmup,
                     repeats=size.repeats, results=str(results), workers=WORKERS, gpus_per_worker=0.0,
                     address="local")


def measure_configs(spec: Any) -> list[dict[str, Any]]:
    """The `MeasureConfig` keywords the driver sends for `spec`, in its planned order."""
    from orchestrator.plan import plan
    from tilings import get_profile
    from workers.models import MODELS

    return [
        {"tiling_rows": c.tiling.rows, "tiling_cols": c.tiling.cols, "height": c.height, "width": c.width,
         "family": c.family, "warmup": spec.warmup, "repeats": spec.repeats, "min_duration_s": spec.min_duration_s,
         "decode_tokens": spec.decode_tokens, "block_spans": spec.block_spans, "seed": spec.seed,
         "config_id": c.config_id}
        for c in plan(spec, get_profile(MODELS[spec.model].profile))
    ]


def run_tilesweep(size: SweepSize, work_dir: Path) -> dict[str, Any]:
    """tilesweep's own sweep, timed; the records stay under the returned ``run_dir``.

    Raises:
        RuntimeError: a config did not end ok.
    """
    import ray

    from orchestrator.sweep import sweep

    worker_env()
    spec = dataclasses.replace(sweep_spec(size, work_dir / "tilesweep"), run_id="speedup")
    progress = StampingProgress()
    epoch0 = time.time()
    t0 = time.perf_counter()
    # Ray is started here, as `tilesweep run` starts it (2 CPU slots), but with
    # address="local" so that another cluster on this machine is never joined;
    # `sweep` then uses this connection.
    ray.init(address="local", num_cpus=WORKERS, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING)
    startup = time.perf_counter() - t0
    try:
        result = sweep(spec, progress=progress)
    finally:
        ray.shutdown()
    wall = time.perf_counter() - t0
    outcome = result.outcome
    if outcome is None or outcome.ok != len(result.planned):
        raise RuntimeError(f"tilesweep measured {getattr(outcome, 'ok', 0)} of {len(result.planned)} configs ok; "
                           f"first error: {_first_error(result.run_dir)}")
    return {"epoch0": epoch0, "wall_s": wall, "startup_s": startup,
            "driver_started_s": progress.started - epoch0,
            "arrivals": sorted(progress.finished_at), "run_dir": str(result.run_dir), "configs": len(result.planned)}


def _first_error(run_dir: Path) -> str | None:
    import polars as pl

    from store.scan import scan

    failed = scan(run_dir).filter(pl.col("status") != "ok").select("error_type", "error").head(1).collect()
    return None if failed.is_empty() else f"{failed['error_type'][0]}: {failed['error'][0]}"


def _check_all_ok(name: str, configs: list[dict[str, Any]], expected: int, repeats: int) -> None:
    bad = [c for c in configs if c.get("ok") != repeats]
    if len(configs) != expected or bad:
        first = f"; first: {bad[0].get('tiling')} {bad[0].get('error')}" if bad else ""
        raise RuntimeError(f"{name}: {len(configs)} of {expected} configs returned, "
                           f"{len(bad)} without {repeats} ok records{first}")


def run(*, quick: bool, context: Context) -> Result:
    size = QUICK if quick else FULL
    result = Result(benchmark=NAME, title=TITLE, quick=quick)
    configs = measure_configs(sweep_spec(size, context.work_dir))
    n = len(configs)

    ts = run_tilesweep(size, context.work_dir)
    context.shared["tilesweep_run_dir"] = ts["run_dir"]
    seq = run_sequential(MODEL, configs, context.work_dir)
    _check_all_ok("sequential loop", seq["configs"], n, size.repeats)
    tune = run_tune_grid(MODEL, configs, concurrency=WORKERS, cpus=WORKERS)
    _check_all_ok("Ray Tune", tune["configs"], n, size.repeats)

    def work(m: dict[str, Any]) -> float:  # wall time without Ray's own start
        return m["wall_s"] - m["startup_s"]

    def first(m: dict[str, Any]) -> float:
        return m["arrivals"][0] - m["epoch0"]

    what = f"{n} configs x ({size.warmup} warm-up + {size.repeats} repeats), tiny Molmo2, 2 cores"
    result.add("sequential loop / tilesweep", seq["wall_s"] / ts["wall_s"], "ratio",
               f"wall clock, start-up included; {what}; at most ~2x with 2 workers on 2 cores")
    result.add("Ray Tune / tilesweep", tune["wall_s"] / ts["wall_s"], "ratio",
               "wall clock, start-up included; one trial per config, 2 at a time")
    result.add("sequential loop / tilesweep (Ray start excluded)", seq["wall_s"] / work(ts), "ratio",
               "tilesweep's wall without starting the local Ray cluster")
    result.add("Ray Tune / tilesweep (Ray start excluded)", work(tune) / work(ts), "ratio",
               "both without starting their local Ray cluster")
    result.add("tilesweep wall", ts["wall_s"], "s", f"of which {ts['startup_s']:.1f} s starting Ray")
    result.add("sequential loop wall", seq["wall_s"], "s", f"process start to exit; model loaded at {seq['model_loaded_s']:.1f} s")
    result.add("Ray Tune wall", tune["wall_s"], "s", f"of which {tune['startup_s']:.1f} s starting Ray")
    result.add("time to first result, tilesweep", first(ts), "s", "call to the first config's part written")
    result.add("time to first result, sequential loop", first(seq), "s", "process start to the first config's records")
    result.add("time to first result, Ray Tune", first(tune), "s", "call to the first trial's result at the Tune driver")
    result.details = {
        "size": dataclasses.asdict(size),
        "configs": [f"{c['tiling_rows']}x{c['tiling_cols']}" for c in configs],
        "order": ["tilesweep", "sequential", "tune"],
        "workers": WORKERS,
        "tilesweep": {k: v for k, v in ts.items() if k != "run_dir"},
        "sequential": seq,
        "tune": tune,
    }
    return result
