"""How precise a config's medians are, and when to stop repeating (no torch).

The precision of a stage is the half-width of the distribution-free 95% confidence
interval of its median, relative to that median. The interval is a pair of order
statistics ``x_(j) .. x_(n-j+1)`` whose binomial coverage is at least 95%; it needs
no assumption about the shape of the noise (timings are skewed: a slow repeat is
common, a fast one is not). With fewer than 6 samples no such pair exists, so a
median of 3 repeats has no 95% interval at all.

A stage much smaller than the whole forward (a 0.1 ms head in a 100 ms forward)
is judged against 1% of ``t_total`` instead of its own median: its noise cannot
move any figure that matters, and a relative bound on it would never be met.

The adaptive rule (`StopRule`): after the minimum number of repeats, keep
repeating until every stage's precision is within the target, or a maximum count
or duration is reached; the reason it stopped is recorded per config.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

LEVEL = 0.95
MIN_SAMPLES = 6  # the fewest samples with a 95% order-statistic interval of the median
SMALL_STAGE_SHARE = 0.01  # stages under this share of t_total are judged against it
# The per-repeat columns the rule watches: every stage of both methods and the processor.
STAGES = ("t_preprocess_ms", "t_vision_ms", "t_projector_ms", "t_llm_prefill_ms", "t_lm_head_ms", "t_total_ms",
          "t_prefill_step_ms", "t_vision_only_ms")

# Why a config stopped repeating (the ``stop_reason`` column).
FIXED = "repeats"  # the fixed count (and --min-duration) was reached; no target
PRECISE = "precision"  # every stage within the target
MAX_REPEATS = "max_repeats"
MAX_DURATION = "max_duration"


@lru_cache(maxsize=None)
def median_ci_ranks(n: int, level: float = LEVEL) -> tuple[int, int] | None:
    """0-based indices ``(lo, hi)`` into n sorted samples bounding the median with at least `level` coverage.

    The widest symmetric pair that is still narrow enough: the largest j with
    ``2 P(B <= j) <= 1 - level`` for B ~ Binomial(n, 1/2) gives ``x[j] .. x[n-1-j]``
    (coverage ``1 - 2 P(B <= j)``). None when even the extremes do not cover (n < 6 at 95%).
    """
    alpha, total, tail, j = 1.0 - level, 2**n, 0, -1
    for k in range(n // 2):
        tail += math.comb(n, k)
        if 2 * tail / total <= alpha:
            j = k
        else:
            break
    return None if j < 0 else (j, n - 1 - j)


def median_ci(values: Sequence[float], level: float = LEVEL) -> tuple[float, float] | None:
    """The order-statistic confidence interval of the median of `values`, or None with too few."""
    ranks = median_ci_ranks(len(values), level)
    if ranks is None:
        return None
    ordered = sorted(values)
    return ordered[ranks[0]], ordered[ranks[1]]


def stage_precision(samples: Mapping[str, Sequence[float | None]]) -> dict[str, float]:
    """Per stage present in every sample: the CI half-width in percent of max(|median|, 1% of t_total's median).

    Empty with fewer than `MIN_SAMPLES` samples (no interval exists).
    """
    total = [v for v in samples.get("t_total_ms", ()) if v is not None]
    floor = SMALL_STAGE_SHARE * abs(statistics.median(total)) if total else 0.0
    out = {}
    for stage in STAGES:
        values = samples.get(stage)
        if not values or any(v is None for v in values):
            continue
        ranks = median_ci_ranks(len(values))
        if ranks is None:
            return {}
        # Sorted once, for the interval and the median.
        ordered = sorted(values)  # type: ignore[type-var]
        scale = max(abs(statistics.median(ordered)), floor)
        out[stage] = math.inf if scale == 0 else 100.0 * (ordered[ranks[1]] - ordered[ranks[0]]) / 2 / scale
    return out


def worst(precision: Mapping[str, float]) -> float | None:
    """The least precise stage's figure (the config's precision), or None without an interval."""
    return max(precision.values()) if precision else None


@dataclass(frozen=True, slots=True)
class StopRule:
    """When `ModelHost` stops repeating one config.

    Attributes:
        repeats: the fewest timed repeats (the whole count when `target_pct` is None).
        min_duration_s: the timed repeats also span at least this long.
        target_pct: the precision every stage must reach (None: fixed count).
        max_repeats, max_duration_s: where the adaptive rule gives up on the target.
    """

    repeats: int
    min_duration_s: float = 0.0
    target_pct: float | None = None
    max_repeats: int = 50
    max_duration_s: float = 60.0

    def reason(self, samples: Sequence[Mapping[str, float | None]], elapsed_s: float) -> str | None:
        """Why to stop now, or None to go on repeating."""
        n = len(samples)
        if n < self.repeats or elapsed_s < self.min_duration_s:
            return None
        if self.target_pct is None:
            return FIXED
        if n >= MIN_SAMPLES:
            reached = worst(stage_precision(columns(samples)))
            if reached is not None and reached <= self.target_pct:
                return PRECISE
        if n >= self.max_repeats:
            return MAX_REPEATS
        if elapsed_s >= self.max_duration_s:
            return MAX_DURATION
        return None


def columns(samples: Sequence[Mapping[str, float | None]]) -> dict[str, list[float | None]]:
    """Per-repeat dicts -> one list per watched stage."""
    return {stage: [s.get(stage) for s in samples] for stage in STAGES}
