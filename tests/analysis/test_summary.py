"""`summary`: statistics per config over the scan."""

from __future__ import annotations

import numpy as np
import pytest

from analysis import query


def _ok(synth, n=3, **fields):
    rng = np.random.default_rng(0)
    return [synth.planted(synth.Costs(), crops=fields.pop("crops", 2), tokens=120, rng=rng, repeat=i, **fields)
            for i in range(n)]


def test_summary_statistics_match_numpy_and_failures_have_n_zero(tmp_path, synth):
    rows = _ok(synth, config_id="good", n=21, crops=5)
    synth.write_part(tmp_path, rows)
    synth.write_part(tmp_path, [synth.failed(config_id="bad", crops=9)])
    s = query.summary(query.scan(tmp_path)).collect()

    assert s.height == 2
    assert s["config_id"].to_list() == ["good", "bad"]  # sorted by crops
    good = s.row(0, named=True)
    llm = np.array([r.t_llm_prefill_ms for r in rows])
    assert good["n"] == 21 and good["crops"] == 5 and good["status"] == "ok"
    assert good["llm_prefill_median_ms"] == pytest.approx(np.median(llm))
    assert good["llm_prefill_mean_ms"] == pytest.approx(llm.mean())
    assert good["llm_prefill_std_ms"] == pytest.approx(llm.std(ddof=1))
    assert good["llm_prefill_p5_ms"] == pytest.approx(np.percentile(llm, 5))
    assert good["llm_prefill_p95_ms"] == pytest.approx(np.percentile(llm, 95))
    sub = np.array([r.t_llm_sub_ms for r in rows])
    assert good["llm_sub_median_ms"] == pytest.approx(np.median(sub))

    bad = s.row(1, named=True)
    assert bad["status"] == "failed" and bad["n"] == 0
    assert bad["error"] == "CUDA out of memory"
    assert bad["vision_median_ms"] is None
    for stage in query.STAGES:
        for stat in query.STATS:
            assert query.stat_column(stage, stat) in s.columns
