"""Fixtures for the orchestrator tests: valid result records built from real tiling geometry."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

import pytest

from tilings import PROFILES, Tiling, resolution_for, tiling_geometry
from workers.record import STATUS_OK, Record


@pytest.fixture
def make_records() -> Callable[..., list[Record]]:
    """``make_records(run_id, config_id, attempt, tiling=(1, 2), repeats=2, status="ok")`` -> records."""

    def make(run_id: str, config_id: str, attempt: int = 1, *, tiling: tuple[int, int] = (1, 2),
             repeats: int = 2, status: str = STATUS_OK, t_total: float = 10.0) -> list[Record]:
        profile = PROFILES["molmo2"]
        height, width = resolution_for(tiling, profile)
        geo = tiling_geometry(Tiling(*tiling), profile)
        now = datetime.now(timezone.utc)
        n = repeats if status == STATUS_OK else 1
        return [Record(run_id=run_id, config_id=config_id, attempt=attempt, model="tiny-molmo2",
                       profile=profile.name, family="1xk", tiling_rows=tiling[0], tiling_cols=tiling[1],
                       crops=geo.crops, height=height, width=width, canvas_height=height, canvas_width=width,
                       image_tokens=geo.image_tokens, sequence_tokens=geo.sequence_tokens, repeat=i,
                       repeats=repeats, t_total_ms=t_total + i if status == STATUS_OK else None,
                       status=status, error=None if status == STATUS_OK else "boom",
                       started_at=now, finished_at=now)
                for i in range(n)]

    return make
