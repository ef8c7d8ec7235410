"""The latency model recovers planted costs, predicts through tilings, and reports separability."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from analysis import latency_model, query
from tilings import geometry

# Realistic proportions: LLM prefill dominated by its linear term, attention ~40% at the top.
COSTS = dict(a=4.0, b=6.0, c=8.0, d=0.03, e=1.5e-5, noise=0.005)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, synth):
    root = tmp_path_factory.mktemp("sweep")
    costs = synth.Costs(**COSTS)
    records = synth.write_sweep(root, costs, families=("1xk", "2xk"), repeats=9, seed=3)
    return costs, records, query.scan(root)


def test_fit_recovers_planted_coefficients_within_5_percent(sweep):
    costs, records, lf = sweep
    model = latency_model.fit(lf)
    assert model.vision.terms == ("1", "crops") and model.llm_prefill.terms == ("1", "tokens", "tokens^2")
    assert model.vision.coef == pytest.approx((costs.a, costs.b), rel=0.05)
    assert model.llm_prefill.coef == pytest.approx((costs.c, costs.d, costs.e), rel=0.05)
    # other = projector + lm_head + remainder, constant in tokens
    assert model.other.coef[0] == pytest.approx(costs.projector + costs.lm_head + costs.remainder, rel=0.05)
    assert abs(model.other.coef[1]) < 1e-4
    assert model.vision.r2 > 0.99 and model.llm_prefill.r2 > 0.99
    assert (model.model, model.profile, model.device) == ("tiny-molmo2", "molmo-v1", "cpu")


def test_residuals_one_row_per_config_and_small(sweep):
    _, records, lf = sweep
    model = latency_model.fit(lf)
    res = model.residuals
    assert res.height == len({r.config_id for r in records}) == model.vision.n
    assert np.allclose(res["vision_ms"] - res["vision_fit_ms"], res["vision_resid_ms"])
    # Noise is 0.5% per sample, so no config's median is off the truth by more than ~2%.
    assert (res["llm_prefill_resid_ms"].abs() / res["llm_prefill_ms"]).max() < 0.02
    assert (res["total_resid_ms"].abs() / res["total_ms"]).max() < 0.02


def test_predict_goes_through_tilings_for_unmeasured_sizes(sweep):
    costs, _, lf = sweep
    model = latency_model.fit(lf)
    for height, width in [(500, 700), (1000, 1000), (300, 2500)]:
        g = geometry(height, width, "molmo-v1")
        got = model.predict(height, width)
        assert (got["tiling_rows"], got["tiling_cols"], got["crops"]) == (g.tiling.rows, g.tiling.cols, g.crops)
        t = g.sequence_tokens
        vision = costs.a + costs.b * g.crops
        llm = costs.c + costs.d * t + costs.e * t**2
        total = vision + llm + costs.projector + costs.lm_head + costs.remainder
        assert got["vision_ms"] == pytest.approx(vision, rel=0.02)
        assert got["llm_prefill_ms"] == pytest.approx(llm, rel=0.02)
        assert got["total_ms"] == pytest.approx(total, rel=0.02)
    # A bigger image never predicts a faster forward.
    assert model.predict(1000, 1000)["total_ms"] > model.predict(336, 336)["total_ms"]


def test_one_family_is_not_separable_two_families_are(tmp_path, synth):
    costs = synth.Costs(**COSTS)
    synth.write_sweep(tmp_path / "one", costs, families=("1xk",), repeats=3)
    synth.write_sweep(tmp_path / "two", costs, families=("1xk", "2xk"), repeats=3)
    one = latency_model.fit(query.scan(tmp_path / "one")).separability
    two = latency_model.fit(query.scan(tmp_path / "two")).separability
    assert one.rank == 2 and not one.separable and one.shared_crops == ()
    assert one.vision_token_share is None
    assert two.rank == 3 and two.separable and two.condition < latency_model.MAX_CONDITION
    assert 9 in two.shared_crops  # 1x8 and 2x4
    # Planted: vision per crop only, LLM per token only.
    assert two.vision_token_share < 0.05 and two.llm_crop_share < 0.05


def test_separable_sweep_exposes_a_vision_cost_per_token(tmp_path, synth):
    costs = synth.Costs(**COSTS, vision_per_token=0.02)
    synth.write_sweep(tmp_path, costs, families=("1xk", "2xk"), repeats=5)
    sep = latency_model.fit(query.scan(tmp_path)).separability
    assert sep.separable and sep.vision_token_share > 0.2


def test_fit_refuses_mixed_models_and_too_few_configs(tmp_path, synth):
    synth.write_sweep(tmp_path, families=("1xk",), repeats=2, run_id="run-a")
    synth.write_sweep(tmp_path, families=("1xk",), repeats=2, run_id="run-b", profile="molmo2")
    with pytest.raises(ValueError, match="molmo2"):
        latency_model.fit(query.scan(tmp_path))
    only = query.scan(tmp_path).filter(pl.col("profile") == "molmo2")
    assert latency_model.fit(only).profile == "molmo2"
    two = only.filter(pl.col("tiling_cols") <= 2)
    with pytest.raises(ValueError, match="need at least 3"):
        latency_model.fit(two)


def test_table_lists_each_fit(sweep):
    table = latency_model.fit(sweep[2]).table()
    assert table["stage"].to_list() == ["vision", "llm_prefill", "other"]
    assert table["formula"][1].startswith("llm_prefill ≈ ") and "tokens^2" in table["formula"][1]


def test_formula_writes_negative_terms_with_a_minus():
    fit = latency_model.StageFit(stage="llm_prefill", x="tokens", terms=("1", "tokens", "tokens^2"),
                                 coef=(-1.5, -0.02, 3e-5), r2=1.0, rmse_ms=0.0, n=3)
    assert fit.formula() == "llm_prefill ≈ -1.5 - 0.02·tokens + 3e-05·tokens^2 ms"
    assert fit(100.0) == pytest.approx(-1.5 - 2.0 + 0.3)


@pytest.mark.parametrize(
    ("profile", "families", "separable"),
    [("molmo-v1", ["1xk"], False), ("molmo-v1", ["kx1"], False), ("molmo2", ["1xk"], False),
     ("molmo-v1", ["1xk", "2xk"], True), ("molmo2", ["1xk", "2xk"], True), ("molmo2", ["all"], True)],
)
def test_plan_separability_from_tilings_alone(profile, families, separable):
    sep = latency_model.plan_separability(profile, families)
    assert sep.separable is separable
    assert sep.vision_token_share is None and sep.llm_crop_share is None
    if separable:
        assert 9 in sep.shared_crops  # 1x8 and 2x4 (both profiles)
    else:
        assert sep.condition > latency_model.MAX_CONDITION


@pytest.mark.parametrize("profile, families, separable, note", [
    ("internvl3", None, False, "fixed linear function of the crops"),  # 256 tokens per crop, + 2
    ("qwen2.5-vl", None, False, "never crops"),  # one image: tokens are the only axis
    ("llava-onevision", None, True, ""),  # unpadding and the anyres cap decouple tokens from crops
    ("llava-onevision", ["unpad"], True, ""),  # same crops, fewer tokens
    ("molmo2", ["1xk", "2xk", "kx1"], True, ""),
])
def test_separability_is_per_scheme_and_says_why_not(profile, families, separable, note):
    sep = latency_model.plan_separability(profile, families)
    assert sep.separable is separable
    assert (note in sep.note) if note else sep.note == ""
