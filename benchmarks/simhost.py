"""A simulated model host: the `ModelHost` interface, no torch, sleeps for a modelled time.

`SimHost` lets the real driver be measured at a scale (64 GPUs, 1,000 configs)
that no CPU machine can run for real: each `measure` call sleeps for the
duration `SimCost` gives the config and returns the records a real host would,
with the predicted geometry and the slept time spread over the repeats.

Only ``tilings`` (pure Python) and ``workers.record`` are imported, so a Ray
actor built from this class starts without torch, and 64 of them fit in a few
GiB on a laptop-sized machine.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import socket
import time
from dataclasses import dataclass
from typing import Any, Protocol

from tilings import Tiling, get_profile, resolution_for, tiling_geometry
from workers.record import Record


class _ConfigLike(Protocol):
    """The fields of `workers.MeasureConfig` a simulated host reads."""

    tiling_rows: int
    tiling_cols: int
    height: int | None
    width: int | None
    family: str
    warmup: int
    repeats: int
    decode_tokens: int
    seed: int
    run_id: str
    config_id: str
    attempt: int


@dataclass(kw_only=True, frozen=True, slots=True)
class SimCost:
    """Seconds a simulated config takes: the shape of the real cost, scaled, with seeded noise.

    One forward costs ``per_forward + per_crop * crops + per_ktoken * image_tokens / 1000``
    units; a config runs ``warmup + repeats`` forwards; the result is multiplied by
    ``seconds_per_unit`` and by a lognormal factor (median 1, ``noise_sigma``) drawn
    from the config id, so the same config always takes the same time, on any
    process, and the planner's cost order is right on average but not exactly.
    """

    seconds_per_unit: float = 0.01
    per_forward: float = 1.0
    per_crop: float = 1.0
    per_ktoken: float = 2.0
    noise_sigma: float = 0.5
    profile: str = "molmo-v1"

    def __post_init__(self) -> None:
        if not self.seconds_per_unit > 0:
            raise ValueError(f"SimCost.seconds_per_unit={self.seconds_per_unit!r}: must be > 0 seconds")
        if not self.noise_sigma >= 0:
            raise ValueError(f"SimCost.noise_sigma={self.noise_sigma!r}: must be >= 0")

    def units(self, *, rows: int, cols: int, warmup: int, repeats: int, config_id: str, seed: int = 0) -> float:
        """Relative work of a config before scaling (noise included)."""
        geo = tiling_geometry(Tiling(rows, cols), get_profile(self.profile))
        forward = self.per_forward + self.per_crop * geo.crops + self.per_ktoken * geo.image_tokens / 1000
        noise = random.Random(f"{config_id}:{seed}").lognormvariate(0.0, self.noise_sigma)
        return (warmup + repeats) * forward * noise

    def duration_s(self, config: _ConfigLike) -> float:
        """Seconds `config` (a `workers.MeasureConfig`) sleeps."""
        return self.seconds_per_unit * self.units(
            rows=config.tiling_rows, cols=config.tiling_cols, warmup=config.warmup, repeats=config.repeats,
            config_id=config.config_id, seed=config.seed)


def _utc(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, tz=dt.timezone.utc)


class SimHost:
    """Drop-in for `workers.ModelHost` behind the driver: same `describe` and `measure`.

    Args:
        model: a label copied into the records.
        cost: the duration model; ``SimCost()`` when not given.
        profile: the tiling profile; the cost model's profile when not given.
        **host_options: the `ModelHost` keywords the driver passes (device, dtype,
            revision, ...). A host that computes nothing has no use for them; they
            are accepted so that the driver needs no special case.
    """

    def __init__(self, model: str = "sim", *, cost: SimCost | None = None, profile: str | None = None,
                 **host_options: Any) -> None:
        self.cost = cost or SimCost()
        self.profile = get_profile(profile or self.cost.profile)
        self.model = model
        self._options = {k: v for k, v in host_options.items() if isinstance(v, (str, int, float, bool, type(None)))}

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "profile": self.profile.name,
            "device": "sim",
            "gpu_name": None,
            "dtype": "none",
            "pid": os.getpid(),
            "hostname": socket.gethostname(),
            "simulated": True,
            "cost": {"seconds_per_unit": self.cost.seconds_per_unit, "noise_sigma": self.cost.noise_sigma},
            "options": self._options,
        }

    def measure(self, config: _ConfigLike) -> list[Record]:
        """Sleep for the config's modelled duration; one record per timed repeat."""
        duration = self.cost.duration_s(config)
        start = time.time()
        time.sleep(duration)
        end = time.time()
        tiling = Tiling(config.tiling_rows, config.tiling_cols)
        geo = tiling_geometry(tiling, self.profile)
        height, width = (
            (config.height, config.width) if config.height is not None else resolution_for(tiling, self.profile)
        )
        per_forward_ms = (end - start) * 1000 / (config.warmup + config.repeats)
        timed_start = start + config.warmup * per_forward_ms / 1000
        extra = json.dumps({"sim_duration_s": duration, "config_started": start, "config_finished": end})
        return [
            Record(
                run_id=config.run_id, config_id=config.config_id, attempt=config.attempt,
                model=self.model, profile=self.profile.name, family=config.family,
                tiling_rows=tiling.rows, tiling_cols=tiling.cols, crops=geo.crops,
                height=height, width=width, canvas_height=geo.canvas[0], canvas_width=geo.canvas[1],
                image_tokens=geo.image_tokens, sequence_tokens=geo.sequence_tokens,
                crops_actual=geo.crops, image_tokens_actual=geo.image_tokens,
                repeat=i, warmup=config.warmup, repeats=config.repeats, decode_tokens=config.decode_tokens,
                t_total_ms=per_forward_ms, device="sim", dtype="none", hostname=socket.gethostname(),
                started_at=_utc(timed_start + i * per_forward_ms / 1000),
                finished_at=_utc(timed_start + (i + 1) * per_forward_ms / 1000),
                extra=extra,
            )
            for i in range(config.repeats)
        ]
