"""Run-level tables of the report that join results with the run's manifest and `tilings`.

Coverage of crop counts (possible, planned, measured ok, failed), the planned
configs still without an ok result, and the run's environment.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

import tilings
from analysis import query
from store.fs import ObjectPath, location
from store.manifest import Manifest
from store.manifest import read as read_manifest
from store.parts import MANIFEST
from tilesweep.errors import ResultsError, UsageError

log = logging.getLogger(__name__)

PROVENANCE = ("device", "gpu_name", "gpu_driver", "cuda_version", "dtype", "attn_implementation", "torch_version",
              "transformers_version", "tilesweep_version", "hostname")
_PLANNED = {"config_id": pl.String, "tiling": pl.String, "family": pl.String, "crops": pl.Int64,
            "image_tokens": pl.Int64, "sequence_tokens": pl.Int64}


def manifests(results: str | Path | Sequence[str | Path]) -> dict[str, Manifest]:
    """``{run_id: manifest}`` for every ``manifest.json`` under `results`, local or a URI (the run directory's
    name is the key)."""
    single = isinstance(results, (str, Path, ObjectPath))
    paths = [location(results)] if single else [location(p) for p in results]
    found: dict[str, Manifest] = {}
    for path in paths:
        if path.is_file():
            path = path.parent
        for file in (*path.glob(MANIFEST), *path.glob(f"*/{MANIFEST}")):
            try:
                manifest = read_manifest(file)
            except ResultsError as exc:
                # A broken manifest must not hide the results themselves.
                log.warning("ignoring %s", exc)
                continue
            if manifest is not None:
                found[file.parent.name] = manifest
    return found


def planned_configs(manifest: Manifest | None) -> pl.DataFrame | None:
    """The configs the run planned (the manifest's ``planned``), or None when no plan is known."""
    if manifest is None or not manifest.planned:
        return None
    rows = [{k: getattr(entry, k) for k in _PLANNED} for entry in manifest.planned.values()]
    return pl.DataFrame(rows, schema=_PLANNED)


def not_done(rows: pl.DataFrame, planned: pl.DataFrame | None) -> pl.DataFrame | None:
    """Planned configs without an ok result (an anti-join on config id), or None without a plan."""
    if planned is None:
        return None
    return query.missing(rows, planned).collect().sort("crops", "sequence_tokens")


def _possible(profile_name: str, measured_crops: list[int]) -> tuple[list[int], list[str]]:
    """Every crop count the profile can produce and the tilings giving each."""
    try:
        profile = tilings.get_profile(profile_name)
    except UsageError:  # a profile built from a config file: only what was measured is known
        return measured_crops, [""] * len(measured_crops)
    if profile.kind == tilings.BUDGET:  # no crops to choose: one image per config
        return measured_crops, ["any token grid"] * len(measured_crops)
    crops = tilings.crop_counts(profile)
    return crops, [", ".join(str(t) for t in tilings.tilings_for_crops(c, profile)) for c in crops]


def coverage(rows: pl.DataFrame, planned: pl.DataFrame | None = None) -> pl.DataFrame:
    """Per profile and crop count: possible tilings, planned, measured ok, failed, and a status.

    Status: ``ok`` (some tiling with this crop count measured ok), ``failed``
    (only failures), ``missing`` (planned, or no plan known, and not measured),
    ``not planned``.
    """
    frames = []
    for (profile_name,), prof_rows in rows.group_by("profile", maintain_order=True):
        crops, possible = _possible(profile_name, sorted(prof_rows["crops"].unique().to_list()))
        ok = pl.col("status") == "ok"
        measured = prof_rows.group_by("crops").agg(
            query.tiling_list(ok).alias("ok_tilings"), query.tiling_list(~ok).alias("failed_tilings")
        )
        absent = query.missing(prof_rows, crops).collect()["crops"]
        table = (
            pl.DataFrame({"profile": profile_name, "crops": crops, "possible_tilings": possible},
                         schema_overrides={"crops": pl.Int64})
            .join(measured, on="crops", how="left")
        )
        if planned is not None:
            by_crops = planned.group_by("crops").agg(pl.col("tiling").sort().str.join(", ").alias("planned_tilings"))
            table = table.join(by_crops, on="crops", how="left")
        not_planned = pl.col("planned_tilings").is_null() if planned is not None else pl.lit(False)
        frames.append(table.with_columns(
            pl.when(~pl.col("crops").is_in(absent.implode())).then(pl.lit("ok"))
            .when(pl.col("failed_tilings").fill_null("") != "").then(pl.lit("failed"))
            .when(not_planned).then(pl.lit("not planned"))
            .otherwise(pl.lit("missing")).alias("status")
        ))
    return pl.concat(frames, how="diagonal") if frames else pl.DataFrame()


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        out[prefix] = " ".join(value)  # argv reads best as the command line it was
    else:
        out[prefix] = value if isinstance(value, str) else json.dumps(value, default=str)


def _credited(manifest: Manifest) -> dict[str, Any]:
    """The environment of the latest invocation that measured a config (a no-op resume gets no credit)."""
    measured = [i for i in manifest.measuring_invocations() if i.environment]
    return measured[-1].environment if measured else manifest.environment


def _measured_by(manifest: Manifest) -> list[dict[str, str]]:
    """One row per invocation that measured configs: what it was, when, how many, and its command line."""
    out = []
    for n, inv in enumerate(manifest.measuring_invocations(), 1):
        argv = inv.environment.get("argv")
        line = " ".join(map(str, argv)) if isinstance(argv, list) else ""
        value = (f"{inv.command} at {inv.started_at}: {inv.measured} config(s), {inv.ok or 0} ok, "
                 f"{inv.failed or 0} failed" + (f" ({line})" if line else ""))
        out.append({"key": f"measured_by.{n}", "value": value, "source": "manifest"})
    return out


def environment(manifest: Manifest | None, rows: pl.DataFrame) -> pl.DataFrame:
    """Key/value rows: the environment of the invocation that measured, the invocations that measured
    and the hosts (from the manifest), then what the records themselves carry."""
    items: dict[str, str] = {}
    _flatten("", _credited(manifest) if manifest is not None else {}, items)
    table = [{"key": k, "value": v, "source": "manifest"} for k, v in items.items()]
    if manifest is not None:
        table += _measured_by(manifest)
    hosts = manifest.hosts if manifest is not None else {}
    if hosts:
        described = [h.get("describe", {}) for h in hosts.values() if isinstance(h, dict)]
        devices = sorted({f"{d.get('device')} {d.get('gpu_name') or ''}".strip() for d in described})
        table.append({"key": "hosts", "value": f"{len(hosts)} ({', '.join(devices)})", "source": "manifest"})
    for col in PROVENANCE:
        values = rows[col].drop_nulls().unique().sort().to_list()
        if values and values != [""]:
            table.append({"key": col, "value": ", ".join(map(str, values)), "source": "records"})
    return pl.DataFrame(table, schema={"key": pl.String, "value": pl.String, "source": pl.String})
