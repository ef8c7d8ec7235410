"""Benchmark 6: the results store at scale (10,000 configs x 10 repeats).

A synthetic run is written the way the driver writes one: one part per config
through `store.runs.RunStore.write_part` (atomic, fsynced) and a manifest with
the planned configs, one finished invocation and its counts, as
`orchestrator.sweep` records them. Its rows follow planted stage costs over real
molmo2 tilings (crops and tokens from `tilings`), each config at its own image
size, so there are as many distinct configs as the size says.

Then each reader runs as the user runs it, a fresh ``tilesweep`` process, timed
from start to exit with its peak resident memory (``ru_maxrss`` of the child):
`tilesweep query` (a summary query), `status`, `status --check` and `report`;
once over the parts as the driver left them, then after `tilesweep compact`
(one Parquet file per run), side by side in this one process so the machine's
load hits both alike.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks.harness import Context, Result

NAME = "scale"
TITLE = "6. Results at scale"
PROFILE = "molmo2"
QUERY = ("SELECT crops, count(*) AS configs, median(total_median_ms) AS total_ms FROM summary "
         "GROUP BY crops ORDER BY crops")


@dataclass(kw_only=True, frozen=True, slots=True)
class ScaleSize:
    configs: int = 10_000
    repeats: int = 10
    seed: int = 0


FULL = ScaleSize()
QUICK = ScaleSize(configs=100)


def write_run(results: Path, size: ScaleSize, run_id: str = "20261201-000000-5ca1") -> Path:
    """Write a finished synthetic run of `size` under `results` with the store's own writer; returns its directory."""
    import numpy as np

    from store.manifest import Counts, Invocation, Manifest, PlannedEntry
    from store.runs import RunStore
    from tilings import enumerate_tilings, get_profile, resolution_for, tiling_geometry
    from workers.record import Record

    profile = get_profile(PROFILE)
    tilings = list(enumerate_tilings(PROFILE, ("1xk", "2xk", "kx1")))
    rng = np.random.default_rng(size.seed)
    store = RunStore(results, run_id)
    now = datetime.now(timezone.utc)
    planned: dict[str, PlannedEntry] = {}
    for i in range(size.configs):
        tiling, family = tilings[i % len(tilings)]
        g = tiling_geometry(tiling, profile)
        height, width = resolution_for(tiling, profile)
        # Each config its own image size, as a sweep over sizes gives: one distinct config per index.
        height += i // len(tilings)
        cid = f"{i:016x}"
        planned[cid] = PlannedEntry(config_id=cid, tiling=f"{tiling.rows}x{tiling.cols}", family=family,
                                    height=height, width=width, crops=g.crops, image_tokens=g.image_tokens,
                                    sequence_tokens=g.sequence_tokens)
        vision = (2.0 + 3.0 * g.crops) * (1 + 0.01 * rng.standard_normal(size.repeats))
        llm = (1.5 + 0.02 * g.sequence_tokens + 4e-6 * g.sequence_tokens ** 2) * (
            1 + 0.01 * rng.standard_normal(size.repeats))
        store.write_part(
            Record(run_id=run_id, config_id=cid, attempt=1, model="tiny-molmo2", profile=PROFILE, family=family,
                   tiling_rows=tiling.rows, tiling_cols=tiling.cols, crops=g.crops, height=height, width=width,
                   canvas_height=g.canvas[0], canvas_width=g.canvas[1], image_tokens=g.image_tokens,
                   sequence_tokens=g.sequence_tokens, repeat=r, repeats=size.repeats, t_preprocess_ms=1.0,
                   t_vision_ms=float(vision[r]), t_projector_ms=0.8, t_llm_prefill_ms=float(llm[r]),
                   t_lm_head_ms=0.3, t_total_ms=float(vision[r] + llm[r] + 1.6),
                   t_prefill_step_ms=float(vision[r] + llm[r] + 1.6), t_vision_only_ms=float(vision[r]),
                   t_llm_sub_ms=float(llm[r] + 1.2), device="cpu", torch_version="2", transformers_version="5",
                   tilesweep_version="0.1", dtype="float32", hostname="bench", started_at=now, finished_at=now)
            for r in range(size.repeats)
        )
    stamp = now.isoformat(timespec="seconds")
    invocation = Invocation(command="run", started_at=stamp, planned=tuple(planned), finished_at=stamp,
                            measured=size.configs, ok=size.configs, failed=0, retries=0, interrupted=False,
                            remaining=0, elapsed_s=0.0)
    # No profile numbers: `status --check` then checks the store's invariant, not a re-plan of a spec
    # that could not have planned these synthetic sizes.
    store.write_manifest(Manifest(
        run_id=run_id, created_at=stamp, updated_at=stamp, measurement={"repeats": size.repeats},
        planned=planned, invocations=(invocation,),
        counts=Counts(planned=size.configs, ok=size.configs, failed=0, missing=0)))
    return store.dir


def timed(argv: list[str]) -> dict[str, Any]:
    """Run ``tilesweep ARGV`` in a fresh process: wall seconds, peak RSS (GiB) of the process, exit code."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    # ru_maxrss of RUSAGE_CHILDREN is the largest of all children waited for so far, so each
    # command runs under its own short-lived parent that reports its one child.
    probe = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
             "p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True); "
             "w = time.perf_counter() - t; r = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss; "
             "print(w, r, p.returncode); sys.stderr.write(p.stderr[-2000:])")
    cmd = [sys.executable, "-c", probe, sys.executable, "-m", "orchestrator.cli", *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    wall, rss_kib, rc = proc.stdout.split()
    if int(rc) != 0:
        raise RuntimeError(f"tilesweep {' '.join(argv)} exited {rc}: {proc.stderr.strip()[-1000:]}")
    return {"wall_s": float(wall), "rss_gib": int(rss_kib) / 2**20, "rc": int(rc)}


def readers(results: Path, out: Path) -> dict[str, dict[str, Any]]:
    """Each reader once over `results`, in a fresh process."""
    root = str(results)
    return {
        "query": timed(["query", "--results", root, QUERY]),
        "status": timed(["status", "--results", root]),
        "status --check": timed(["status", "--results", root, "--check"]),
        "report": timed(["report", "--results", root, "-o", str(out)]),
    }


def run(*, quick: bool, context: Context) -> Result:
    size = QUICK if quick else FULL
    result = Result(benchmark=NAME, title=TITLE, quick=quick)
    results = context.work_dir / "scale-results"
    t0 = time.perf_counter()
    run_dir = write_run(results, size)
    write_s = time.perf_counter() - t0
    parts = sum(1 for _ in run_dir.glob("part-*.parquet"))
    before = readers(results, context.work_dir / "scale-report-parts")
    compact = timed(["compact", "--results", str(results)])
    after = readers(results, context.work_dir / "scale-report-compacted")
    rows = f"{size.configs} configs x {size.repeats} repeats"
    result.add("write the parts (RunStore.write_part)", write_s, "s", f"{rows}, {parts} parts, fsynced")
    result.add("tilesweep compact", compact["wall_s"], "s", f"{parts} parts -> 1 file; peak RSS "
               f"{compact['rss_gib']:.2f} GiB")
    targets = {"query": 2.0, "status": 10.0, "status --check": 10.0, "report": 60.0}
    for name, target in targets.items():
        b, a = before[name], after[name]
        result.add(f"{name}, parts", b["wall_s"], "s", f"peak RSS {b['rss_gib']:.2f} GiB; {rows}")
        result.add(f"{name}, compacted", a["wall_s"], "s",
                   f"peak RSS {a['rss_gib']:.2f} GiB; target at 10,000 configs <= {target:g} s"
                   + ("; <= 2 GB" if name == "report" else ""))
        result.add(f"{name}, parts / compacted", b["wall_s"] / a["wall_s"], "ratio", "same machine, same load")
    result.details = {"size": asdict(size), "parts": parts, "write_s": write_s, "compact": compact,
                      "before": before, "after": after, "query": QUERY}
    return result
