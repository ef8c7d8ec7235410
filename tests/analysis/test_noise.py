"""`analysis.noise`: the configs whose figures noise may have bent are flagged, with what to do."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl

from analysis import noise
from store.schema import records_to_table


def frame(records) -> pl.DataFrame:
    return pl.from_arrow(records_to_table(records))


def config(synth, config_id, n, *, noise_level=0.002, tiling=(1, 1), seed=0, **fields):
    rng = np.random.default_rng(seed)
    costs = synth.Costs(noise=noise_level)
    return [synth.planted(costs, crops=tiling[0] * tiling[1] + 1, tokens=200, rng=rng, repeat=i,
                          config_id=config_id, tiling_rows=tiling[0], tiling_cols=tiling[1], **fields)
            for i in range(n)]


def test_quiet_configs_with_enough_samples_are_not_flagged(synth):
    rows = frame(config(synth, "a", 12))
    assert noise.flags(rows).height == 0 and noise.advice(rows) == []
    table = noise.per_config(rows)
    assert table["n"].to_list() == [12] and table["target_pct"].to_list() == [noise.DEFAULT_TARGET_PCT]
    assert 0 < table["precision_pct"][0] < 1.0


def test_too_few_samples_noisy_medians_and_negative_times_are_each_flagged(synth):
    few = config(synth, "few", 3, tiling=(1, 2))
    wide = config(synth, "wide", 12, noise_level=0.3, tiling=(1, 3), seed=1)
    negative = [dataclasses.replace(r, t_llm_sub_ms=-1.0 if r.repeat < 2 else 1.0)
                for r in config(synth, "neg", 12, tiling=(2, 2))]
    rows = frame(few + wide + negative)
    flagged = {row["tiling"]: row["problem"] for row in noise.flags(rows).iter_rows(named=True)}
    assert set(flagged) == {"1x2", "1x3", "2x2"}
    assert flagged["1x2"] == "3 samples: too few for a 95% interval of the median"
    assert flagged["1x3"].startswith("median only within ±") and flagged["1x3"].endswith("(target 5%)")
    assert flagged["2x2"] == "negative times in 2 of 12 repeats"
    lines = noise.advice(rows)
    assert len(lines) == 3
    assert lines[0].startswith("noise: negative times in 1 config(s) (2x2)")
    assert lines[1].startswith("noise: 1 of 3 config(s) have fewer than 6 samples") and "--precision 2" in lines[1]
    assert lines[2].startswith("noise: 1 config(s) (1x3) have a median less precise than the target")


def test_the_runs_own_target_is_the_bar(synth):
    # Quiet enough for the default 5%, not for a 0.01% target the run asked for.
    rows = frame(config(synth, "a", 12, precision_target_pct=0.01))
    [problem] = noise.flags(rows)["problem"].to_list()
    assert problem.endswith("(target 0.01%)")
