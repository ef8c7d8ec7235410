"""The report's figures, drawn with matplotlib's object API on the Agg canvas.

No pyplot: figures are plain `Figure` objects, so drawing touches no global
backend state and works headless. Each function takes polars frames from
`analysis.query` (one run) and returns a `Figure`; `png_bytes` renders it.
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


def _set_config_ticks(ax, s: pl.DataFrame) -> None:
    # Two lines (tiling over tokens) while they fit side by side; one rotated line beyond.
    rotate = s.height > 20
    sep = "  " if rotate else "\n"
    labels = [f"{t}{sep}{n}" for t, n in zip(s["tiling"], s[query.TOKENS])]
    ax.set_xticks(np.arange(s.height), labels, fontsize=7 if s.height > 12 else 8, rotation=90 if rotate else 0)
    ax.set_xlabel(f"tiling (rows x cols) and {TOKENS_LABEL}, ordered by tokens")


def stacked_stages(s: pl.DataFrame, title: str) -> Figure:
    """Median stage times per tiling as stacked bars, ordered by tokens; whiskers: total p5-p95."""
    s = s.sort(query.TOKENS)
    med = {k: s[query.stat_column(k, "median")].fill_null(0).to_numpy() for k in ("vision", "projector", "llm_prefill", "total")}
    parts = {
        "vision": med["vision"], "projector": med["projector"], "llm_prefill": med["llm_prefill"],
        # Whatever the timed stages do not cover; clipped at zero so a stacked bar never goes down.
        "other": np.clip(med["total"] - med["vision"] - med["projector"] - med["llm_prefill"], 0, None),
    }
    fig = Figure(figsize=(max(7.0, 0.45 * s.height + 3), 4.8))
    ax = fig.add_subplot()
    x, bottom = np.arange(s.height), np.zeros(s.height)
    for stage, values in parts.items():
        ax.bar(x, values, bottom=bottom, color=COLORS[stage], label=LABELS[stage], width=0.75)
        bottom += values
    lo, hi = (s[query.stat_column("total", q)].to_numpy() for q in ("p5", "p95"))
    ax.errorbar(x, med["total"], yerr=[med["total"] - lo, hi - med["total"]], fmt="none", ecolor="black",
                capsize=2, lw=0.8, label="total forward, p5-p95")
    _set_config_ticks(ax, s)
    ax.set_ylabel("median time (ms)")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return fig


def growth(s: pl.DataFrame, title: str) -> Figure:
    """Stage time against tokens, one line per tiling family, whiskers p5-p95."""
    fig = Figure(figsize=(11, 7.5))
    axes = fig.subplots(2, 2).ravel()
    families = sorted(s["family"].unique().to_list())
    for ax, stage in zip(axes, ("vision", "projector", "llm_prefill", "total")):
        for i, family in enumerate(families):
            f = s.filter(pl.col("family") == family).sort(query.TOKENS)
            med, lo, hi = (f[query.stat_column(stage, q)].to_numpy() for q in ("median", "p5", "p95"))
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
    """Hook vs subtraction per config: LLM time side by side, and both gaps in percent."""
    gap = gap.sort(query.TOKENS)
    x, w = np.arange(gap.height), 0.38
    fig = Figure(figsize=(max(8.0, 0.5 * gap.height + 3), 8))
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.bar(x - w / 2, gap["hook_llm_ms"].to_numpy(), w, color=COLORS["llm_prefill"], label="hook: first to last LLM block")
    top.bar(x + w / 2, gap["sub_llm_ms"].to_numpy(), w, color=COLORS["llm_sub"], label="subtraction: prefill step - vision alone")
    top.set_ylabel("LLM prefill, median (ms)")
    top.set_title("LLM prefill time by method")
    top.legend(fontsize=8, loc="upper left")
    bottom.bar(x - w / 2, gap["llm_gap_pct"].to_numpy(), w, color=COLORS["llm_sub"], label="LLM: subtraction vs hook")
    bottom.bar(x + w / 2, gap["total_gap_pct"].to_numpy(), w, color=COLORS["total"],
               label="total: vision + subtraction LLM vs hook total")
    bottom.axhline(0, color="black", lw=0.8)
    bottom.set_ylabel("gap (% of the hook value)")
    bottom.set_title("How far the subtraction method lands from the hook method")
    bottom.legend(fontsize=8, loc="best")
    for ax in (top, bottom):
        ax.grid(axis="y", alpha=0.3)
    _set_config_ticks(bottom, gap)
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
