"""ModelHost on the tiny Molmo2 (CPU): records, both methods, stage ordering, failures."""

from __future__ import annotations

import json
import statistics

import pytest
import torch

from tilings import PROFILES, geometry, resolution_for
from workers import MeasureConfig, Record
from workers.faults import ENV_VAR
from workers.summary import stages_sum
from workers.timers import CpuClock, HookTimer

SMALL, LARGE = (1, 1), (1, 8)


@pytest.fixture(scope="module")
def swept(tiny_host) -> dict[tuple[int, int], list[Record]]:
    return {
        tiling: tiny_host.measure(MeasureConfig(tiling_rows=tiling[0], tiling_cols=tiling[1], warmup=1, repeats=4,
                                                run_id="r1", config_id=f"c{tiling[0]}{tiling[1]}", family="1xk"))
        for tiling in (SMALL, LARGE)
    }


def median(records: list[Record], name: str) -> float:
    return statistics.median(getattr(r, name) for r in records)


def test_one_ok_record_per_repeat_with_the_predicted_geometry(swept):
    for (rows, cols), records in swept.items():
        height, width = resolution_for((rows, cols), "molmo2")
        predicted = geometry(height, width, "molmo2")
        assert [r.repeat for r in records] == list(range(4))
        for r in records:
            assert r.status == "ok" and r.error is None
            assert (r.height, r.width) == (height, width)
            assert (r.crops, r.crops_actual) == (predicted.crops, predicted.crops)
            assert (r.image_tokens, r.image_tokens_actual) == (predicted.image_tokens, predicted.image_tokens)
            assert r.sequence_tokens == predicted.sequence_tokens
            assert r.seq_len > r.sequence_tokens  # the prompt comes along
            assert (r.run_id, r.config_id, r.family, r.warmup, r.repeats) == ("r1", f"c{rows}{cols}", "1xk", 1, 4)
            assert r.device == "cpu" and r.dtype == "float32" and r.gpu_name is None
            assert r.torch_version == torch.__version__ and r.transformers_version
            assert r.peak_mem_bytes > 0 and r.t_cold_start_ms > 0
            assert json.loads(r.extra)["architecture"] == "molmo2"


def test_every_stage_is_positive_and_both_methods_are_present(swept):
    for records in swept.values():
        for r in records:
            for name in ("t_preprocess_ms", "t_vision_ms", "t_projector_ms", "t_llm_prefill_ms", "t_lm_head_ms",
                         "t_total_ms", "t_prefill_step_ms", "t_vision_only_ms"):
                assert getattr(r, name) > 0, name
            assert r.t_llm_sub_ms == pytest.approx(r.t_prefill_step_ms - r.t_vision_only_ms)
            assert (r.vision_calls, r.projector_calls) == (1, 1)
            assert r.t_ttft_ms is None and r.t_llm_blocks_ms is None


def test_the_order_of_the_two_methods_alternates_per_repeat(swept):
    for records in swept.values():
        assert [r.hooked_first for r in records] == [True, False, True, False]
        for r in records:  # both orders measure both methods
            assert r.t_total_ms > 0 and r.t_prefill_step_ms > 0 and r.t_vision_only_ms > 0


def test_threads_load_and_missing_nvml_are_recorded(swept, monkeypatch):
    for records in swept.values():
        for r in records:
            assert r.torch_threads == torch.get_num_threads() >= 1
            assert r.load_avg_1m is not None and r.load_avg_1m >= 0
            # No NVML on the CPU: energy and identity are missing values, never zeros.
            assert (r.energy_j_per_forward, r.power_mean_w, r.energy_forwards) == (None, None, None)
            assert (r.gpu_uuid, r.mig_enabled) == (None, None)


def test_omp_threads_column_reads_the_environment(tiny_host, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    [failed] = tiny_host.measure(MeasureConfig(tiling_rows=1, tiling_cols=99))  # a failed row is enough
    assert failed.omp_threads == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    [failed] = tiny_host.measure(MeasureConfig(tiling_rows=1, tiling_cols=99))
    assert failed.omp_threads is None


def test_total_covers_the_stages_and_the_remainder_is_small(swept):
    for records in swept.values():
        for r in records:
            assert r.t_total_ms >= r.t_vision_ms + r.t_projector_ms + r.t_llm_prefill_ms
            assert r.t_total_ms >= stages_sum(r)
        # in the least disturbed repeat: other work on the machine lands in the untimed glue too, only adding to it
        share = min((r.t_total_ms - stages_sum(r)) / r.t_total_ms for r in records)
        assert share < 0.2


def test_llm_prefill_grows_with_image_tokens(swept):
    small, large = swept[SMALL], swept[LARGE]
    assert large[0].image_tokens > 3 * small[0].image_tokens
    assert median(large, "t_llm_prefill_ms") > 1.5 * median(small, "t_llm_prefill_ms")
    assert median(large, "t_vision_ms") > median(small, "t_vision_ms")


def test_records_fit_the_arrow_schema(swept):
    schema = pytest.importorskip("store.schema")
    table = schema.records_to_table([r for records in swept.values() for r in records])
    assert table.num_rows == 8 and table.schema == schema.SCHEMA


def test_hooks_fire_in_forward_order_on_the_real_model(tiny_host):
    from workers.inputs import synthetic_image

    prepared = tiny_host.inputs.process(synthetic_image(378, 658, 0))
    timer = HookTimer(CpuClock(), tiny_host.modules)
    with timer.attached(), torch.inference_mode():
        tiny_host.model(**prepared.forward, logits_to_keep=1)
    starts = [stage for stage, kind in timer.log if kind == "start"]
    assert starts == ["vision", "projector", "llm_prefill", "lm_head"]
    assert timer.log[1] == ("vision", "end") and timer.log[-1] == ("lm_head", "end")


def test_decode_and_block_spans(tiny_host):
    records = tiny_host.measure(MeasureConfig(tiling_rows=1, tiling_cols=2, warmup=0, repeats=2, decode_tokens=3,
                                              block_spans=True))
    for r in records:
        assert r.status == "ok", r.error
        assert r.decode_tokens == 3
        assert r.t_ttft_ms >= r.t_prefill_step_ms > 0 and r.t_tpot_ms > 0
        assert len(r.t_llm_blocks_ms) == 2 and len(r.t_vision_blocks_ms) == 3
        assert all(ms > 0 for ms in r.t_llm_blocks_ms + r.t_vision_blocks_ms)
        assert sum(r.t_llm_blocks_ms) <= r.t_llm_prefill_ms
        assert sum(r.t_vision_blocks_ms) <= r.t_vision_ms


def test_min_duration_adds_repeats(tiny_host):
    records = tiny_host.measure(MeasureConfig(tiling_rows=1, tiling_cols=1, warmup=0, repeats=1, min_duration_s=1.0))
    assert all(r.status == "ok" for r in records)
    assert (records[0].finished_at - records[0].started_at).total_seconds() >= 1.0
    assert len(records) >= 2  # one repeat of the tiny model at 1x1 takes well under a second


def hook_counts(model: torch.nn.Module) -> list[tuple[int, int]]:
    return [(len(m._forward_pre_hooks), len(m._forward_hooks)) for m in model.modules()]


def test_injected_oom_fails_one_config_and_the_host_goes_on(tiny_host, monkeypatch):
    before = hook_counts(tiny_host.model)  # transformers keeps hooks of its own; ours must all go
    monkeypatch.setenv(ENV_VAR, "oom@1x2")
    [failed] = tiny_host.measure(MeasureConfig(tiling_rows=1, tiling_cols=2, warmup=0, repeats=2, config_id="x"))
    assert failed.status == "failed" and failed.error_type == "OutOfMemoryError"
    assert "out of memory" in failed.error
    assert (failed.config_id, failed.crops, failed.image_tokens) == ("x", 3, geometry(*resolution_for((1, 2), "molmo2"), "molmo2").image_tokens)
    assert failed.t_total_ms is None
    assert hook_counts(tiny_host.model) == before
    after = tiny_host.measure(MeasureConfig(tiling_rows=1, tiling_cols=1, warmup=0, repeats=1))
    assert [r.status for r in after] == ["ok"]


def test_injection_limited_to_one_attempt(tiny_host, monkeypatch):
    monkeypatch.setenv(ENV_VAR, "error@1x1/2")
    first = tiny_host.measure(MeasureConfig(tiling_rows=1, tiling_cols=1, warmup=0, repeats=1, attempt=1))
    second = tiny_host.measure(MeasureConfig(tiling_rows=1, tiling_cols=1, warmup=0, repeats=1, attempt=2))
    assert first[0].status == "ok"
    assert (second[0].status, second[0].error_type, second[0].attempt) == ("failed", "RuntimeError", 2)


def test_processor_mismatch_is_a_failed_record_with_both_numbers(tiny_host):
    """A processor configured unlike the profile (4 crops, the profile says 8) must not give a row."""
    from dataclasses import replace

    from transformers import Molmo2ImageProcessor

    original = tiny_host.inputs.image_processor
    tiny_host.inputs.image_processor = Molmo2ImageProcessor(**replace(PROFILES["molmo2"], max_crops=4).processor_kwargs())
    try:
        [failed] = tiny_host.measure(MeasureConfig(tiling_rows=1, tiling_cols=6, warmup=0, repeats=1))
    finally:
        tiny_host.inputs.image_processor = original
    predicted = geometry(*resolution_for((1, 6), "molmo2"), "molmo2")
    assert failed.status == "failed" and failed.error_type == "GeometryMismatchError"
    assert f"tilings predicts {predicted.crops} crops, {predicted.image_tokens} image tokens" in failed.error
    assert "the processor produced 5 crops" in failed.error  # at most 4 tiles + the global crop


def test_size_that_picks_another_tiling_is_refused(tiny_host):
    [failed] = tiny_host.measure(MeasureConfig(tiling_rows=1, tiling_cols=3, height=378, width=378, repeats=1))
    assert failed.status == "failed" and failed.error_type == "GeometryMismatchError"
    assert "gives tiling 1x1" in failed.error and (failed.height, failed.width) == (378, 378)


def test_tiling_over_the_crop_limit_is_a_failed_record(tiny_host):
    [failed] = tiny_host.measure(MeasureConfig(tiling_rows=3, tiling_cols=3, repeats=1))
    # Bad input from tilings is a UsageError (a ValueError), recorded under its own name.
    assert failed.status == "failed" and failed.error_type == "UsageError"
    assert "max_crops" in failed.error and failed.crops == 10


def test_describe_names_model_profile_and_modules(tiny_host):
    info = tiny_host.describe()
    assert (info["model"], info["profile"], info["architecture"], info["device"]) == ("tiny-molmo2", "molmo2", "molmo2", "cpu")
    assert info["modules"]["llm_blocks"] == "model.language_model.layers"
    assert info["parameters"] > 100_000 and info["pid"] > 0
    assert tiny_host.profile == PROFILES["molmo2"]


def test_tiny_molmo_v1_runs_the_seed_experiments_tilings():
    """Molmo v1's tiling: 1x8 and 2x4 both give 9 crops but 960 and 864 pooled image tokens."""
    from workers import ModelHost

    host = ModelHost("tiny-molmo-v1", device="cpu")
    assert host.profile == PROFILES["molmo-v1"]
    got = {}
    for rows, cols in ((1, 8), (2, 4), (1, 12)):
        [r] = host.measure(MeasureConfig(tiling_rows=rows, tiling_cols=cols, warmup=0, repeats=1))
        assert r.status == "ok", r.error
        assert r.width == 224 * cols + 112 and r.height == 224 * rows + 112
        got[(rows, cols)] = (r.crops_actual, r.image_tokens_actual)
    assert got[(1, 8)] == (9, 960) and got[(2, 4)] == (9, 864) and got[(1, 12)][0] == 13


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_a_gpu_energy_identity_and_the_device_are_recorded():
    from workers import ModelHost

    pytest.importorskip("pynvml")
    host = ModelHost("tiny-molmo2", device=f"cuda:{torch.cuda.device_count() - 1}")
    records = host.measure(MeasureConfig(tiling_rows=1, tiling_cols=2, warmup=1, repeats=2, energy_s=0.2))
    first = records[0]
    assert first.status == "ok" and first.device == f"cuda:{torch.cuda.device_count() - 1}"
    assert first.gpu_uuid.startswith(("GPU-", "MIG-")) and first.mig_enabled in (True, False)
    assert first.energy_forwards >= 3 and first.energy_j_per_forward > 0 and first.power_mean_w > 0
    assert {r.hooked_first for r in records} == {True, False}
