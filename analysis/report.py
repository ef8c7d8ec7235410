"""`tilesweep report`: figures, tables, a self-contained report.html and report.md.

One section per run: the environment, four figures (stacked stages per tiling,
growth with tokens per family, hook vs subtraction, the fitted latency model)
and the tables (summary, method gap, additivity, coverage of crop counts,
latency model). Every figure is written as a PNG next to the HTML and also
embedded in it, so the HTML can be mailed on its own; the Markdown holds the
same tables, for pasting.
"""

from __future__ import annotations

import base64
import html
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from analysis import latency_model, noise, query, report_plots
from analysis.report_data import coverage, environment, manifests, not_done, planned_configs
from analysis.tables import to_html, to_markdown
from store.manifest import Manifest
from store.parts import damaged
from tilesweep.errors import ResultsError, UsageError
from tilings import get_profile, scheme_from_dict
from tilings.scheme import constant_compute

log = logging.getLogger(__name__)

SUMMARY_COLUMNS = (
    "tiling", "family", "crops", "image_tokens", query.TOKENS, "n", "status",
    *(query.stat_column(s, "median") for s in ("vision", "projector", "llm_prefill", "lm_head", "total")),
    query.stat_column("total", "p5"), query.stat_column("total", "p95"), query.stat_column("llm_sub", "median"), "error",
)
# With --decode-tokens: time to first token and per output token, shown only when measured.
DECODE_COLUMNS = tuple(query.stat_column(s, "median") for s in query.DECODE)


def summary_columns(summary: pl.DataFrame) -> list[str]:
    """`SUMMARY_COLUMNS`, plus the decode medians (before ``error``) when any config has them."""
    decode = [c for c in DECODE_COLUMNS if summary[c].null_count() < summary.height]
    return [*SUMMARY_COLUMNS[:-1], *decode, SUMMARY_COLUMNS[-1]]


_CONFIG = ("tiling", "family", "crops", "image_tokens", query.TOKENS, "n")
GAP_COLUMNS = (*_CONFIG, "hook_llm_ms", "sub_llm_ms", "llm_gap_ms", "llm_gap_pct",
               "hook_total_ms", "sub_total_ms", "total_gap_ms", "total_gap_pct")
ADDITIVITY_COLUMNS = (*_CONFIG, "total_ms", "stages_ms", "other_ms", "other_pct")
# The figures of a run's section, written as ``<kind>-<run>.png``.
IMAGE_KINDS = ("stages", "growth", "methods", "model")
CSV_TABLES = ("summary", "method_gap", "additivity")
PAGES = ("report.html", "report.md")
# Image sizes (height, width) the report predicts with the fitted model.
EXAMPLE_SIZES = ((480, 640), (720, 1280), (1080, 1920), (2048, 2048))


@dataclass(kw_only=True, slots=True)
class Section:
    run_id: str
    title: str
    images: list[tuple[str, str, bytes]] = field(default_factory=list)  # (file name, caption, png)
    tables: list[tuple[str, pl.DataFrame]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _model_tables(model: latency_model.LatencyModel) -> list[tuple[str, pl.DataFrame]]:
    sep = model.separability
    share = lambda v: None if v is None else 100.0 * v  # noqa: E731
    separability = pl.DataFrame([{
        "rank_of_[1,crops,tokens]": sep.rank, "condition": sep.condition, "separable": sep.separable,
        "crops_with_several_token_counts": ", ".join(map(str, sep.shared_crops)),
        "vision_token_share_pct": share(sep.vision_token_share), "llm_crop_share_pct": share(sep.llm_crop_share),
        "why_not": sep.note or None,
    }])
    predictions = pl.DataFrame([{"height": h, "width": w, **model.predict(h, w)} for h, w in EXAMPLE_SIZES])
    return [("Latency model (least squares on per-config medians)", model.table()),
            ("Separability of crops and tokens in this sweep", separability),
            ("Predicted stage times for common image sizes", predictions)]


def _slug(run_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", run_id) or "run"


def control_note(profile: str, manifest: Manifest | None) -> str:
    """`tilings.scheme.constant_compute` of the run's scheme (the manifest's numbers, else the registered name)."""
    try:
        scheme = scheme_from_dict(manifest.profile) if manifest is not None and manifest.profile else None
        return constant_compute(scheme if scheme is not None else get_profile(profile))
    except UsageError:  # a scheme this tilesweep cannot read back: no note
        return ""


def build_section(run_id: str, rows: pl.DataFrame, manifest: Manifest | None) -> Section:
    first = rows.row(0, named=True)
    title = f"{first['model']} · {first['profile']} · {first['gpu_name'] or first['device']}"
    section = Section(run_id=run_id, title=title)
    if control := control_note(first["profile"], manifest):
        section.notes.append(f"constant-compute control: {control}")
    slug = _slug(run_id)
    summary = query.summary(rows).collect()
    measured = summary.filter(pl.col("n") > 0)
    gap, add = query.method_gap(rows).collect(), query.additivity(rows).collect()
    planned = planned_configs(manifest)

    def image(kind: str, caption: str, fig) -> None:
        assert kind in IMAGE_KINDS, kind
        section.images.append((f"{kind}-{slug}.png", caption, report_plots.png_bytes(fig)))

    if measured.height:
        note = report_plots.grouping_note(measured.height)
        image("stages", f"Median stage times per tiling, ordered by tokens{note}",
              report_plots.stacked_stages(measured, title))
        image("growth", "Stage time against tokens, one line per tiling family", report_plots.growth(measured, title))
        image("methods", f"Hook vs subtraction per config{report_plots.grouping_note(gap.height)}",
              report_plots.methods(gap, title))
    else:
        section.notes.append("no config of this run was measured ok; only the failures are listed")
    try:
        model = latency_model.fit(rows)
    except UsageError as exc:
        section.notes.append(f"latency model not fitted: {exc}")
        model = None
    noisy = noise.per_config(rows)  # once: flags and advice both read it
    section.notes += noise.advice(rows, noisy)
    if model is not None and model.separability.note:
        section.notes.append(f"crops vs tokens: {model.separability.note}")
    if model is not None:
        image("model", "The fitted latency model over the per-config medians", report_plots.model_fit(model, title))

    section.tables += [
        ("Environment", environment(manifest, rows)),
        ("Summary (ms; medians unless named)", summary.select(summary_columns(summary))),
        ("Method gap: subtraction vs hook (ms, % of hook). hook_* and sub_* are medians over repeats; each *_gap "
         "is the median of the per-repeat differences (same repeat, both methods), which is not the difference of "
         "the two medians beside it", gap.select(GAP_COLUMNS)),
        ("Additivity: total minus the timed stages (ms, % of total). total_ms and stages_ms are medians over "
         "repeats; other_ms is the median of the per-repeat remainders, not total_ms - stages_ms",
         add.select(ADDITIVITY_COLUMNS)),
        ("Noise: configs with negative times, a median less precise than the target (95% interval half-width, "
         "% of the median), or too few samples for an interval", noise.flags(rows, noisy)),
        ("Coverage of crop counts", coverage(rows, planned)),
    ]
    pending = not_done(rows, planned)
    if pending is not None and pending.height:
        section.tables.append(("Planned configs without an ok result", pending))
    if model is not None:
        section.tables += _model_tables(model)
    return section


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}
table{border-collapse:collapse;font-size:12px;margin:0.5em 0 1.5em}th,td{border:1px solid #ccc;padding:2px 6px}
th{background:#f0f0f0}td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:1em 0}img{max-width:100%}figcaption{font-size:13px;color:#555}.note{color:#a33}
div.scroll{overflow-x:auto;max-width:100%}"""


def render_html(sections: list[Section], source: str) -> str:
    parts = [f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>tilesweep report</title>"
             f"<style>{_CSS}</style></head><body>\n<h1>tilesweep report</h1>\n<p>Results: <code>{html.escape(source)}</code></p>"]
    for s in sections:
        parts.append(f"<h2>Run {html.escape(s.run_id)}: {html.escape(s.title)}</h2>")
        parts += [f'<p class="note">{html.escape(n)}</p>' for n in s.notes]
        for name, caption, png in s.images:
            data = base64.b64encode(png).decode()
            parts.append(f'<figure><img src="data:image/png;base64,{data}" data-file="{name}" alt="{html.escape(caption)}">'
                         f'<figcaption>{html.escape(caption)} (<a href="{name}">{name}</a>)</figcaption></figure>')
        for heading, table in s.tables:
            # Wide tables scroll inside their own box instead of widening the page.
            parts.append(f'<h3>{html.escape(heading)}</h3>\n<div class="scroll">\n{to_html(table)}</div>')
    parts.append("</body></html>\n")
    return "\n".join(parts)


def render_markdown(sections: list[Section], source: str) -> str:
    parts = [f"# tilesweep report\n\nResults: `{source}`\n"]
    for s in sections:
        parts.append(f"## Run {s.run_id}: {s.title}\n")
        parts += [f"> {n}\n" for n in s.notes]
        parts += [f"![{caption}]({name})\n" for name, caption, _ in s.images]
        parts += [f"### {heading}\n\n{to_markdown(table)}" for heading, table in s.tables]
    return "\n".join(parts)


def build(results: str | Path | list, out_dir: str | Path, *, run_ids: list[str] | None = None) -> list[Path]:
    """Write the report for `results` into `out_dir`; returns the files written.

    Raises:
        UsageError: `out_dir` is a file.
        ResultsError: `results` does not exist, holds no rows or a damaged part.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"report directory {str(out)!r} exists and is a file; pass a directory (it is created if missing)")
    lf = query.scan_results(results)
    if run_ids:
        lf = lf.filter(pl.col("run_id").is_in(run_ids))
    try:
        rows = lf.collect()
    except pl.exceptions.ComputeError as exc:
        raise damaged(exc, results) from None
    if rows.height == 0:
        wanted = f" for run(s) {', '.join(run_ids)}" if run_ids else ""
        raise ResultsError(f"no result rows under {str(results)!r}{wanted}; run `tilesweep run` first or check the path")
    found = manifests(results)
    sections = [
        build_section(run_id, run_rows, found.get(run_id))
        for (run_id,), run_rows in rows.sort("run_id").group_by("run_id", maintain_order=True)
    ]
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for s in sections:
        for name, _, png in s.images:
            (out / name).write_bytes(png)
            written.append(out / name)
    for name in CSV_TABLES:
        table = getattr(query, name)(rows)
        path = out / f"{name}.csv"
        table.collect().write_csv(path)
        written.append(path)
    for name, text in zip(PAGES, (render_html(sections, str(results)), render_markdown(sections, str(results)))):
        (out / name).write_text(text, encoding="utf-8")
        written.append(out / name)
    stale = remove_stale(out, written)
    log.info("report written to %s (%d files; %d left from an earlier report removed)", out, len(written), len(stale))
    return written


def owned(out: Path) -> list[Path]:
    """The files in `out` that a report writes (its figures, tables and pages), whichever report wrote them."""
    names = {*PAGES, *(f"{t}.csv" for t in CSV_TABLES)}
    found = [p for p in out.iterdir() if p.is_file() and (
        p.name in names or (p.suffix == ".png" and p.name.split("-", 1)[0] in IMAGE_KINDS and "-" in p.name))]
    return sorted(found)


def remove_stale(out: Path, written: list[Path]) -> list[Path]:
    """Delete the report files in `out` that this report did not write (figures of runs no longer shown).

    An earlier report into the same directory would otherwise leave its figures
    beside the new ones; files a report does not write are left alone.
    """
    keep = {p.name for p in written}
    stale = [p for p in owned(out) if p.name not in keep]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale
