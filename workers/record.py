"""The result row: one record per timed repeat (raw samples, never aggregates).

`Record` is the single definition of a result row. The Arrow schema that the
store writes (`store.schema.SCHEMA`) is derived from these field
annotations, and a test checks that the two agree, so the columns cannot drift
between the worker that measures and the store that writes.

Allowed annotations (the schema maps each one): ``str``, ``int``, ``float``,
``bool``, ``datetime``, ``list[float]``, each optionally ``| None``.
Times are milliseconds (``t_*_ms``); a stage that was not measured is ``None``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any

STATUS_OK = "ok"
STATUS_FAILED = "failed"

# Stage names of the hook method, in forward order; `t_<stage>_ms` columns.
STAGES = ("preprocess", "vision", "projector", "llm_prefill", "lm_head", "total")


@dataclass(kw_only=True, slots=True)
class Record:
    # --- identity of the run and the configuration (set by the orchestrator) ---
    run_id: str = ""
    config_id: str = ""
    attempt: int = 1
    # --- model ---
    model: str
    revision: str | None = None
    profile: str
    # JSON of the processor settings this config set on top of the profile's (tilings.overrides), e.g. Idefics3's
    # {"size":{"longest_edge":728}}; None where the profile needs none (every scheme but the longest-edge ones).
    processor_overrides: str | None = None
    # --- tiling and geometry (predicted by tilings/) ---
    family: str = ""  # the tiling family (1xk, 2xk, ...), never the model's
    tiling_rows: int
    tiling_cols: int
    crops: int
    height: int
    width: int
    canvas_height: int
    canvas_width: int
    image_tokens: int
    sequence_tokens: int
    encoder_patches: int | None = None  # patches the vision encoder processes, padding included
    # --- what the model's own processor produced ---
    crops_actual: int | None = None
    image_tokens_actual: int | None = None
    seq_len: int | None = None  # length of input_ids fed to the model (prompt + image tokens)
    # --- the sample ---
    repeat: int = 0  # 0-based index among the timed repeats of this config
    warmup: int = 0
    repeats: int = 0  # the fixed count, or the fewest with the adaptive rule (``n`` counts the rows)
    # --- how many repeats, and how precise they are (workers.precision) ---
    precision_target_pct: float | None = None  # the adaptive rule's target; None: a fixed count
    precision_reached_pct: float | None = None  # least precise stage: 95% CI half-width, % of its median
    stop_reason: str | None = None  # repeats | precision | max_repeats | max_duration
    decode_tokens: int = 0
    # --- hook method (one forward, stage spans from forward hooks) ---
    t_preprocess_ms: float | None = None
    t_vision_ms: float | None = None
    t_projector_ms: float | None = None
    t_llm_prefill_ms: float | None = None
    t_lm_head_ms: float | None = None
    t_total_ms: float | None = None
    vision_calls: int | None = None
    projector_calls: int | None = None
    # --- subtraction method (two separate timings, as in the first experiments) ---
    t_prefill_step_ms: float | None = None
    t_vision_only_ms: float | None = None
    t_llm_sub_ms: float | None = None
    # Which method ran first in this repeat: the order alternates, so neither always follows an idle gap.
    hooked_first: bool | None = None
    # --- cold start and decode ---
    t_cold_start_ms: float | None = None
    t_ttft_ms: float | None = None
    t_tpot_ms: float | None = None
    # --- optional per-block spans ---
    t_llm_blocks_ms: list[float] | None = None
    t_vision_blocks_ms: list[float] | None = None
    # --- memory ---
    peak_mem_bytes: int | None = None
    # --- energy (NVML total-energy counter over back-to-back un-hooked forwards; None without NVML) ---
    energy_j_per_forward: float | None = None
    power_mean_w: float | None = None
    energy_forwards: int | None = None
    # --- provenance ---
    device: str = ""
    gpu_name: str | None = None
    gpu_driver: str | None = None
    cuda_version: str | None = None
    torch_version: str = ""
    transformers_version: str = ""
    tilesweep_version: str = ""
    dtype: str = ""
    attn_implementation: str | None = None
    sm_clock_start_mhz: float | None = None
    sm_clock_end_mhz: float | None = None
    temperature_start_c: float | None = None
    temperature_end_c: float | None = None
    power_start_w: float | None = None
    power_end_w: float | None = None
    gpu_uuid: str | None = None
    mig_enabled: bool | None = None
    # --- what else ran: threads the host used and the machine's load when the config started ---
    torch_threads: int | None = None
    omp_threads: int | None = None
    load_avg_1m: float | None = None
    hostname: str = ""
    node_id: str | None = None
    worker_id: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    # --- outcome ---
    status: str = STATUS_OK
    error_type: str | None = None
    error: str | None = None
    extra: str | None = None  # JSON text for anything architecture-specific

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def record_fields() -> tuple[dataclasses.Field, ...]:
    return dataclasses.fields(Record)
