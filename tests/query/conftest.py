"""Synthetic results written with the real schema into the real layout.

Stage times follow planted costs plus seeded noise, so the query layer and the
latency model can be checked against the values that generated them.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from orchestrator.schema import records_to_table
from workers.record import STATUS_FAILED, Record


@dataclasses.dataclass(kw_only=True, frozen=True, slots=True)
class Costs:
    """Planted costs (ms): vision = a + b·crops, llm = c + d·t + e·t², t = sequence tokens."""

    a: float = 2.0
    b: float = 3.0
    c: float = 1.5
    d: float = 0.02
    e: float = 4e-6
    projector: float = 0.8
    lm_head: float = 0.3
    remainder: float = 0.5  # total - (vision + projector + llm + lm_head)
    sub_bias: float = 1.2  # llm_sub - llm_prefill
    noise: float = 0.005  # relative, per stage
    vision_per_token: float = 0.0  # a vision cost that breaks the per-crop assumption


def base_record(**fields) -> Record:
    defaults = dict(
        run_id="run-a", config_id="c1x1", attempt=1, model="tiny-molmo2", profile="molmo2",
        family="1xk", tiling_rows=1, tiling_cols=1, crops=2, height=378, width=378,
        canvas_height=378, canvas_width=378, image_tokens=100, sequence_tokens=120,
        device="cpu", torch_version="2", transformers_version="5", tilesweep_version="0.1",
        dtype="float32", hostname="h",
    )
    defaults.update(fields)
    return Record(**defaults)


def planted(costs: Costs, *, crops: int, tokens: int, rng: np.random.Generator, repeat: int, **fields) -> Record:
    def noisy(x: float) -> float:
        return float(x * (1.0 + costs.noise * rng.standard_normal()))

    vision = noisy(costs.a + costs.b * crops + costs.vision_per_token * tokens)
    llm = noisy(costs.c + costs.d * tokens + costs.e * tokens**2)
    total = vision + costs.projector + llm + costs.lm_head + costs.remainder
    return base_record(
        crops=crops, sequence_tokens=tokens, repeat=repeat,
        t_preprocess_ms=1.0, t_vision_ms=vision, t_projector_ms=costs.projector,
        t_llm_prefill_ms=llm, t_lm_head_ms=costs.lm_head, t_total_ms=total,
        t_prefill_step_ms=total, t_vision_only_ms=vision, t_llm_sub_ms=llm + costs.sub_bias,
        **fields,
    )


def failed(**fields) -> Record:
    fields = {"error_type": "RuntimeError", "error": "CUDA out of memory", **fields}
    return base_record(status=STATUS_FAILED, **fields)


def write_part(root: Path, records: Iterable[Record]) -> Path:
    """One part file in the real layout: <root>/<run_id>/part-<config_id>-<attempt>.parquet."""
    records = list(records)
    first = records[0]
    run_dir = root / first.run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / f"part-{first.config_id}-{first.attempt}.parquet"
    pq.write_table(records_to_table(records), path)
    return path


def write_manifest(root: Path, run_id: str, *, spec: dict | None = None, environment: dict | None = None,
                   planned: dict | None = None) -> Path:
    path = root / run_id / "manifest.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    manifest = {"spec": spec or {}, "environment": environment or {}}
    if planned is not None:
        manifest["planned"] = planned
    path.write_text(json.dumps(manifest))
    return path


def planned_for(profile: str, tilings_: Iterable[tuple[int, int]]) -> dict:
    """A manifest's ``planned`` mapping (config id -> config) for these tilings, ids as `write_sweep` makes them."""
    from tilings import Tiling, tiling_geometry

    out = {}
    for rows, cols in tilings_:
        g = tiling_geometry(Tiling(rows, cols), profile_of(profile))
        out[f"cfg-{rows}x{cols}"] = {"tiling": f"{rows}x{cols}", "family": "", "crops": g.crops,
                                     "image_tokens": g.image_tokens, "sequence_tokens": g.sequence_tokens}
    return out


@pytest.fixture(scope="session")
def synth():
    """This module's helpers (test modules cannot import a conftest under importlib mode)."""
    return sys.modules[__name__]


def write_sweep(
    root: Path,
    costs: Costs = Costs(),
    *,
    profile: str = "molmo-v1",
    families: tuple[str, ...] = ("1xk", "2xk"),
    repeats: int = 5,
    seed: int = 0,
    run_id: str = "run-a",
    skip: Iterable[tuple[int, int]] = (),
) -> list[Record]:
    """A sweep over real tilings (crops and tokens from `tilings`), one part per config."""
    from tilings import enumerate_tilings, resolution_for, tiling_geometry

    rng = np.random.default_rng(seed)
    skip = {tuple(t) for t in skip}
    written: list[Record] = []
    for tiling, family in enumerate_tilings(profile, families):
        if tuple(tiling) in skip:
            continue
        g = tiling_geometry(tiling, profile_of(profile))
        height, width = resolution_for(tiling, profile)
        records = [
            planted(
                costs, crops=g.crops, tokens=g.sequence_tokens, rng=rng, repeat=i,
                run_id=run_id, config_id=f"cfg-{tiling.rows}x{tiling.cols}", profile=profile,
                family=family, tiling_rows=tiling.rows, tiling_cols=tiling.cols,
                height=height, width=width, canvas_height=g.canvas[0], canvas_width=g.canvas[1],
                image_tokens=g.image_tokens,
            )
            for i in range(repeats)
        ]
        write_part(root, records)
        written += records
    return written


def profile_of(name: str):
    from tilings import get_profile

    return get_profile(name)
