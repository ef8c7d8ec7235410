"""Fault injection: a testing hook, off unless ``TILESWEEP_INJECT`` is set.

Tests (and the orchestrator's reliability tests) use it to make one configuration
fail in a real way, inside a real worker, without mocks::

    TILESWEEP_INJECT="oom@1x3,hang@2x2,error@1x1/1"

Each item is ``<kind>@<rows>x<cols>`` with an optional ``/<attempt>`` that limits it
to that attempt of the configuration:

- ``oom``: raise a real ``torch.OutOfMemoryError`` inside the measured region.
- ``error``: raise a ``RuntimeError`` inside the measured region.
- ``hang``: sleep until killed, at the start of the configuration.
- ``crash``: end the process at once (``os._exit``), as a lost worker would.

The variable is read at every configuration, so it can be set after import.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from tilesweep.errors import UsageError

ENV_VAR = "TILESWEEP_INJECT"
KINDS = ("oom", "error", "hang", "crash")
CRASH_EXIT_CODE = 86


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str
    rows: int
    cols: int
    attempt: int | None = None

    def applies(self, rows: int, cols: int, attempt: int) -> bool:
        return (self.rows, self.cols) == (rows, cols) and self.attempt in (None, attempt)


def parse(spec: str) -> list[Fault]:
    """Parse a ``TILESWEEP_INJECT`` value.

    Raises:
        UsageError: an item that is not ``<kind>@<rows>x<cols>[/<attempt>]``.
    """
    faults = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        kind, _, rest = item.partition("@")
        where, _, attempt = rest.partition("/")
        rows, _, cols = where.lower().partition("x")
        numbers_ok = rows.isdigit() and cols.isdigit() and (attempt == "" or attempt.isdigit())
        if kind not in KINDS or not numbers_ok:
            raise UsageError(
                f"bad {ENV_VAR} item {item!r}: write <kind>@<rows>x<cols>[/<attempt>] with kind one of "
                f"{', '.join(KINDS)}, e.g. oom@1x3 or hang@2x2/1"
            )
        faults.append(Fault(kind, int(rows), int(cols), int(attempt) if attempt else None))
    return faults


def _active(kinds: tuple[str, ...], rows: int, cols: int, attempt: int) -> str | None:
    spec = os.environ.get(ENV_VAR, "")
    if not spec:
        return None
    for fault in parse(spec):
        if fault.kind in kinds and fault.applies(rows, cols, attempt):
            return fault.kind
    return None


def at_config_start(rows: int, cols: int, attempt: int) -> None:
    """Hang or crash here when asked to for this configuration."""
    kind = _active(("hang", "crash"), rows, cols, attempt)
    if kind == "crash":
        os._exit(CRASH_EXIT_CODE)
    if kind == "hang":
        while True:  # until the process is killed: that is the point
            time.sleep(3600)


def in_measured_region(rows: int, cols: int, attempt: int) -> None:
    """Raise the injected error here when asked to for this configuration."""
    kind = _active(("oom", "error"), rows, cols, attempt)
    if kind == "oom":
        import torch

        raise torch.OutOfMemoryError(f"CUDA out of memory (injected by {ENV_VAR} for {rows}x{cols})")
    if kind == "error":
        raise RuntimeError(f"injected failure ({ENV_VAR}) for {rows}x{cols}")
