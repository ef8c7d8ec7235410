"""`python -m benchmarks --quick` end to end, so that no benchmark can rot.

It runs once, in a subprocess: the benchmarks start their own Ray clusters (a
2-node cluster of 8 logical GPUs, local instances for tilesweep and Tune), which
must not meet the session's cluster in this process. The tests check that every
figure is computed, finite and consistent with what it measures; they do not
check targets (speed figures belong to the benchmark run, not to the tests).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ALL = ("scheduling", "speedup", "overhead", "additivity", "adaptive", "scale", "control")
# Scheduling (a cluster of its own), speedup (tilesweep, a loop and Ray Tune, each from a cold start) and
# additivity (speedup's sweep) take 90 s even at quick sizes: they run where TILESWEEP_QUICK_BENCH=all asks
# for them (`make bench-check`), not in every `make test`; test_pieces.py tests their pieces.
NAMES = ALL if os.environ.get("TILESWEEP_QUICK_BENCH") == "all" else ("overhead", "adaptive", "scale", "control")

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.extended]  # benchmarks: make test-all, make bench-check


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--only", ",".join(NAMES), "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = {name: json.loads((out / f"{name}.json").read_text()) for name in NAMES}
    return {"out": out, "stdout": proc.stdout, "results": results, "readme": (out / "README.md").read_text()}


def figures(run: dict, name: str) -> dict[str, float]:
    if name not in NAMES:
        pytest.skip(f"the {name} benchmark runs with TILESWEEP_QUICK_BENCH=all (make bench-check)")
    return {f["name"]: f["value"] for f in run["results"][name]["figures"]}


@pytest.mark.parametrize("name", NAMES)
def test_every_figure_is_finite_and_described(quick_run, name):
    data = quick_run["results"][name]
    assert data["benchmark"] == name and data["quick"] is True
    assert data["figures"], f"{name} reported no figure"
    for fig in data["figures"]:
        assert isinstance(fig["value"], (int, float)) and math.isfinite(fig["value"]), fig
        assert fig["name"] and fig["unit"], fig
    machine = data["machine"]
    for key in ("cpu_model", "cores", "memory_gib", "python", "torch", "ray", "date", "load_average"):
        assert machine.get(key) is not None, key


def test_the_table_has_a_row_per_figure_and_is_printed(quick_run):
    rows = [line for line in quick_run["readme"].splitlines() if line.startswith("| ") and "---" not in line][1:]
    expected = [(data["title"], fig["name"]) for data in quick_run["results"].values() for fig in data["figures"]]
    assert [tuple(cell.strip() for cell in row.split("|")[1:3]) for row in rows] == expected
    assert quick_run["readme"] in quick_run["stdout"]


def test_scheduling_figures_respect_the_bound(quick_run):
    f = figures(quick_run, "scheduling")
    # Sleeps cannot finish before their sum allows: no schedule beats the lower bound.
    assert f["makespan / lower bound"] >= 0.999
    assert f["static round-robin / lower bound"] >= 1.0
    assert f["zero-overhead dynamic queue / lower bound"] >= 1.0
    assert f["static round-robin / lower bound (run)"] >= 0.999 * f["static round-robin / lower bound"]
    details = quick_run["results"]["scheduling"]["details"]  # figures() skipped the test unless it ran
    assert details["size"]["configs"] == 60 and details["retries"] == 0
    assert details["makespan_s"] >= details["durations_s"]["sum"] / 8 * 0.999


def test_speedup_times_are_ordered(quick_run):
    f = figures(quick_run, "speedup")
    for method, wall in (("tilesweep", "tilesweep wall"), ("sequential loop", "sequential loop wall"),
                         ("Ray Tune", "Ray Tune wall")):
        assert 0 < f[f"time to first result, {method}"] <= f[wall]
    assert f["sequential loop / tilesweep"] == pytest.approx(f["sequential loop wall"] / f["tilesweep wall"])
    details = quick_run["results"]["speedup"]["details"]
    assert len(details["tune"]["arrivals"]) == len(details["configs"]) == details["tilesweep"]["configs"]


def test_overhead_counts_two_events_per_timed_call(quick_run):
    data = quick_run["results"]["overhead"]
    f = figures(quick_run, "overhead")
    calls = data["details"]["stage_calls"]
    assert f["hook events per forward"] == 2 * sum(calls.values()) >= 8  # four stages, a pre-hook and a hook each
    assert len(data["details"]["hooked_us"]) == len(data["details"]["plain_us"]) == data["details"]["size"]["pairs"]


def test_additivity_shares_and_cvs_are_in_range(quick_run):
    f = figures(quick_run, "additivity")
    assert -100 < f["t_total - sum(stages), median over configs"] <= f["t_total - sum(stages), max over configs"] < 100
    for stage in ("vision", "projector", "llm_prefill", "lm_head", "total"):
        assert 0 <= f[f"CV of {stage}, median over configs"] <= f[f"CV of {stage}, max over configs"]


def test_scale_times_every_reader_on_both_layouts(quick_run):
    f = figures(quick_run, "scale")
    for reader in ("query", "status", "status --check", "report"):
        assert f[f"{reader}, parts"] > 0 and f[f"{reader}, compacted"] > 0
        assert f[f"{reader}, parts / compacted"] == pytest.approx(f[f"{reader}, parts"] / f[f"{reader}, compacted"])
    details = quick_run["results"]["scale"]["details"]
    assert details["parts"] == details["size"]["configs"] == 100
    assert all(run["rc"] == 0 for layout in ("before", "after") for run in details[layout].values())


def test_adaptive_repeats_past_the_fixed_count_and_three_repeats_have_no_interval(quick_run):
    f = figures(quick_run, "adaptive")
    details = quick_run["results"]["adaptive"]["details"]
    for condition, rows in (("quiet", details["quiet"]), ("one core busy", details["loaded"])):
        assert f[f"fixed 3: configs without a 95% interval, {condition}"] == 1
        adaptive = next(r for r in rows if r["rule"].startswith("adaptive"))
        fixed = next(r for r in rows if r["rule"] == "fixed 3")
        assert fixed["samples"] == 3 and fixed["stop_reason"] == "repeats" and fixed["precision_pct"] is None
        assert 3 <= adaptive["samples"] <= 6 and adaptive["stop_reason"] in ("precision", "max_repeats", "max_duration")
        assert f[f"adaptive: samples per config, {condition}"] == adaptive["samples"]


def test_control_verdicts_follow_from_its_samples(quick_run):
    """Quick: 1x1 and 2x2, 6 samples each; with 6 samples the 95% interval of a median is [min, max] (the
    binomial tail of the extremes, 2/64 = 3%, is the last within 5%), so each verdict is recomputed here."""
    f = figures(quick_run, "control")
    samples = quick_run["results"]["control"]["details"]["samples_ms"]
    assert list(samples) == ["1x1", "2x2"] and f["tilings measured"] == 2
    for label, stage in (("vision", "t_vision_ms"), ("LLM prefill", "t_llm_prefill_ms"),
                         ("forward (total)", "t_total_ms"), ("processor (CPU)", "t_preprocess_ms")):
        per = [samples[t][stage] for t in ("1x1", "2x2")]
        assert [len(v) for v in per] == [6, 6] == [f["samples per tiling"]] * 2
        medians = [statistics.median(v) for v in per]
        assert f[f"{label}: spread of the tilings' medians"] == pytest.approx(
            100 * abs(medians[0] - medians[1]) / statistics.median(medians))
        assert f[f"{label}: flat within noise"] == int(max(min(v) for v in per) <= min(max(v) for v in per))
        half = [100 * (max(v) - min(v)) / 2 / m for v, m in zip(per, medians)]
        assert f[f"{label}: 95% CI half-width of one tiling's median"] == pytest.approx(statistics.median(half))
        fastest = [min(v) for v in per]
        assert f[f"{label}: spread of the tilings' fastest repeats"] == pytest.approx(
            100 * abs(fastest[0] - fastest[1]) / statistics.median(fastest))
