"""The benchmarks' own arithmetic and parts, without Ray: bounds, the simulated host, the writers."""

from __future__ import annotations

import json
import math
import time

import pytest

from benchmarks.__main__ import parse_only
from benchmarks.harness import Figure, Result, markdown_report, markdown_table, write_json
from benchmarks.schedule_math import greedy_makespan, lower_bound, round_robin_loads, round_robin_makespan
from benchmarks.simhost import SimCost, SimHost
from workers.config import MeasureConfig


# ----- schedule arithmetic -----
def test_lower_bound_is_the_larger_of_average_load_and_longest_job():
    assert lower_bound([1, 1, 1, 1], 2) == 2.0  # sum / gpus
    assert lower_bound([10, 1, 1], 4) == 10.0  # one long job dominates


def test_round_robin_assigns_config_i_to_gpu_i_mod_n():
    durations = [5, 1, 1, 5, 1, 1]
    # GPU 0: 5 + 5, GPU 1: 1 + 1, GPU 2: 1 + 1
    assert round_robin_loads(durations, 3) == [10, 2, 2]
    assert round_robin_makespan(durations, 3) == 10


def test_greedy_queue_balances_what_round_robin_does_not():
    durations = [5, 1, 1, 5, 1, 1]
    # In this order: 5 | 1 | 1, then the second 5 joins a 1 (6), the last two 1s the other (3).
    assert greedy_makespan(durations, 3) == 6
    # Longest first: 5 | 5 | 1+1+1+1.
    assert greedy_makespan(sorted(durations, reverse=True), 3) == 5
    assert lower_bound(durations, 3) <= greedy_makespan(durations, 3) <= round_robin_makespan(durations, 3)


@pytest.mark.parametrize("bad", [([], 2), ([1.0], 0), ([1.0, -1.0], 2)])
def test_schedule_math_rejects_bad_input_with_the_value(bad):
    durations, gpus = bad
    with pytest.raises(ValueError, match=r"durations|gpus"):
        lower_bound(durations, gpus)


# ----- simulated host -----
def _config(rows: int, cols: int, config_id: str = "ab12", **kw) -> MeasureConfig:
    return MeasureConfig(tiling_rows=rows, tiling_cols=cols, config_id=config_id, **kw)


def test_sim_cost_is_deterministic_per_config_and_differs_between_configs():
    cost = SimCost(seconds_per_unit=1.0, noise_sigma=0.5)
    a = cost.duration_s(_config(2, 2, "aaaa"))
    assert a == SimCost(seconds_per_unit=1.0, noise_sigma=0.5).duration_s(_config(2, 2, "aaaa"))
    assert a != cost.duration_s(_config(2, 2, "bbbb"))


def test_sim_cost_grows_with_crops_and_repeats_without_noise():
    cost = SimCost(seconds_per_unit=1.0, noise_sigma=0.0)
    small, mid, big = (cost.duration_s(_config(r, c)) for r, c in ((1, 1), (2, 2), (3, 4)))
    assert small < mid < big
    one = cost.duration_s(_config(1, 2, warmup=0, repeats=1))
    assert cost.duration_s(_config(1, 2, warmup=1, repeats=3)) == pytest.approx(4 * one)


def test_sim_cost_rejects_nonpositive_scale():
    with pytest.raises(ValueError, match="seconds_per_unit"):
        SimCost(seconds_per_unit=0)


def test_sim_host_sleeps_its_duration_and_returns_one_record_per_repeat():
    cost = SimCost(seconds_per_unit=0.002, noise_sigma=0.3)
    host = SimHost("sim", cost=cost, device="cuda", dtype="bfloat16")  # host options are accepted, unused
    config = _config(2, 3, "c0ffee", warmup=1, repeats=4, run_id="r1", attempt=2)
    expected = cost.duration_s(config)
    t0 = time.perf_counter()
    records = host.measure(config)
    elapsed = time.perf_counter() - t0
    assert elapsed >= expected
    assert [r.repeat for r in records] == [0, 1, 2, 3]
    r = records[0]
    assert (r.run_id, r.config_id, r.attempt, r.status) == ("r1", "c0ffee", 2, "ok")
    assert (r.tiling_rows, r.tiling_cols, r.crops) == (2, 3, 7)  # 2x3 tiles + the global crop
    assert r.profile == "molmo-v1" and r.image_tokens == 704
    extra = json.loads(r.extra)
    assert extra["sim_duration_s"] == pytest.approx(expected)
    assert extra["config_finished"] - extra["config_started"] >= expected
    # The slept time is spread over warm-up and repeats: 4 timed forwards of 5.
    assert sum(x.t_total_ms for x in records) == pytest.approx(
        (extra["config_finished"] - extra["config_started"]) * 1000 * 4 / 5)
    assert host.describe()["simulated"] is True and host.profile.name == "molmo-v1"


def test_sim_host_records_fit_the_stored_schema():
    from store.schema import records_to_table

    records = SimHost(cost=SimCost(seconds_per_unit=1e-4)).measure(_config(1, 2, "ff", repeats=2))
    assert records_to_table(records).num_rows == 2


# ----- writers -----
def _result() -> Result:
    r = Result(benchmark="demo", title="0. Demo", quick=True)
    r.add("ratio a", 1.04, "ratio", "target <= 1.05")
    r.add("time b", 1234.5, "s", "has a | pipe")
    return r


def test_markdown_table_has_one_row_per_figure_and_escapes_pipes():
    table = markdown_table([_result()])
    rows = [line for line in table.splitlines() if line.startswith("| 0. Demo")]
    assert len(rows) == 2
    assert "| ratio a | 1.040 | ratio | target <= 1.05 |" in rows[0]
    assert "1,234" in rows[1] and "has a \\| pipe" in rows[1]
    report = markdown_report([_result()], {"cpu_model": "X", "usable_cores": 2, "memory_gib": 1.0, "python": "3",
                                           "torch": "t", "transformers": "tf", "ray": "r",
                                           "omp_num_threads": "1", "date": "d"}, command="python -m benchmarks")
    assert report.startswith("# tilesweep benchmarks (quick sizes)") and "X, 2 cores" in report


def test_write_json_refuses_a_nan_figure(tmp_path):
    r = _result()
    path = write_json(r, tmp_path, {"cpu_model": "X"})
    data = json.loads(path.read_text())
    assert [f["name"] for f in data["figures"]] == ["ratio a", "time b"] and data["machine"]["cpu_model"] == "X"
    r.figures.append(Figure(name="broken", value=math.nan, unit="s"))
    with pytest.raises(ValueError):
        write_json(r, tmp_path, {})
    assert json.loads(path.read_text())["figures"][-1]["name"] == "time b"  # the old file is intact
    assert not list(tmp_path.glob("*.tmp"))


def test_parse_only_keeps_run_order_and_names_unknown_benchmarks():
    assert parse_only("additivity,speedup") == ["speedup", "additivity"]
    assert parse_only(None) == ["scheduling", "speedup", "overhead", "additivity", "adaptive", "scale", "control"]
    with pytest.raises(ValueError, match="'nope'.*scheduling"):
        parse_only("speedup,nope")
