"""Integration: real sweeps of the tiny Molmo2 through `tilesweep run/fill/status` on a local
multi-node Ray cluster (two worker nodes with two logical GPUs each; the hosts fall back to the CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator import cli
from store.scan import scan
from tilings import PROFILES, Tiling, enumerate_tilings, tilings_for_crops

pytestmark = pytest.mark.ray

FAST = ["--warmup", "0", "--repeats", "1"]


def parts(run_dir: Path) -> list[tuple[str, int]]:
    """(config_id, attempt) of every part file in a run directory."""
    out = []
    for path in sorted(run_dir.glob("part-*.parquet")):
        _, cid, attempt = path.stem.split("-")
        out.append((cid, int(attempt)))
    return out


def tilings_of(run_dir: Path, config_ids=None) -> set[Tiling]:
    frame = scan(run_dir).collect()
    if config_ids is not None:
        frame = frame.filter(frame["config_id"].is_in(list(config_ids)))
    return {Tiling(r, c) for r, c in frame.select("tiling_rows", "tiling_cols").unique().iter_rows()}


@pytest.mark.extended  # the default families: make sweep's test; several nodes: every other Ray test
def test_default_families_sweep_writes_one_ok_config_each_over_several_nodes(ray_cluster, tmp_path, capsys):
    code = cli.main(["run", "--results", str(tmp_path), "--run-id", "full", *FAST])
    out = capsys.readouterr().out
    assert code == 0
    run_dir = tmp_path / "full"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    planned = manifest["planned"]
    expected = {t for t, _ in enumerate_tilings(PROFILES["molmo2"], ("1xk", "2xk", "kx1"))}
    assert len(planned) == len(expected) == 18
    # Exactly one part per planned config, all first attempts, all ok.
    assert sorted(cid for cid, _ in parts(run_dir)) == sorted(planned)
    assert all(attempt == 1 for _, attempt in parts(run_dir))
    rows = scan(run_dir).collect()
    assert rows.height == 18 and set(rows["status"]) == {"ok"}
    assert tilings_of(run_dir) == expected
    # The measured geometry is the planned one, row by row.
    for row in rows.iter_rows(named=True):
        plan_row = planned[row["config_id"]]
        assert plan_row["tiling"] == f"{row['tiling_rows']}x{row['tiling_cols']}"
        assert (plan_row["crops"], plan_row["image_tokens"]) == (row["crops"], row["image_tokens"])
        assert row["crops_actual"] == row["crops"] and row["image_tokens_actual"] == row["image_tokens"]
    # Dynamic dispatch over four actors on both worker nodes.
    worker_nodes = {n.node_id for n in ray_cluster.worker_nodes}
    assert set(rows["node_id"]) <= worker_nodes and len(set(rows["node_id"])) == 2
    assert len(set(rows["worker_id"])) >= 3
    assert manifest["counts"] == {"planned": 18, "ok": 18, "failed": 0, "missing": 0}
    assert len(manifest["hosts"]) == 4 and all(h["describe"]["model"] == "tiny-molmo2" for h in manifest["hosts"].values())
    # The summary table: a header and one line per tiling, then what noise may have bent.
    lines = out.strip().splitlines()
    assert lines[0].startswith("run full: 18 config(s)") and lines[1].split()[:3] == ["tiling", "family", "crops"]
    table, notes = lines[2:20], lines[20:]
    assert sorted(line.split()[0] for line in table) == sorted(f"{t.rows}x{t.cols}" for t in expected)
    # One repeat gives no 95% interval of a median: every config is named as such, with the fix.
    assert any(n.startswith("noise: 18 of 18 config(s) have fewer than 6 samples") and "--precision 2" in n
               for n in notes)
    # status agrees: everything done.
    assert cli.main(["status", "--results", str(tmp_path)]) == 0
    status = capsys.readouterr().out
    assert "run full (tiny-molmo2, profile molmo2): 18/18 done, 0 failed, 0 missing" in status


def test_fill_measures_exactly_the_tilings_of_the_missing_crop_counts(ray_cluster, tmp_path, capsys):
    v1 = PROFILES["molmo-v1"]
    results = str(tmp_path)
    base = ["--model", "tiny-molmo-v1", "--tilings", "1x1,1x2,1x3", *FAST, "--workers", "2"]
    assert cli.main(["run", "--results", results, "--run-id", "base", *base]) == 0
    run_dir = tmp_path / "base"
    before = set(parts(run_dir))
    assert cli.main(["fill", "--crops", "3,6,9,12", "--results", results, "--workers", "2"]) == 0  # the latest run
    new_ids = {cid for cid, _ in set(parts(run_dir)) - before}
    wanted = {t for n in (3, 6, 9, 12) for t in tilings_for_crops(n, v1)}
    assert wanted == {(1, 2), (2, 1), (1, 5), (5, 1), (1, 8), (2, 4), (4, 2), (8, 1), (1, 11), (11, 1)}
    # Every tiling giving those counts, minus 1x2 which the run already had; nothing else.
    assert tilings_of(run_dir, new_ids) == wanted - {(1, 2)}
    assert len(new_ids) == len(wanted) - 1
    rows = scan(run_dir).collect()
    assert set(rows["status"]) == {"ok"} and set(rows["model"]) == {"tiny-molmo-v1"}
    assert set(rows["crops"]) == {2, 3, 4, 6, 9, 12}
    capsys.readouterr()
    assert cli.main(["status", "--results", results, "--run-id", "base"]) == 0
    status = capsys.readouterr().out
    assert "12/12 done, 0 failed, 0 missing" in status
    # A second fill finds nothing missing and measures nothing.
    assert cli.main(["fill", "--crops", "3,6,9,12", "--results", results]) == 0
    assert len(parts(run_dir)) == 12
