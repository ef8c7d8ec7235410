"""The report's figures at sweep sizes where one bar per config cannot be read: bounded width, grouped honestly."""

from __future__ import annotations

import io
import re

import numpy as np
import polars as pl
from PIL import Image

from analysis import query, report, report_plots

# A bar per config of a 1,000-config sweep was 38,707 px wide; grouped figures stay within a screen or two.
MAX_WIDTH_PX = 3000


def _summary(n: int) -> pl.DataFrame:
    """A per-config summary frame of `n` configs, each with its own token count, two families."""
    rng = np.random.default_rng(0)
    tokens = np.arange(n) * 7 + 300
    vision = 2.0 + 0.01 * tokens + rng.normal(0, 0.1, n)
    llm = 1.0 + 0.02 * tokens + rng.normal(0, 0.1, n)
    total = vision + llm + 1.5
    frame = {
        "tiling": [f"1x{i}" for i in range(n)], "family": ["1xk", "2xk"] * (n // 2), query.TOKENS: tokens,
        "hook_llm_ms": llm, "sub_llm_ms": llm + 0.5, "llm_gap_pct": 50 / llm, "total_gap_pct": 10 / total,
    }
    for stage, med in (("vision", vision), ("projector", np.full(n, 0.8)), ("llm_prefill", llm), ("total", total)):
        frame[query.stat_column(stage, "median")] = med
        frame[query.stat_column(stage, "p5")] = med * 0.98
        frame[query.stat_column(stage, "p95")] = med * 1.02
    return pl.DataFrame(frame)


def _width(fig) -> int:
    return Image.open(io.BytesIO(report_plots.png_bytes(fig))).width


def test_grouped_bars_cover_every_config_once_in_token_order_with_group_medians():
    s = _summary(1000).sample(fraction=1.0, shuffle=True, seed=1)  # the order given must not matter
    total = query.stat_column("total", "median")
    b = report_plots.bars(s, [total], spread=total)
    assert b.height == report_plots.MAX_BARS
    spans = [tuple(int(t) for t in re.match(r"(\d+)-(\d+) \((\d+)\)", label).groups()) for label in b["label"]]
    assert sum(n for _, _, n in spans) == 1000
    assert all(hi0 < lo1 for (_, hi0, _), (lo1, _, _) in zip(spans, spans[1:]))  # contiguous, increasing
    for (lo, hi, n), value, whisker in zip(spans, b[total], b["hi"]):
        inside = s.filter(pl.col(query.TOKENS).is_between(lo, hi))[total]
        assert inside.len() == n and value == inside.median() and whisker <= inside.max()
    # Up to MAX_BARS configs nothing is grouped: a bar per config, labelled by its tiling.
    few = report_plots.bars(s.head(report_plots.MAX_BARS), [total])
    assert few.height == report_plots.MAX_BARS and all("1x" in label for label in few["label"])


def test_equal_token_counts_always_share_a_group():
    tokens = pl.Series([5, 5, 9, 9, 9, 12, 40, 40, 41] * 20)
    groups = report_plots.token_groups(tokens, 3)
    pairs = pl.DataFrame({"t": tokens, "g": groups}).unique()
    assert pairs["t"].n_unique() == pairs.height  # one group per token count
    assert pairs["g"].n_unique() == 3


def test_every_figure_of_a_large_sweep_has_a_bounded_width():
    s = _summary(400)  # one bar per config would be about 20,000 px wide
    for fig in (report_plots.stacked_stages(s, "t"), report_plots.methods(s, "t"), report_plots.growth(s, "t")):
        assert 500 < _width(fig) <= MAX_WIDTH_PX
    assert report_plots.grouping_note(400).startswith("; 400 configs drawn as at most 40 bars")
    assert report_plots.grouping_note(report_plots.MAX_BARS) == ""


def test_a_report_of_a_large_synthetic_sweep_has_bounded_figures_and_says_it_grouped(tmp_path):
    from benchmarks.scale import ScaleSize, write_run

    write_run(tmp_path / "results", ScaleSize(configs=100, repeats=6), run_id="big")
    written = report.build(tmp_path / "results", tmp_path / "out")
    pngs = [p for p in written if p.suffix == ".png"]
    assert len(pngs) == 4
    for png in pngs:
        assert Image.open(png).width <= MAX_WIDTH_PX, png.name
    html = (tmp_path / "out" / "report.html").read_text()
    captions = re.findall(r"<figcaption>([^<]*)", html)
    assert len(captions) == 4
    assert sum("100 configs drawn as at most 40 bars of neighbouring token counts" in c for c in captions) == 2
    assert pl.read_csv(tmp_path / "out" / "summary.csv").height == 100  # the tables keep every config
