"""workers: the measuring instrument. torch + transformers, never ray, polars or pyarrow.

``ModelHost`` loads a model once and measures configurations (`MeasureConfig`)
into `Record` rows; ``python -m workers`` does the same from the command line.
``Record`` and ``MeasureConfig`` import without torch, so the orchestrator's
driver can use them without loading it; the rest loads on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from workers.config import MeasureConfig, parse_tiling
from workers.record import STAGES, STATUS_FAILED, STATUS_OK, Record

if TYPE_CHECKING:
    from workers.host import ModelHost
    from workers.models import MODELS, ModelSpec

__all__ = ["MODELS", "STAGES", "STATUS_FAILED", "STATUS_OK", "MeasureConfig", "ModelHost", "ModelSpec", "Record", "parse_tiling"]


def __getattr__(name: str) -> Any:
    # torch and transformers load only when these are asked for.
    if name == "ModelHost":
        from workers.host import ModelHost

        return ModelHost
    if name in ("MODELS", "ModelSpec"):
        from workers import models

        return getattr(models, name)
    raise AttributeError(f"module 'workers' has no attribute {name!r}")
