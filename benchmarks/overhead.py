"""Benchmark 3: what the hook timers cost the forward they time.

The tiny Molmo2 runs the same inputs N times with the workers' `HookTimer`
attached and N times without, interleaved in pairs whose order alternates
(hooked first, then plain first), so that drift and the machine's other load hit
both alike. Each forward is timed with ``perf_counter_ns`` around the model call
only; the hooks are attached outside that span, as `ModelHost` does.

Reported: the ratio of the medians, the median of the per-pair ratios, and the
overhead per hook event ``(median_hooked - median_plain) / events_per_forward``
in microseconds, with a bootstrap 95% interval of the median paired difference.
"""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

from benchmarks.harness import Context, Result

NAME = "overhead"
TITLE = "3. Timer overhead"
MODEL = "tiny-molmo2"


@dataclass(kw_only=True, frozen=True, slots=True)
class OverheadSize:
    tiling: tuple[int, int] = (1, 3)
    pairs: int = 150
    warmup: int = 5
    bootstrap: int = 2000
    seed: int = 0


FULL = OverheadSize()
QUICK = OverheadSize(pairs=12, warmup=2, bootstrap=200)


def _bootstrap_median_ci(values: list[float], rounds: int, seed: int) -> tuple[float, float]:
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(rounds))
    return medians[int(0.025 * rounds)], medians[min(rounds - 1, int(0.975 * rounds))]


def measure_pairs(size: OverheadSize) -> dict[str, Any]:
    """Interleaved hooked/plain forwards of the tiny model; raw nanoseconds kept."""
    import torch

    from tilings import Tiling, resolution_for
    from workers import ModelHost
    from workers.inputs import synthetic_image
    from workers.timers import HookTimer

    host = ModelHost(MODEL)
    height, width = resolution_for(Tiling(*size.tiling), host.profile)
    prepared = host.inputs.process(synthetic_image(height, width, size.seed)).to(host.device, host.dtype)
    kwargs = {**prepared.forward, **host.inputs.prefill_kwargs(False)}
    timer = HookTimer(host.clock, host.modules)
    model = host.model

    def plain() -> int:
        t0 = time.perf_counter_ns()
        model(**kwargs)
        return time.perf_counter_ns() - t0

    def hooked() -> int:
        with timer.attached():
            t0 = time.perf_counter_ns()
            model(**kwargs)
            elapsed = time.perf_counter_ns() - t0
        timer.read()
        return elapsed

    with torch.inference_mode():
        for _ in range(size.warmup):
            plain()
            hooked()
        events = len(timer.log)  # hook firings (pre and post) in one hooked forward
        hooked_ns, plain_ns = [], []
        for i in range(size.pairs):
            if i % 2 == 0:
                hooked_ns.append(hooked())
                plain_ns.append(plain())
            else:
                plain_ns.append(plain())
                hooked_ns.append(hooked())
    return {"hooked_ns": hooked_ns, "plain_ns": plain_ns, "events_per_forward": events,
            "torch_threads": torch.get_num_threads(), "shape": f"{height}x{width}",
            "stage_calls": dict(timer.read().calls)}


def run(*, quick: bool, context: Context) -> Result:
    size = QUICK if quick else FULL
    result = Result(benchmark=NAME, title=TITLE, quick=quick)
    m = measure_pairs(size)
    hooked_us = [ns / 1000 for ns in m["hooked_ns"]]
    plain_us = [ns / 1000 for ns in m["plain_ns"]]
    events = m["events_per_forward"]
    if events < 1:
        raise RuntimeError("the hooked forward fired no hook: the timer is not attached to the model")
    med_h, med_p = statistics.median(hooked_us), statistics.median(plain_us)
    diffs = [h - p for h, p in zip(hooked_us, plain_us)]
    ratios = [h / p for h, p in zip(hooked_us, plain_us)]
    lo, hi = _bootstrap_median_ci(diffs, size.bootstrap, size.seed)
    tiling = f"{size.tiling[0]}x{size.tiling[1]}"

    result.add("hooked / plain forward (medians)", med_h / med_p, "ratio",
               f"tiny Molmo2 {tiling}, {size.pairs} interleaved pairs, alternating order")
    result.add("hooked / plain forward (median of paired ratios)", statistics.median(ratios), "ratio",
               "each hooked forward against its neighbour")
    verdict = "; the interval holds 0: below this machine's noise" if lo <= 0 <= hi else ""
    result.add("overhead per hook event", (med_h - med_p) / events, "µs",
               f"(median hooked - median plain) / {events} events; median paired difference "
               f"{statistics.median(diffs) / events:.1f} µs, 95% CI [{lo / events:.1f}, {hi / events:.1f}] µs{verdict}")
    result.add("hook events per forward", events, "count", "pre-hooks and hooks fired in one forward")
    result.add("plain forward (median)", med_p / 1000, "ms", f"image {m['shape']}, one thread")
    result.details = {
        "size": asdict(size),
        "median_hooked_us": med_h,
        "median_plain_us": med_p,
        "median_paired_diff_us": statistics.median(diffs),
        "paired_diff_ci95_us": [lo, hi],
        "stage_calls": m["stage_calls"],
        "torch_threads": m["torch_threads"],
        "hooked_us": hooked_us,
        "plain_us": plain_us,
    }
    return result
