"""Per-configuration statistics of records (median, p5, p95) and the CLI's table. Pure Python."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from workers.record import STATUS_OK, Record

HOOK_COLUMNS = ("t_preprocess_ms", "t_vision_ms", "t_projector_ms", "t_llm_prefill_ms", "t_lm_head_ms", "t_total_ms")
SUBTRACTION_COLUMNS = ("t_prefill_step_ms", "t_vision_only_ms", "t_llm_sub_ms")
OTHER_COLUMNS = ("t_cold_start_ms", "t_ttft_ms", "t_tpot_ms")
FORWARD_STAGES = ("t_vision_ms", "t_projector_ms", "t_llm_prefill_ms", "t_lm_head_ms")


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between order statistics (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def stages_sum(record: Record) -> float:
    """The forward's stages that hooks time, added up (missing stages count as 0)."""
    return sum(getattr(record, c) or 0.0 for c in FORWARD_STAGES)


def column(records: Iterable[Record], name: str) -> list[float]:
    return [v for r in records if (v := getattr(r, name)) is not None]


def stats(values: Sequence[float]) -> dict[str, float]:
    return {"median": percentile(values, 50), "p5": percentile(values, 5), "p95": percentile(values, 95), "n": len(values)}


def group_by_config(records: Iterable[Record]) -> dict[tuple[Any, ...], list[Record]]:
    groups: dict[tuple[Any, ...], list[Record]] = {}
    for r in records:
        groups.setdefault((r.model, r.profile, r.tiling_rows, r.tiling_cols, r.height, r.width, r.config_id), []).append(r)
    return groups


def format_table(records: Sequence[Record]) -> str:
    """One block per configuration: every stage's median, p5 and p95 in ms, for both methods."""
    blocks = []
    for group in group_by_config(records).values():
        first = group[0]
        head = (
            f"{first.model}  {first.tiling_rows}x{first.tiling_cols}  {first.height}x{first.width} px  "
            f"crops {first.crops}  image tokens {first.image_tokens}  sequence tokens {first.sequence_tokens}  "
            f"[{first.device} {first.dtype}]"
        )
        if first.status != STATUS_OK:
            blocks.append(f"{head}\n  FAILED {first.error_type}: {first.error}")
            continue
        lines = [head, f"  {'method':<12}{'stage':<16}{'median':>10}{'p5':>10}{'p95':>10}   (ms, n={len(group)})"]

        def row(method: str, label: str, values: list[float]) -> None:
            if values:
                s = stats(values)
                lines.append(f"  {method:<12}{label:<16}{s['median']:>10.3f}{s['p5']:>10.3f}{s['p95']:>10.3f}")

        for name in HOOK_COLUMNS:
            row("hooks", name[2:-3], column(group, name))
        row("hooks", "other", [r.t_total_ms - stages_sum(r) for r in group if r.t_total_ms is not None])
        for name in SUBTRACTION_COLUMNS:
            row("subtraction", name[2:-3], column(group, name))
        for name in OTHER_COLUMNS:
            row("", name[2:-3], column(group, name))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def to_jsonable(record: Record) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in record.to_dict().items()}
