"""Benchmark 7: the constant-compute control. Do the timers measure shapes, or labels?

Llama 3.2 Vision's processor pads every image to ``max_image_tiles`` tiles
(`tilings.mllama`): the encoder runs on 4 tiles and the LLM cross-attends to the
same number of vision states at every tiling. Its tilings are different labels on
the same computation, so every model stage should take the same time at each of
them; a stage that moves with the tiling would be the instrument's error.

The tiny Mllama (`workers.mllama`) measures every tiling of its scheme on one
`ModelHost`, in rounds: each round measures every tiling once (a few repeats after a
warm-up), starting one tiling further along each round, so that drift over the run
(clocks, the machine's other work) falls on every tiling alike instead of on the
ones measured last. Per stage and tiling: the median of the pooled samples and its
distribution-free 95% interval (`workers.precision.median_ci`).

Reported per stage (vision, LLM prefill, the whole forward): the spread of the
tilings' medians (max - min, % of their median), the interval half-width of one
tiling's median (% of it, the median over tilings), whether every tiling's
interval shares a common value (1: flat within run-to-run noise, 0: not), and the
spread of the tilings' fastest repeats (on a shared machine other work only adds
time, so the fastest repeat is the least disturbed estimate of the work). The
processor is the contrast: its input does grow with the tiling (a 560x560 image at
1x1, 1120x1120 at 2x2), and its time should not be flat. Measured and reported,
never asserted: timing targets belong to the benchmark run, not to the tests.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Any

from benchmarks.harness import Context, Result

NAME = "control"
TITLE = "7. Constant-compute control"
MODEL = "tiny-mllama"
# stage column -> its name in the table; the processor last, as the contrast
STAGES = {"t_vision_ms": "vision", "t_llm_prefill_ms": "LLM prefill", "t_total_ms": "forward (total)",
          "t_preprocess_ms": "processor (CPU)"}


@dataclass(kw_only=True, frozen=True, slots=True)
class ControlSize:
    tilings: tuple[tuple[int, int], ...] | None = None  # None: every target of the model's scheme
    rounds: int = 12
    repeats: int = 2  # per tiling and round: short rounds spread the machine's drift over every tiling
    warmup: int = 0  # every tiling has the same shapes: the config's first (cold) forward is warm-up enough


FULL = ControlSize()
QUICK = ControlSize(tilings=((1, 1), (2, 2)), rounds=2, repeats=3, warmup=0)  # 6 samples: the fewest with an interval


def measure(host: Any, size: ControlSize) -> dict[str, dict[str, list[float]]]:
    """Every tiling in `size.rounds` rotated rounds on `host`: per tiling label, per stage column, the samples."""
    from workers import MeasureConfig

    tilings = [tuple(t) for t in (size.tilings or host.profile.targets())]
    samples: dict[str, dict[str, list[float]]] = {f"{r}x{c}": {s: [] for s in STAGES} for r, c in tilings}
    for round_ in range(size.rounds):
        shift = round_ % len(tilings)
        for rows, cols in tilings[shift:] + tilings[:shift]:
            records = host.measure(MeasureConfig(tiling_rows=rows, tiling_cols=cols, warmup=size.warmup,
                                                 repeats=size.repeats, energy_s=0))
            if records[0].status != "ok":
                raise RuntimeError(f"{rows}x{cols} failed: {records[0].error_type}: {records[0].error}")
            for stage, values in samples[f"{rows}x{cols}"].items():
                values.extend(getattr(r, stage) for r in records)
    return samples


def flatness(per_tiling: dict[str, list[float]]) -> dict[str, Any]:
    """One stage: each tiling's median and 95% interval, the spread of the medians and whether the intervals meet."""
    from workers.precision import median_ci

    medians = {t: statistics.median(v) for t, v in per_tiling.items()}
    fastest = {t: min(v) for t, v in per_tiling.items()}
    intervals = {t: median_ci(v) for t, v in per_tiling.items()}
    centre = statistics.median(medians.values())
    half_widths = {t: 100.0 * (hi - lo) / 2 / medians[t] for t, (lo, hi) in intervals.items()}
    return {
        "medians_ms": medians,
        "intervals_ms": intervals,
        "spread_pct": 100.0 * (max(medians.values()) - min(medians.values())) / centre,
        "fastest_ms": fastest,
        "fastest_spread_pct": 100.0 * (max(fastest.values()) - min(fastest.values())) / statistics.median(
            fastest.values()),
        "ci_half_width_pct": statistics.median(half_widths.values()),
        "ci_half_width_max_pct": max(half_widths.values()),
        # a value inside every tiling's interval exists iff the largest lower end is at most the smallest upper end
        "intervals_meet": max(lo for lo, _ in intervals.values()) <= min(hi for _, hi in intervals.values()),
    }


def run(*, quick: bool, context: Context) -> Result:
    from workers import ModelHost

    size = QUICK if quick else FULL
    result = Result(benchmark=NAME, title=TITLE, quick=quick)
    host = ModelHost(MODEL)
    samples = measure(host, size)
    n = min(len(v) for per in samples.values() for v in per.values())
    stages = {stage: flatness({t: per[stage] for t, per in samples.items()}) for stage in STAGES}
    tilings = ", ".join(samples)
    result.add("tilings measured", len(samples), "count",
               f"{MODEL}, profile {host.profile.name} ({tilings}); every one pads to "
               f"{host.profile.max_image_tiles} tiles")
    result.add("samples per tiling", n, "count",
               f"{size.rounds} rotated rounds x {size.repeats} repeats after {size.warmup} warm-up")
    for stage, label in STAGES.items():
        f = stages[stage]
        low, high = min(f["medians_ms"].values()), max(f["medians_ms"].values())
        contrast = "; the contrast: its image grows with the tiling" if stage == "t_preprocess_ms" else ""
        result.add(f"{label}: spread of the tilings' medians", f["spread_pct"], "% of median",
                   f"max - min over tilings: {low:.2f} to {high:.2f} ms{contrast}")
        result.add(f"{label}: 95% CI half-width of one tiling's median", f["ci_half_width_pct"], "% of median",
                   f"median over tilings (largest {f['ci_half_width_max_pct']:.1f}%)")
        result.add(f"{label}: flat within noise", int(f["intervals_meet"]), "1 = yes",
                   "1 when one value lies inside every tiling's 95% interval of its median")
        fast = f["fastest_ms"].values()
        result.add(f"{label}: spread of the tilings' fastest repeats", f["fastest_spread_pct"], "% of median",
                   f"{min(fast):.2f} to {max(fast):.2f} ms: the least disturbed repeat (other work on the machine "
                   "only adds time)")
    result.details = {"size": asdict(size), "model": MODEL, "profile": host.profile.to_dict(),
                      "stages": stages, "samples_ms": samples}
    return result
