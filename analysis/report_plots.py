"""The report's figures, drawn with matplotlib's object API on the Agg canvas.

No pyplot: figures are plain `Figure` objects, so drawing touches no global
backend state and works headless. Each function takes polars frames from
`analysis.query` (one run) and returns a `Figure`; `png_bytes` renders it.

Every figure stays readable at any sweep size, and its width is bounded. The
per-config bar charts (stages, methods) draw one bar per config up to
`MAX_BARS` configs; beyond that, one bar per group of configs with neighbouring
token counts (`bars`): the x axis of both figures is the token count already, so
grouping along it keeps what the figure shows (how each stage grows with tokens)
while a bar per config of a 1,000-config sweep would be a 40,000 px strip of
unreadable labels. Faceting by family would not bound the width (one family can
hold thousands of sizes), and paging would hide the shape across pages. The
per-family lines of the growth figure are grouped the same way past
`MAX_POINTS` points per family. Captions say when configs were grouped
(`grouping_note`).
"""

from __future__ import annotations

import io

import numpy as np
import polars as pl
from matplotlib.figure import Figure

from analysis import query
from analysis.latency_model import LatencyModel

# One colour per stage, the same in every figure.
COLORS = {"vision": "#4C72B0", "projector": "#DD8452", "llm_prefill": "#55A868", "other": "#8C8C8C",
          "lm_head": "#C44E52", "total": "#333333", "llm_sub": "#8172B3"}
LABELS = {"vision": "vision encoder", "projector": "projector", "llm_prefill": "LLM prefill",
          "other": "other (LM head, glue)", "lm_head": "LM head", "total": "total forward"}
TOKENS_LABEL = "image tokens in the sequence"
DPI = 110


def png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


# Past this many configs a bar chart draws one bar per group of neighbouring token counts.
MAX_BARS = 40
# Past this many points per family the growth figure groups neighbouring token counts.
MAX_POINTS = 60


def token_groups(tokens: pl.Series, groups: int) -> pl.Series:
    """Per value of `tokens`, the index of its group: at most `groups` groups of neighbouring distinct token counts.

    Equal token counts always share a group, and each group holds about as many
    distinct token counts as the others (so sparse and dense regions of the axis
    both stay visible).
    """
    rank = tokens.rank("dense").cast(pl.Int64) - 1
    distinct = int(rank.max()) + 1 if tokens.len() else 0
    return (rank * min(groups, max(distinct, 1)) // max(distinct, 1)).alias("group")


def grouped(n_configs: int) -> bool:
    return n_configs > MAX_BARS


def grouping_note(n_configs: int) -> str:
    """What the caption of a per-config bar chart adds when its configs were grouped (empty when not)."""
    if not grouped(n_configs):
        return ""
    return (f"; {n_configs} configs drawn as at most {MAX_BARS} bars of neighbouring token counts: each bar is the "
            "median over its configs, whiskers p5-p95 over them")


def bars(s: pl.DataFrame, values: list[str], spread: str | None = None) -> pl.DataFrame:
    """The bars of a per-config chart: ``label``, `values` and, with `spread`, ``lo``/``hi`` whiskers.

    Up to `MAX_BARS` configs: one bar per config, ordered by tokens, labelled by
    tiling and tokens; the whiskers are the config's own total p5 and p95. Past
    that: one bar per group of neighbouring token counts (`token_groups`), each
    value the median over the group's configs, the whiskers p5 and p95 of
    `spread` over them, labelled by the token range and the number of configs.
    """
    s = s.sort(query.TOKENS)
    if not grouped(s.height):
        sep = "  " if s.height > 20 else "\n"
        out = s.select(pl.concat_str([pl.col("tiling"), pl.col(query.TOKENS).cast(pl.String)], separator=sep)
                       .alias("label"), *values)
        if spread is not None:
            out = out.with_columns(s[query.stat_column("total", "p5")].alias("lo"),
                                   s[query.stat_column("total", "p95")].alias("hi"))
        return out
    tokens = pl.col(query.TOKENS)
    aggs = [pl.col(v).median() for v in values]
    if spread is not None:
        aggs += [pl.col(spread).quantile(0.05, interpolation="linear").alias("lo"),
                 pl.col(spread).quantile(0.95, interpolation="linear").alias("hi")]
    out = (s.with_columns(token_groups(s[query.TOKENS], MAX_BARS))
           .group_by("group").agg(tokens.min().alias("t0"), tokens.max().alias("t1"), pl.len().alias("n"), *aggs)
           .sort("group"))
    label = (pl.when(pl.col("t0") == pl.col("t1")).then(pl.col("t0").cast(pl.String))
             .otherwise(pl.concat_str([pl.col("t0"), pl.col("t1")], separator="-")))
    return out.select(pl.concat_str([label, pl.lit(" ("), pl.col("n").cast(pl.String), pl.lit(")")])
                      .alias("label"), *values, *(["lo", "hi"] if spread is not None else []))


def _set_bar_ticks(ax, b: pl.DataFrame, n_configs: int) -> None:
    # Two lines (tiling over tokens) while they fit side by side; one rotated line beyond.
    rotate = b.height > 20
    ax.set_xticks(np.arange(b.height), b["label"].to_list(), fontsize=7 if b.height > 12 else 8,
                  rotation=90 if rotate else 0)
    if grouped(n_configs):
        ax.set_xlabel(f"{TOKENS_LABEL} (configs in the bar); {n_configs} configs in groups of neighbouring "
                      "token counts")
    else:
        ax.set_xlabel(f"tiling (rows x cols) and {TOKENS_LABEL}, ordered by tokens")


def _width(bars_drawn: int, per_bar: float, least: float) -> float:
    return max(least, per_bar * bars_drawn + 3)


def stacked_stages(s: pl.DataFrame, title: str) -> Figure:
    """Median stage times per tiling (or per group of token counts, see `bars`) as stacked bars, ordered by tokens.

    Whiskers: the total's p5-p95 (of the config's repeats, or over the group's configs).
    """
    med_cols = {k: query.stat_column(k, "median") for k in ("vision", "projector", "llm_prefill", "total")}
    b = bars(s.with_columns(pl.col(c).fill_null(0) for c in med_cols.values()), list(med_cols.values()),
             spread=med_cols["total"])
    med = {k: b[c].to_numpy() for k, c in med_cols.items()}
    parts = {
        "vision": med["vision"], "projector": med["projector"], "llm_prefill": med["llm_prefill"],
        # Whatever the timed stages do not cover; clipped at zero so a stacked bar never goes down.
        "other": np.clip(med["total"] - med["vision"] - med["projector"] - med["llm_prefill"], 0, None),
    }
    fig = Figure(figsize=(_width(b.height, 0.45, 7.0), 4.8))
    ax = fig.add_subplot()
    x, bottom = np.arange(b.height), np.zeros(b.height)
    for stage, values in parts.items():
        ax.bar(x, values, bottom=bottom, color=COLORS[stage], label=LABELS[stage], width=0.75)
        bottom += values
    lo, hi = b["lo"].to_numpy(), b["hi"].to_numpy()
    ax.errorbar(x, med["total"], yerr=[np.clip(med["total"] - lo, 0, None), np.clip(hi - med["total"], 0, None)],
                fmt="none", ecolor="black", capsize=2, lw=0.8,
                label="total forward, p5-p95" + (" over the configs" if grouped(s.height) else ""))
    _set_bar_ticks(ax, b, s.height)
    ax.set_ylabel("median time (ms)")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return fig


def growth(s: pl.DataFrame, title: str) -> Figure:
    """Stage time against tokens, one line per tiling family, whiskers p5-p95.

    Configs of one family with the same token count (several image sizes) are one
    point, the median of their medians; past `MAX_POINTS` points a family's
    neighbouring token counts are grouped too (`token_groups`), at their median token count.
    """
    fig = Figure(figsize=(11, 7.5))
    axes = fig.subplots(2, 2).ravel()
    families = sorted(s["family"].unique().to_list())
    for ax, stage in zip(axes, ("vision", "projector", "llm_prefill", "total")):
        cols = [query.stat_column(stage, q) for q in ("median", "p5", "p95")]
        for i, family in enumerate(families):
            f = s.filter(pl.col("family") == family)
            f = (f.with_columns(token_groups(f[query.TOKENS], MAX_POINTS))
                 .group_by("group").agg(pl.col(query.TOKENS).median(), *(pl.col(c).median() for c in cols))
                 .sort(query.TOKENS))
            med, lo, hi = (f[c].to_numpy() for c in cols)
            ax.errorbar(f[query.TOKENS].to_numpy(), med, yerr=[med - lo, hi - med], marker="o", ms=4,
                        capsize=2, lw=1.2, color=f"C{i}", label=family or "(none)")
        ax.set_title(LABELS[stage])
        ax.set_xlabel(TOKENS_LABEL)
        ax.set_ylabel("median time (ms)")
        ax.grid(alpha=0.3)
    axes[0].legend(title="tiling family", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def methods(gap: pl.DataFrame, title: str) -> Figure:
    """Hook vs subtraction per config (or per group of token counts, see `bars`): LLM time side by side, and both gaps in percent."""
    b = bars(gap, ["hook_llm_ms", "sub_llm_ms", "llm_gap_pct", "total_gap_pct"])
    x, w = np.arange(b.height), 0.38
    fig = Figure(figsize=(_width(b.height, 0.5, 8.0), 8))
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.bar(x - w / 2, b["hook_llm_ms"].to_numpy(), w, color=COLORS["llm_prefill"], label="hook: first to last LLM block")
    top.bar(x + w / 2, b["sub_llm_ms"].to_numpy(), w, color=COLORS["llm_sub"], label="subtraction: prefill step - vision alone")
    top.set_ylabel("LLM prefill, median (ms)")
    top.set_title("LLM prefill time by method")
    top.legend(fontsize=8, loc="upper left")
    bottom.bar(x - w / 2, b["llm_gap_pct"].to_numpy(), w, color=COLORS["llm_sub"], label="LLM: subtraction vs hook")
    bottom.bar(x + w / 2, b["total_gap_pct"].to_numpy(), w, color=COLORS["total"],
               label="total: vision + subtraction LLM vs hook total")
    bottom.axhline(0, color="black", lw=0.8)
    bottom.set_ylabel("gap (% of the hook value)")
    bottom.set_title("How far the subtraction method lands from the hook method")
    bottom.legend(fontsize=8, loc="best")
    for ax in (top, bottom):
        ax.grid(axis="y", alpha=0.3)
    _set_bar_ticks(bottom, b, gap.height)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def model_fit(model: LatencyModel, title: str) -> Figure:
    """The fitted latency model over the per-config medians, and measured vs modelled totals."""
    r = model.residuals
    fig = Figure(figsize=(14, 4.6))
    ax_v, ax_l, ax_t = fig.subplots(1, 3)
    families = sorted(r["family"].unique().to_list())
    for i, family in enumerate(families):
        f = r.filter(pl.col("family") == family)
        kw = dict(color=f"C{i}", s=18, label=family or "(none)", zorder=3)
        ax_v.scatter(f[model.vision.x], f["vision_ms"], **kw)
        ax_l.scatter(f["tokens"], f["llm_prefill_ms"], **kw)
        ax_t.scatter(f["total_fit_ms"], f["total_ms"], **kw)
    crops = np.linspace(r[model.vision.x].min(), r[model.vision.x].max(), 50)
    tokens = np.linspace(r["tokens"].min(), r["tokens"].max(), 100)
    ax_v.plot(crops, model.vision(crops), color="black", lw=1.2, label=f"fit, R² = {model.vision.r2:.4f}")
    ax_l.plot(tokens, model.llm_prefill(tokens), color="black", lw=1.2, label=f"fit, R² = {model.llm_prefill.r2:.4f}")
    lim = [min(r["total_fit_ms"].min(), r["total_ms"].min()), max(r["total_fit_ms"].max(), r["total_ms"].max())]
    ax_t.plot(lim, lim, color="black", lw=1, ls="--", label="measured = modelled")
    x_label = ("encoder patches (the image has no crops)" if model.vision.x == "patches"
               else "crops (incl. the global crop)")
    ax_v.set(xlabel=x_label, ylabel="vision, median (ms)", title=model.vision.formula())
    ax_l.set(xlabel=TOKENS_LABEL, ylabel="LLM prefill, median (ms)", title=model.llm_prefill.formula())
    ax_t.set(xlabel="modelled total: vision + LLM + other (ms)", ylabel="measured total, median (ms)",
             title="total forward: measured vs modelled")
    for ax in (ax_v, ax_l, ax_t):
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, title="tiling family", title_fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
