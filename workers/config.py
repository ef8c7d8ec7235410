"""What one `ModelHost.measure` call measures (`MeasureConfig`) and how it times it (`Timing`). No torch.

`Timing` is the one definition of the timing settings: `MeasureConfig` inherits
it, and so does the sweep spec (`orchestrator.spec.SweepSpec`), so a sweep, a
config and ``python -m workers`` share the fields, defaults, limits and help text
(each a `tilesweep.fields.setting`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tilesweep import fields
from tilesweep.errors import UsageError
from tilesweep.fields import setting
from workers.precision import StopRule


@dataclass(kw_only=True, frozen=True, slots=True)
class Timing:
    """How each config is timed. All of it but ``energy_s`` (read after the timings) defines the measurement
    (and so the config id)."""

    warmup: int = setting(1, minimum=0, metavar="N", group="timing", measurement=True,
                          help="untimed repeats per config, after the timed cold start")
    repeats: int = setting(3, minimum=1, metavar="N", group="timing", measurement=True,
                           help="timed repeats per config (one result row each)")
    min_duration_s: float = setting(0.0, minimum=0, flag="--min-duration", metavar="SECONDS", group="timing",
                                    measurement=True,
                                    help="keep repeating until the timed repeats also span this many seconds")
    precision_pct: float | None = setting(None, minimum=0.1, flag="--precision", metavar="PCT", group="timing",
                                          measurement=True, default_text="off: exactly --repeats",
                                          help="adaptive: after --repeats, repeat until the 95%% confidence interval "
                                               "of every stage's median is within PCT%% of it (at least 6 samples), "
                                               "or --max-repeats or --max-duration is reached")
    max_repeats: int = setting(50, minimum=1, metavar="N", group="timing", measurement=True,
                               help="with --precision: the most timed repeats per config")
    max_duration_s: float = setting(60.0, minimum=0, flag="--max-duration", metavar="SECONDS", group="timing",
                                    measurement=True, help="with --precision: stop repeating a config after this long")
    decode_tokens: int = setting(0, minimum=0, metavar="N", group="timing", measurement=True,
                                 help="tokens decoded after the prefill (gives time to first token and per token)")
    block_spans: bool = setting(False, group="timing", measurement=True,
                                help="also time every LLM and vision block (two more hooks per block)")
    energy_s: float = setting(1.0, minimum=0, flag="--energy", metavar="SECONDS", group="timing",
                              help="on GPUs with NVML: seconds of back-to-back un-hooked forwards per config, after "
                                   "the timed repeats, for joules per forward and mean power (0: off)")
    seed: int = setting(0, minimum=0, metavar="N", group="timing", measurement=True,
                        help="seed of the synthetic image (and of random weights)")

    def __post_init__(self) -> None:
        fields.check(self)

    def stop_rule(self) -> StopRule:
        """When a config stops repeating (`workers.precision.StopRule`)."""
        return StopRule(repeats=self.repeats, min_duration_s=self.min_duration_s, target_pct=self.precision_pct,
                        max_repeats=self.max_repeats, max_duration_s=self.max_duration_s)

    def identity(self) -> dict[str, object]:
        """The timing settings that define a config; the adaptive caps only when the adaptive rule is on.

        Settings added after the first runs are left out while off, so the ids of
        configs measured before they existed stay the same.
        """
        on = self.precision_pct is not None
        return {f.name: getattr(self, f.name) for f, m in fields.settings(Timing)
                if m.measurement and (on or f.name not in ADAPTIVE)}


# The adaptive rule's settings: part of a config id only while it is on (the first is the switch).
ADAPTIVE = ("precision_pct", "max_repeats", "max_duration_s")


@dataclass(kw_only=True, frozen=True, slots=True)
class MeasureConfig(Timing):
    """One configuration: a tiling (and optionally an explicit image size), timed as `Timing` says.

    Attributes:
        tiling_rows, tiling_cols: the tiling to measure.
        height, width: image size in pixels; ``None`` means the exact size that makes
            the model's processor choose the tiling (`tilings.resolution_for`).
        family: the tiling family label carried into the records ("1xk", ...).
        run_id, config_id, attempt: labels copied into every record.
        processor_overrides: processor settings on top of the profile's (`tilings.overrides`), passed to the
            processor at call time. ``None``: the ones the tiling needs (`tilings.overrides.processor_overrides`;
            most schemes need none); ``{}``: none at all.
    """

    tiling_rows: int = setting(minimum=1, flag=False, help="tile rows")
    tiling_cols: int = setting(minimum=1, flag=False, help="tile columns")
    height: int | None = setting(None, minimum=1, flag=False, help="image height in px")
    width: int | None = setting(None, minimum=1, flag=False, help="image width in px")
    family: str = ""
    run_id: str = ""
    config_id: str = ""
    attempt: int = setting(1, minimum=1, flag=False, help="dispatch number of this config")
    processor_overrides: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        fields.check(self)
        if (self.height is None) != (self.width is None):
            raise UsageError(
                f"MeasureConfig needs both height and width or neither, got height={self.height!r} width={self.width!r}; "
                "leave both unset to use the tiling's exact resolution"
            )

    @property
    def tiling_label(self) -> str:
        return f"{self.tiling_rows}x{self.tiling_cols}"


def parse_tiling(text: str) -> tuple[int, int]:
    """``"2x3"`` -> ``(2, 3)``.

    Raises:
        UsageError: anything that is not ``<rows>x<cols>`` with positive integers.
    """
    parts = str(text).strip().lower().split("x")
    if len(parts) == 2 and all(p.isdigit() and int(p) > 0 for p in parts):
        return int(parts[0]), int(parts[1])
    raise UsageError(f"bad tiling {text!r}: write it as <rows>x<cols> with positive integers, e.g. 1x3 or 2x2")
