"""Hook timers: forward (pre-)hooks that only record a clock mark.

On CUDA a mark is a ``torch.cuda.Event(enable_timing=True)`` recorded on the
current stream of the clock's own device (not of whatever device is current: a
host on ``cuda:1`` must not time ``cuda:0``); on the CPU it is ``time.perf_counter_ns()``. Nothing synchronizes
inside a hook: the caller synchronizes once after the forward, then reads.

Stages (the ``t_<stage>_ms`` columns): ``vision`` and ``projector`` (pre-hook to
hook on their modules), ``llm_prefill`` (pre-hook on the first LLM block to hook on
the last one), ``lm_head``. A module called several times in one forward adds up
its spans and counts its calls. With ``block_spans``, every LLM and vision block
gets its own span too.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from workers.modulemap import ResolvedModules

HOOK_STAGES = ("vision", "projector", "llm_prefill", "lm_head")


class CpuClock:
    """Marks are ``perf_counter_ns`` readings; work is done when the call returns."""

    def reset(self) -> None:
        pass

    def mark(self) -> int:
        return time.perf_counter_ns()

    def synchronize(self) -> None:
        pass

    @staticmethod
    def elapsed_ms(start: int, end: int) -> float:
        return (end - start) / 1e6


class CudaClock:
    """Marks are CUDA events recorded on the current stream of `device`, reused from a pool across forwards."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._pool: list[torch.cuda.Event] = []
        self._next = 0

    def reset(self) -> None:
        """Start reusing the pool; only call once the previous marks have been read."""
        self._next = 0

    def mark(self) -> torch.cuda.Event:
        if self._next == len(self._pool):
            self._pool.append(torch.cuda.Event(enable_timing=True))
        event = self._pool[self._next]
        self._next += 1
        event.record(torch.cuda.current_stream(self.device))
        return event

    def synchronize(self) -> None:
        torch.cuda.synchronize(self.device)

    @staticmethod
    def elapsed_ms(start: torch.cuda.Event, end: torch.cuda.Event) -> float:
        return float(start.elapsed_time(end))


Clock = CpuClock | CudaClock


def make_clock(device: torch.device) -> Clock:
    return CudaClock(device) if device.type == "cuda" else CpuClock()


@dataclass(slots=True)
class StageTimes:
    """One forward's spans, read after the synchronize."""

    ms: dict[str, float | None]
    calls: dict[str, int]
    llm_blocks_ms: list[float] | None = None
    vision_blocks_ms: list[float] | None = None


@dataclass(slots=True)
class _Span:
    """The closed (start, end) mark pairs of one stage or block; open marks live with their hooks."""

    closed: list[tuple[Any, Any]] = field(default_factory=list)


class HookTimer:
    """Times the stages of one forward with hooks; use `attached()` around the forward.

    ``log`` holds (stage, "start"|"end") in the order the hooks fired, for checks.
    """

    def __init__(self, clock: Clock, modules: ResolvedModules, *, block_spans: bool = False) -> None:
        self.clock = clock
        self.modules = modules
        self.block_spans = block_spans
        self.log: list[tuple[str, str]] = []
        self._spans: dict[str, _Span] = {}
        self._blocks: dict[str, list[_Span]] = {}

    def _stage_targets(self) -> dict[str, list[tuple[nn.Module, nn.Module]]]:
        """Stage -> (module whose pre-hook opens a span, module whose hook closes it)."""
        m = self.modules
        targets: dict[str, list[tuple[nn.Module, nn.Module]]] = {
            "vision": [(mod, mod) for mod in m.vision],
            "projector": [(mod, mod) for mod in m.projector],
            "llm_prefill": [(m.llm_blocks[0], m.llm_blocks[-1])],
            "lm_head": [(mod, mod) for mod in m.lm_head],
        }
        return {stage: pairs for stage, pairs in targets.items() if pairs}

    @contextlib.contextmanager
    def attached(self) -> Iterator[HookTimer]:
        """Register the hooks, yield, and remove them (so un-hooked forwards stay un-hooked)."""
        self.log.clear()
        self._spans = {}
        self._blocks = {}
        handles: list[torch.utils.hooks.RemovableHandle] = []
        try:
            # Blocks first, stages after with their pre-hooks prepended: where a stage opens or
            # closes on a block (llm_prefill), its marks come outside the block's, so spans nest.
            if self.block_spans:
                for kind, blocks in (("llm_blocks", self.modules.llm_blocks), ("vision_blocks", self.modules.vision_blocks)):
                    self._blocks[kind] = [_Span() for _ in blocks]
                    for block, span in zip(blocks, self._blocks[kind]):
                        handles += self._hook_pair("", span, block, block)
            for stage, pairs in self._stage_targets().items():
                span = self._spans[stage] = _Span()
                for opener, closer in pairs:
                    handles += self._hook_pair(stage, span, opener, closer)
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def _hook_pair(self, stage: str, span: _Span, opener: nn.Module, closer: nn.Module) -> list[Any]:
        clock, log, open_marks = self.clock, self.log, []

        # The hooks record and return: no synchronize, no tensor work.
        def pre_hook(module: nn.Module, args: Any) -> None:
            open_marks.append(clock.mark())
            if stage:
                log.append((stage, "start"))

        def post_hook(module: nn.Module, args: Any, output: Any) -> None:
            end = clock.mark()
            if open_marks:
                span.closed.append((open_marks.pop(), end))
            if stage:
                log.append((stage, "end"))

        return [opener.register_forward_pre_hook(pre_hook, prepend=True), closer.register_forward_hook(post_hook)]

    def read(self) -> StageTimes:
        """Sum the spans of the last forward; call after the clock's synchronize."""
        elapsed = self.clock.elapsed_ms
        ms: dict[str, float | None] = {stage: None for stage in HOOK_STAGES}
        calls: dict[str, int] = {stage: 0 for stage in HOOK_STAGES}
        for stage, span in self._spans.items():
            calls[stage] = len(span.closed)
            ms[stage] = sum(elapsed(a, b) for a, b in span.closed) if span.closed else None
        blocks = {kind: [sum(elapsed(a, b) for a, b in s.closed) for s in spans] for kind, spans in self._blocks.items()}
        return StageTimes(
            ms=ms,
            calls=calls,
            llm_blocks_ms=blocks.get("llm_blocks"),
            vision_blocks_ms=blocks.get("vision_blocks") or None,
        )
