"""Hook timers on small modules whose durations are known (they sleep)."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from workers.modulemap import ResolvedModules
from workers.timers import CpuClock, CudaClock, HookTimer, make_clock


class Sleep(nn.Module):
    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def forward(self, x):
        time.sleep(self.seconds)
        return x


class Toy(nn.Module):
    """vision (called twice) -> projector -> three blocks -> head."""

    def __init__(self) -> None:
        super().__init__()
        self.vision = Sleep(0.004)
        self.projector = Sleep(0.002)
        self.blocks = nn.ModuleList([Sleep(0.003) for _ in range(3)])
        self.head = Sleep(0.001)

    def forward(self, x):
        x = self.vision(self.vision(x))
        x = self.projector(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def resolved(toy: Toy) -> ResolvedModules:
    return ResolvedModules(vision=[toy.vision], projector=[toy.projector], llm_blocks=list(toy.blocks),
                           lm_head=[toy.head], vision_blocks=[])


def test_spans_cover_their_modules_and_repeated_calls_add_up():
    toy = Toy()
    timer = HookTimer(CpuClock(), resolved(toy))
    with timer.attached():
        toy(torch.zeros(1))
    times = timer.read()
    assert times.calls == {"vision": 2, "projector": 1, "llm_prefill": 1, "lm_head": 1}
    # Each span holds at least what its modules slept; vision slept twice.
    assert times.ms["vision"] >= 8.0
    assert times.ms["projector"] >= 2.0
    assert times.ms["llm_prefill"] >= 9.0
    assert times.ms["lm_head"] >= 1.0
    # Sleeps are short: a span that swallowed a neighbour's sleep would exceed these.
    assert times.ms["projector"] < times.ms["vision"]
    assert times.ms["lm_head"] < times.ms["projector"] + 1.0


def test_hooks_fire_in_forward_order_and_are_removed_afterwards():
    toy = Toy()
    timer = HookTimer(CpuClock(), resolved(toy))
    with timer.attached():
        toy(torch.zeros(1))
    assert timer.log == [
        ("vision", "start"), ("vision", "end"), ("vision", "start"), ("vision", "end"),
        ("projector", "start"), ("projector", "end"), ("llm_prefill", "start"), ("llm_prefill", "end"),
        ("lm_head", "start"), ("lm_head", "end"),
    ]
    for module in toy.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks


def test_block_spans_give_one_span_per_block():
    toy = Toy()
    timer = HookTimer(CpuClock(), resolved(toy), block_spans=True)
    with timer.attached():
        toy(torch.zeros(1))
    times = timer.read()
    assert len(times.llm_blocks_ms) == 3
    assert all(ms >= 3.0 for ms in times.llm_blocks_ms)
    assert sum(times.llm_blocks_ms) <= times.ms["llm_prefill"]
    assert times.vision_blocks_ms is None  # no vision blocks were mapped


def test_a_stage_without_modules_is_not_timed():
    toy = Toy()
    modules = resolved(toy)
    modules.projector = []
    timer = HookTimer(CpuClock(), modules)
    with timer.attached():
        toy(torch.zeros(1))
    times = timer.read()
    assert times.ms["projector"] is None and times.calls["projector"] == 0


def test_cpu_device_gets_the_perf_counter_clock():
    assert isinstance(make_clock(torch.device("cpu")), CpuClock)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_clock_times_gpu_work_with_events():
    device = torch.device("cuda")
    clock = make_clock(device)
    assert isinstance(clock, CudaClock)
    a = torch.randn(2048, 2048, device=device)
    clock.reset()
    start = clock.mark()
    for _ in range(10):
        a = a @ a
        a = a / a.norm()
    end = clock.mark()
    clock.synchronize()
    assert clock.elapsed_ms(start, end) > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_clock_records_on_its_own_devices_stream_whatever_device_is_current():
    last = torch.device("cuda", torch.cuda.device_count() - 1)
    clock = make_clock(last)
    side = torch.cuda.Stream(last)
    with torch.cuda.device(0), torch.cuda.stream(side):  # cuda:0 current; `last`'s current stream is `side`
        a = torch.randn(4096, 4096, device=last)
        clock.reset()
        start = clock.mark()
        for _ in range(20):
            a = a @ a
            a = a / a.norm()
        end = clock.mark()
    # Recorded on `side`: the events wait for the products queued there, so the span covers them.
    clock.synchronize()
    side.synchronize()
    assert start.query() and end.query()
    assert clock.elapsed_ms(start, end) > 0.1


def test_hooks_are_removed_when_the_forward_raises():
    class Boom(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    toy = Toy()
    toy.projector = Boom()
    timer = HookTimer(CpuClock(), resolved(toy))
    with pytest.raises(RuntimeError, match="boom"), timer.attached():
        toy(torch.zeros(1))
    for module in toy.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks


class TickClock(CpuClock):
    """Each mark is the next integer: the order marks were taken in, nothing else."""

    def __init__(self) -> None:
        self.ticks = 0

    def mark(self) -> int:
        self.ticks += 1
        return self.ticks


def test_block_spans_nest_inside_the_stage_that_opens_and_closes_on_blocks():
    toy = Toy()
    timer = HookTimer(TickClock(), resolved(toy), block_spans=True)
    with timer.attached():
        toy(torch.zeros(1))
    [(stage_start, stage_end)] = timer._spans["llm_prefill"].closed
    blocks = [span.closed[0] for span in timer._blocks["llm_blocks"]]
    # The stage opens before the first block's mark and closes after the last block's.
    assert stage_start < blocks[0][0] and blocks[-1][1] < stage_end
