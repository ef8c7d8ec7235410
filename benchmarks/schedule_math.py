"""Makespans computed from durations alone: the lower bound and two reference schedules.

All functions take the per-config durations in seconds and the number of GPUs
and return seconds. They are exact and need no cluster, so the measured
makespan of the real driver can be put next to them.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence


def _check(durations: Sequence[float], gpus: int) -> None:
    if gpus < 1:
        raise ValueError(f"gpus={gpus} is not allowed: need at least 1 GPU")
    if not durations:
        raise ValueError("durations is empty: a makespan needs at least one config")
    if min(durations) < 0:
        raise ValueError(f"durations hold a negative value ({min(durations)}): durations are seconds >= 0")


def lower_bound(durations: Sequence[float], gpus: int) -> float:
    """No schedule finishes sooner: ``max(sum / gpus, longest)``."""
    _check(durations, gpus)
    return max(sum(durations) / gpus, max(durations))


def round_robin_makespan(durations: Sequence[float], gpus: int) -> float:
    """A static split: config ``i`` runs on GPU ``i mod gpus``; the slowest GPU decides."""
    _check(durations, gpus)
    return max(sum(durations[g::gpus]) for g in range(gpus))


def round_robin_loads(durations: Sequence[float], gpus: int) -> list[float]:
    _check(durations, gpus)
    return [sum(durations[g::gpus]) for g in range(gpus)]


def greedy_makespan(durations_in_order: Sequence[float], gpus: int) -> float:
    """A dynamic queue with zero overhead: each config goes to the GPU that frees first.

    With the durations sorted longest first this is LPT scheduling, within
    ``4/3`` of the optimum; it is the makespan the real driver would reach if
    dispatching cost nothing.
    """
    _check(durations_in_order, gpus)
    free_at = [0.0] * gpus
    heapq.heapify(free_at)
    for d in durations_in_order:
        heapq.heappush(free_at, heapq.heappop(free_at) + d)
    return max(free_at)
