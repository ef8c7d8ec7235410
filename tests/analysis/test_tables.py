"""The question tables on a synthetic sweep with planted differences."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from analysis import query
from tilings import Tiling, enumerate_tilings, get_profile, tiling_geometry


def test_missing_finds_exactly_the_removed_and_failed_configs(tmp_path, synth):
    removed = [(1, 3), (1, 5)]
    synth.write_sweep(tmp_path, families=("1xk",), skip=removed, repeats=2)
    # A failed config is not done: its crop count and tiling are still missing.
    synth.write_part(tmp_path, [synth.failed(config_id="cfg-1x7", tiling_rows=1, tiling_cols=7, crops=8)])
    synth.write_part(tmp_path, [synth.failed(config_id="cfg-1x7", tiling_rows=1, tiling_cols=7, crops=8, attempt=2)])
    lf = query.scan(tmp_path)

    crops = query.missing(lf, list(range(2, 14))).collect()
    assert crops["crops"].to_list() == [4, 6, 8]

    planned = [t for t, _ in enumerate_tilings("molmo-v1", ["1xk"])]
    tilings = query.missing(lf, planned).collect()
    assert list(tilings.iter_rows()) == [(1, 3), (1, 5), (1, 7)]

    ids = [f"cfg-{t.rows}x{t.cols}" for t in planned]
    assert query.missing(lf, ids).collect()["config_id"].to_list() == ["cfg-1x3", "cfg-1x5", "cfg-1x7"]

    frame = pl.DataFrame({"tiling_rows": [1, 1, 2], "tiling_cols": [2, 3, 4], "note": ["a", "b", "c"]})
    assert query.missing(lf, frame).collect()["note"].to_list() == ["b", "c"]

    with pytest.raises(ValueError, match="crop counts"):
        query.missing(lf, [1.5, 2.5])


def test_method_gap_returns_the_planted_bias(tmp_path, synth):
    costs = synth.Costs(sub_bias=2.5)
    records = synth.write_sweep(tmp_path, costs, repeats=5)
    gap = query.method_gap(query.scan(tmp_path)).collect()
    assert gap.height == len({r.config_id for r in records})
    assert gap["llm_gap_ms"].to_numpy() == pytest.approx(costs.sub_bias, abs=1e-9)
    expected_total_gap = costs.sub_bias - costs.projector - costs.lm_head - costs.remainder
    assert gap["total_gap_ms"].to_numpy() == pytest.approx(expected_total_gap, abs=1e-9)
    row = gap.filter(pl.col("tiling") == "2x4").row(0, named=True)
    llm = np.median([r.t_llm_prefill_ms for r in records if r.config_id == "cfg-2x4"])
    assert row["llm_gap_pct"] == pytest.approx(100 * costs.sub_bias / llm)
    assert row["sub_llm_ms"] - row["hook_llm_ms"] == pytest.approx(costs.sub_bias)


def test_additivity_returns_the_planted_remainder(tmp_path, synth):
    costs = synth.Costs(remainder=0.7)
    records = synth.write_sweep(tmp_path, costs, repeats=3)
    add = query.additivity(query.scan(tmp_path)).collect()
    assert add.height == len({r.config_id for r in records})
    assert add["other_ms"].to_numpy() == pytest.approx(costs.remainder, abs=1e-9)
    totals = {cid: np.median([r.t_total_ms for r in records if r.config_id == cid]) for cid in add["config_id"]}
    expected_pct = [100 * costs.remainder / totals[cid] for cid in add["config_id"]]
    assert add["other_pct"].to_numpy() == pytest.approx(expected_pct, rel=1e-3)
    # Larger tilings dilute a constant remainder.
    assert add.sort("crops")["other_pct"][0] > add.sort("crops")["other_pct"][-1]


def test_by_crops_pools_tilings_with_equal_crops_and_grows(tmp_path, synth):
    synth.write_sweep(tmp_path, repeats=3)
    table = query.by_crops(query.scan(tmp_path)).collect()
    profile = get_profile("molmo-v1")
    nine = table.filter(pl.col("crops") == 9).row(0, named=True)
    tokens = sorted(tiling_geometry(Tiling(*t), profile).sequence_tokens for t in [(1, 8), (2, 4)])
    assert nine["tilings"] == "1x8, 2x4" and nine["n_configs"] == 2 and nine["n"] == 6
    assert (nine["tokens_min"], nine["tokens_max"]) == tuple(tokens)
    assert table["crops"].is_sorted()
    assert table["vision_median_ms"].diff().drop_nulls().min() > 0


def test_by_tokens_llm_grows_with_tokens(tmp_path, synth):
    costs = synth.Costs()
    synth.write_sweep(tmp_path, costs, repeats=3)
    table = query.by_tokens(query.scan(tmp_path)).collect()
    assert table[query.TOKENS].is_sorted() and table[query.TOKENS].n_unique() == table.height
    assert table["llm_prefill_median_ms"].diff().drop_nulls().min() > 0
    # The quadratic term makes the per-token cost rise too.
    per_token = table["llm_prefill_per_token_us"]
    assert per_token[-1] > per_token[0]


def test_missing_takes_the_orchestrators_planned_configs(tmp_path, synth):
    from orchestrator.plan import plan
    from orchestrator.spec import SweepSpec

    configs = plan(SweepSpec(families=("1xk",)), get_profile("molmo-v1"))
    done = [c for c in configs if c.tiling.cols % 3]  # 1x3, 1x6, 1x9, 1x12 left out
    rng = np.random.default_rng(0)
    for c in done:
        synth.write_part(tmp_path, [synth.planted(synth.Costs(), crops=c.crops, tokens=c.sequence_tokens, rng=rng,
                                                  repeat=0, config_id=c.config_id, tiling_rows=c.tiling.rows,
                                                  tiling_cols=c.tiling.cols)])
    pending = query.missing(query.scan(tmp_path), configs).collect()
    assert sorted(pending["tiling"].to_list()) == sorted(["1x3", "1x6", "1x9", "1x12"])
    assert set(pending["config_id"]) == {c.config_id for c in configs} - {c.config_id for c in done}
