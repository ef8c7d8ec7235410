"""The precision of a median and the adaptive stopping rule (`workers.precision`), and the host following it."""

from __future__ import annotations

import random

import pytest

from workers import MeasureConfig
from workers.precision import (
    FIXED,
    MAX_DURATION,
    MAX_REPEATS,
    MIN_SAMPLES,
    PRECISE,
    StopRule,
    median_ci,
    median_ci_ranks,
    stage_precision,
)


def test_order_statistic_ranks_match_the_binomial_tables():
    # 1-based ranks of the 95% interval of the median in the usual tables: n=6: 1..6, n=10: 2..9, n=20: 6..15.
    assert [median_ci_ranks(n) for n in range(1, 6)] == [None] * 5
    assert median_ci_ranks(6) == (0, 5) and median_ci_ranks(10) == (1, 8) and median_ci_ranks(20) == (5, 14)
    assert MIN_SAMPLES == 6


def test_the_interval_covers_the_true_median_at_least_95_percent_of_the_time_for_skewed_noise():
    rng = random.Random(0)
    true_median = 10.0 + 2.0 * 0.6931471805599453  # 10 + exponential(scale 2): median 10 + 2 ln 2
    for n in (6, 11, 30):
        hits = 0
        for _ in range(2000):
            lo, hi = median_ci([10.0 + rng.expovariate(0.5) for _ in range(n)])
            hits += lo <= true_median <= hi
        assert 0.95 <= hits / 2000 <= 0.995, (n, hits)


def sample(total, vision=None, head=0.1, **more):
    return {"t_total_ms": total, "t_vision_ms": vision if vision is not None else total / 2, "t_lm_head_ms": head,
            **more}


def test_a_tiny_stage_is_judged_against_one_percent_of_the_total():
    # The head's median is 0.1 ms but it swings by 0.2 ms: relative to itself that is 100%,
    # relative to 1% of a 100 ms forward (1 ms) it is 10%.
    samples = [sample(100.0, head=h) for h in (0.1, 0.3, 0.1, 0.1, 0.1, 0.1, 0.1)]
    cols = {k: [s[k] for s in samples] for k in samples[0]}
    got = stage_precision(cols)
    assert got["t_lm_head_ms"] == pytest.approx(100.0 * (0.3 - 0.1) / 2 / 1.0)
    assert got["t_total_ms"] == 0.0
    assert stage_precision({k: v[:5] for k, v in cols.items()}) == {}  # five samples: no interval


def test_the_fixed_rule_stops_at_the_count_and_the_adaptive_one_at_the_target_or_a_cap():
    steady = [sample(100.0) for _ in range(60)]
    fixed = StopRule(repeats=3)
    assert [fixed.reason(steady[:n], 0.0) for n in (2, 3)] == [None, FIXED]
    assert StopRule(repeats=3, min_duration_s=5).reason(steady[:3], 1.0) is None

    adaptive = StopRule(repeats=3, target_pct=2.0, max_repeats=40, max_duration_s=30)
    assert [adaptive.reason(steady[:n], 0.0) for n in (3, 5, 6)] == [None, None, PRECISE]
    rng = random.Random(1)
    noisy = [sample(100.0 * rng.uniform(0.5, 1.5)) for _ in range(60)]
    assert adaptive.reason(noisy[:39], 1.0) is None
    assert adaptive.reason(noisy[:40], 1.0) == MAX_REPEATS
    assert adaptive.reason(noisy[:10], 30.0) == MAX_DURATION
    # The minimum count comes first, even when the target is met earlier.
    assert StopRule(repeats=8, target_pct=2.0).reason(steady[:6], 0.0) is None


def test_the_host_follows_the_rule_and_records_it(tiny_host):
    fixed = tiny_host.measure(MeasureConfig(tiling_rows=1, tiling_cols=1, warmup=0, repeats=2))
    assert len(fixed) == 2 and {(r.stop_reason, r.precision_target_pct, r.precision_reached_pct) for r in fixed} == {
        (FIXED, None, None)}  # two samples have no interval

    loose = tiny_host.measure(MeasureConfig(tiling_rows=1, tiling_cols=1, warmup=0, repeats=2, precision_pct=1000.0))
    assert len(loose) == MIN_SAMPLES and {r.stop_reason for r in loose} == {PRECISE}
    assert 0 <= loose[0].precision_reached_pct <= 1000.0 and loose[0].precision_target_pct == 1000.0

    capped = tiny_host.measure(MeasureConfig(tiling_rows=1, tiling_cols=1, warmup=0, repeats=2, precision_pct=0.1,
                                             max_repeats=7))
    assert len(capped) == 7 and {r.stop_reason for r in capped} == {MAX_REPEATS}
    assert capped[0].precision_reached_pct > 0.1
