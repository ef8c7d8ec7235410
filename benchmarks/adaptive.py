"""Benchmark 5: what the adaptive stopping rule buys, quiet and under a competing load.

The tiny Molmo2 measures the same tilings three ways, one after another on one
`ModelHost`: a fixed 3 repeats (the default), a fixed 10, and the adaptive rule
(``--precision``: repeat until the 95% interval of every stage's median is within
the target, or a cap). Then the same again while another process keeps one core
busy (a pure-Python loop, as a second job on a shared machine would).

Reported per condition: the samples the adaptive rule took and the precision it
reached (the least precise stage's interval half-width, % of its median), and the
precision fixed counts reached (none at all for 3 repeats: no 95% interval of a
median exists below 6 samples). The raw samples are in the details.
"""

from __future__ import annotations

import multiprocessing
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

from benchmarks.harness import Context, Result

NAME = "adaptive"
TITLE = "5. Adaptive repeats"
MODEL = "tiny-molmo2"


@dataclass(kw_only=True, frozen=True, slots=True)
class AdaptiveSize:
    tilings: tuple[tuple[int, int], ...] = ((1, 1), (1, 4))
    fixed: tuple[int, ...] = (3, 10)
    target_pct: float = 2.0
    max_repeats: int = 40
    max_duration_s: float = 20.0
    warmup: int = 1


FULL = AdaptiveSize()
QUICK = AdaptiveSize(tilings=((1, 1),), fixed=(3,), target_pct=10.0, max_repeats=6, max_duration_s=5.0, warmup=0)


def _burn(stop: Any) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


class CompetingLoad:
    """One process keeping a core busy while the block runs."""

    def __enter__(self) -> CompetingLoad:
        ctx = multiprocessing.get_context("spawn")
        self._stop = ctx.Event()
        self._proc = ctx.Process(target=_burn, args=(self._stop,), daemon=True)
        self._proc.start()
        time.sleep(0.5)  # let it get going
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._proc.join(timeout=10)
        if self._proc.is_alive():
            self._proc.kill()


def measure(host: Any, size: AdaptiveSize) -> list[dict[str, Any]]:
    """Every (tiling, rule) once on `host`: samples taken, precision reached, why it stopped, seconds."""
    from workers import MeasureConfig
    from workers.precision import STAGES

    rows = []
    for rows_cols in size.tilings:
        rules: list[tuple[str, dict[str, Any]]] = [(f"fixed {n}", {"repeats": n}) for n in size.fixed]
        rules.append((f"adaptive {size.target_pct:g}%", {"repeats": 3, "precision_pct": size.target_pct,
                                                         "max_repeats": size.max_repeats,
                                                         "max_duration_s": size.max_duration_s}))
        for label, timing in rules:
            t0 = time.perf_counter()
            records = host.measure(MeasureConfig(tiling_rows=rows_cols[0], tiling_cols=rows_cols[1],
                                                 warmup=size.warmup, energy_s=0, **timing))
            first = records[0]
            if first.status != "ok":
                raise RuntimeError(f"{label} {rows_cols} failed: {first.error_type}: {first.error}")
            rows.append({
                "tiling": f"{rows_cols[0]}x{rows_cols[1]}", "rule": label, "samples": len(records),
                "precision_pct": first.precision_reached_pct, "stop_reason": first.stop_reason,
                "seconds": time.perf_counter() - t0, "load_avg_1m": first.load_avg_1m,
                "samples_ms": {s: [getattr(r, s) for r in records] for s in STAGES},
            })
    return rows


def run(*, quick: bool, context: Context) -> Result:
    from workers import ModelHost

    size = QUICK if quick else FULL
    result = Result(benchmark=NAME, title=TITLE, quick=quick)
    host = ModelHost(MODEL)
    quiet = measure(host, size)
    with CompetingLoad():
        loaded = measure(host, size)

    adaptive = f"adaptive {size.target_pct:g}%"
    for condition, rows in (("quiet", quiet), ("one core busy", loaded)):
        mine = [r for r in rows if r["rule"] == adaptive]
        reached = [r["precision_pct"] for r in mine if r["precision_pct"] is not None]
        result.add(f"adaptive: samples per config, {condition}", statistics.median(r["samples"] for r in mine),
                   "count", f"median over {len(mine)} tiling(s); target ±{size.target_pct:g}%, at most "
                            f"{size.max_repeats} repeats or {size.max_duration_s:g} s; stopped by "
                            + ", ".join(sorted({r["stop_reason"] for r in mine})))
        if len(reached) == len(mine):
            result.add(f"adaptive: precision reached, {condition}", max(reached), "% of median",
                       "least precise stage, worst tiling: 95% interval half-width")
        else:  # the duration cap came before 6 samples
            result.add(f"adaptive: configs without a 95% interval, {condition}", len(mine) - len(reached), "count",
                       "stopped by the duration cap before 6 samples")
        for n in size.fixed:
            fixed = [r["precision_pct"] for r in rows if r["rule"] == f"fixed {n}"]
            if all(p is not None for p in fixed):
                result.add(f"fixed {n}: precision reached, {condition}", max(fixed), "% of median",
                           "least precise stage, worst tiling")
            else:
                result.add(f"fixed {n}: configs without a 95% interval, {condition}",
                           sum(p is None for p in fixed), "count", "fewer than 6 samples: no interval exists")
    result.details = {"size": asdict(size), "quiet": quiet, "loaded": loaded}
    return result
