"""`MeasureConfig`: what one `ModelHost.measure` call measures. Pure Python, no torch."""

from __future__ import annotations

import numbers
from dataclasses import dataclass


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"MeasureConfig.{name} must be an integer >= {minimum}, got {value!r}; pass a whole number >= {minimum}")


@dataclass(kw_only=True, frozen=True, slots=True)
class MeasureConfig:
    """One configuration: a tiling (and optionally an explicit image size) and the timing loop.

    Attributes:
        tiling_rows, tiling_cols: the tiling to measure.
        height, width: image size in pixels; ``None`` means the exact size that makes
            the model's processor choose the tiling (`tilings.resolution_for`).
        family: the tiling family label carried into the records ("1xk", ...).
        warmup: untimed repeats after the cold-start call.
        repeats: the least number of timed repeats (one record each).
        min_duration_s: keep repeating until the timed repeats also span this long.
        decode_tokens: forced tokens decoded through the KV cache after the prefill
            (0: prefill only); gives ``t_ttft_ms`` and ``t_tpot_ms``.
        block_spans: also time every LLM and vision block (adds two hooks per block).
        seed: seeds the synthetic image.
        run_id, config_id, attempt: labels copied into every record.
    """

    tiling_rows: int
    tiling_cols: int
    height: int | None = None
    width: int | None = None
    family: str = ""
    warmup: int = 3
    repeats: int = 10
    min_duration_s: float = 0.0
    decode_tokens: int = 0
    block_spans: bool = False
    seed: int = 0
    run_id: str = ""
    config_id: str = ""
    attempt: int = 1

    def __post_init__(self) -> None:
        _check_int("tiling_rows", self.tiling_rows, 1)
        _check_int("tiling_cols", self.tiling_cols, 1)
        for name in ("height", "width"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), 1)
        if (self.height is None) != (self.width is None):
            raise ValueError(
                f"MeasureConfig needs both height and width or neither, got height={self.height!r} width={self.width!r}; "
                "leave both unset to use the tiling's exact resolution"
            )
        _check_int("warmup", self.warmup, 0)
        _check_int("repeats", self.repeats, 1)
        _check_int("decode_tokens", self.decode_tokens, 0)
        _check_int("seed", self.seed, 0)
        _check_int("attempt", self.attempt, 1)
        if isinstance(self.min_duration_s, bool) or not isinstance(self.min_duration_s, numbers.Real) or not self.min_duration_s >= 0:
            raise ValueError(f"MeasureConfig.min_duration_s must be a number of seconds >= 0, got {self.min_duration_s!r}")

    @property
    def tiling_label(self) -> str:
        return f"{self.tiling_rows}x{self.tiling_cols}"


def parse_tiling(text: str) -> tuple[int, int]:
    """``"2x3"`` -> ``(2, 3)``.

    Raises:
        ValueError: anything that is not ``<rows>x<cols>`` with positive integers.
    """
    parts = str(text).strip().lower().split("x")
    if len(parts) == 2 and all(p.isdigit() and int(p) > 0 for p in parts):
        return int(parts[0]), int(parts[1])
    raise ValueError(f"bad tiling {text!r}: write it as <rows>x<cols> with positive integers, e.g. 1x3 or 2x2")
