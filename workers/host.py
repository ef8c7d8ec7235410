"""`ModelHost`: load a model once, then measure any number of configurations.

Each timed repeat is, on the same inputs:

1. the processor on the image (CPU, ``t_preprocess_ms``);
2. one forward with hook timers (stage spans and ``t_total_ms``);
3. the vision path alone (``t_vision_only_ms``) and one un-hooked prefill step
   (``t_prefill_step_ms``, then decode steps when asked): the subtraction baseline,
   ``t_llm_sub_ms = t_prefill_step_ms - t_vision_only_ms``.

Steps 2 and 3 swap places every repeat (``hooked_first``): interleaving the two
methods makes drift (clocks, heat) hit both alike, and alternating their order
keeps either from always running right after the processor's idle gap on the GPU.
One synchronize follows each timed call; marks are read after it.

With NVML on a GPU, back-to-back un-hooked forwards after the timed repeats give
the energy per forward and the mean power (``energy_s`` seconds of them).
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import torch

from tilesweep.errors import GeometryMismatchError
from tilings import Geometry, Scheme, Tiling, resolution_for, tiling_geometry
from tilings.overrides import configured, overrides_text, processor_overrides
from workers import faults, precision
from workers.config import MeasureConfig
from workers.inputs import InputBuilder, Prepared, check_geometry, synthetic_image, with_processor_overrides
from workers.loading import load
from workers.models import count_parameters, resolve_device, resolve_dtype
from workers.provenance import GpuProbe, device_info, host_info, peak_memory_bytes, reset_peak_memory, versions
from workers.record import STATUS_FAILED, Record
from workers.registry import module_map_for
from workers.timers import HookTimer, make_clock

logger = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


class ModelHost:
    """A loaded model and its instruments; `measure` never raises for a per-config failure.

    Raises (from the constructor):
        ValueError: an unknown model, device or dtype, a module path that does not
            resolve, or a Molmo v1 checkpoint without ``trust_remote_code``.
    """

    def __init__(
        self,
        model: str = "tiny-molmo2",
        *,
        device: str | None = None,
        dtype: str | None = None,
        attn_implementation: str | None = None,
        revision: str | None = None,
        trust_remote_code: bool = False,
        profile: str | Scheme | None = None,
        module_overrides: dict[str, str] | None = None,
        seed: int = 0,
    ) -> None:
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.revision = revision
        loaded = load(model, device=self.device, dtype=self.dtype, attn_implementation=attn_implementation,
                      revision=revision, trust_remote_code=trust_remote_code, profile=profile, seed=seed)
        self.name = loaded.name
        self.model = loaded.model
        self.architecture = loaded.architecture
        self.profile: Scheme = loaded.profile
        self.inputs = loaded.inputs
        self.source = loaded.source
        self.module_map, self.modules = module_map_for(self.model, self.architecture, module_overrides)
        self.clock = make_clock(self.device)
        self.probe = GpuProbe(self.device)
        self._provenance = {
            **versions(),
            **device_info(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "attn_implementation": getattr(self.model.config, "_attn_implementation", None),
            "hostname": host_info()["hostname"],
            "gpu_uuid": self.probe.uuid(),
            "mig_enabled": self.probe.mig_enabled(),
        }

    def describe(self) -> dict[str, Any]:
        """What this host runs: model, profile, device, versions, process."""
        return {
            "model": self.name,
            "revision": self.revision,
            "source": self.source,
            "architecture": self.architecture,
            "profile": self.profile.name,
            "profile_fields": self.profile.to_dict(),
            "parameters": count_parameters(self.model),
            "modules": dict(self.modules.paths),
            **self._provenance,
            **host_info(),
        }

    # ----------------------------------------------------------------------------------
    def measure(self, config: MeasureConfig) -> list[Record]:
        """Records of one configuration: one per timed repeat, or one failed record."""
        started = _now()
        try:
            faults.at_config_start(config.tiling_rows, config.tiling_cols, config.attempt)
            with torch.inference_mode(), _on_device(self.device):
                return self._measure(config, started)
        except Exception as exc:  # any per-config failure becomes a row; the host stays usable
            failure = (type(exc).__name__, str(exc) or repr(exc))
            logger.warning("config %s failed: %s: %s", config.tiling_label, *failure)
        # Outside the except block, so the traceback (and the tensors its frames hold) is gone.
        self._free()
        return [self._failed_record(config, started, *failure)]

    def _prediction(self, config: MeasureConfig) -> tuple[tuple[int, int], Geometry, dict[str, Any]]:
        """(image size, what the processor makes of it, the processor overrides it is processed with)."""
        tiling = Tiling(config.tiling_rows, config.tiling_cols)
        if config.processor_overrides is None:  # the tiling's own (none for most schemes)
            overrides = processor_overrides(self.profile, tiling)
        else:
            overrides = dict(config.processor_overrides)
        if config.height is None:
            height, width = resolution_for(tiling, self.profile)
        else:
            height, width = config.height, config.width
        return (height, width), configured(self.profile, overrides).geometry(height, width), overrides

    def _measure(self, config: MeasureConfig, started: datetime) -> list[Record]:
        (height, width), predicted, overrides = self._prediction(config)
        what = f"{self.name} {config.tiling_label} at {height}x{width} (profile {self.profile.name!r}" + (
            f", processor overrides {overrides_text(overrides)})" if overrides else ")")
        if tuple(predicted.tiling) != (config.tiling_rows, config.tiling_cols):
            raise GeometryMismatchError(
                f"{what}: that image size gives tiling {predicted.tiling.rows}x{predicted.tiling.cols}, not the "
                "configured one; leave height/width unset to use the tiling's exact resolution"
            )
        image = synthetic_image(height, width, config.seed)
        inputs = with_processor_overrides(self.inputs, overrides)  # the processor as this config calls it
        prepared_cpu = inputs.process(image)
        check_geometry(prepared_cpu, predicted, what=what)
        prepared = prepared_cpu.to(self.device, self.dtype)
        timer = HookTimer(self.clock, self.modules, block_spans=config.block_spans)

        load = _load_average()
        gpu_start = self.probe.sample()
        reset_peak_memory(self.device)
        cold_ms = self._cold_start(prepared, config)
        for i in range(config.warmup):
            self._repeat(inputs, image, prepared, timer, config, hooked_first=i % 2 == 0)
        samples: list[dict[str, Any]] = []
        rule, began = config.stop_rule(), time.perf_counter()
        while (stop := rule.reason(samples, time.perf_counter() - began)) is None:
            samples.append(self._repeat(inputs, image, prepared, timer, config, hooked_first=len(samples) % 2 == 0))
        reached = precision.worst(precision.stage_precision(precision.columns(samples)))
        peak = peak_memory_bytes(self.device)
        energy = self._energy(prepared, config)
        gpu_end = self.probe.sample()
        finished = _now()
        del prepared

        base = self._base_fields(config, (height, width), predicted, overrides)
        base.update(
            crops_actual=prepared_cpu.crops,
            image_tokens_actual=prepared_cpu.image_tokens,
            seq_len=prepared_cpu.seq_len,
            t_cold_start_ms=cold_ms,
            peak_mem_bytes=peak,
            sm_clock_start_mhz=gpu_start["sm_clock_mhz"], sm_clock_end_mhz=gpu_end["sm_clock_mhz"],
            temperature_start_c=gpu_start["temperature_c"], temperature_end_c=gpu_end["temperature_c"],
            power_start_w=gpu_start["power_w"], power_end_w=gpu_end["power_w"],
            load_avg_1m=load,
            precision_target_pct=config.precision_pct, precision_reached_pct=reached, stop_reason=stop,
            **energy,
            started_at=started, finished_at=finished,
            extra=self._extra(prepared_cpu),
        )
        return [Record(**base, repeat=i, **sample) for i, sample in enumerate(samples)]

    # ----------------------------------------------------------------------------------
    def _forward_kwargs(self, prepared: Prepared, config: MeasureConfig) -> dict[str, Any]:
        return {**prepared.forward, **self.inputs.prefill_kwargs(config.decode_tokens > 0)}

    def _cold_start(self, prepared: Prepared, config: MeasureConfig) -> float:
        """The configuration's first forward (new shapes: allocator growth, kernel selection), timed apart."""
        faults.in_measured_region(config.tiling_rows, config.tiling_cols, config.attempt)
        clock = self.clock
        clock.reset()
        start = clock.mark()
        out = self.model(**self._forward_kwargs(prepared, config))
        end = clock.mark()
        clock.synchronize()
        del out
        return clock.elapsed_ms(start, end)

    def _repeat(self, inputs: InputBuilder, image: Any, prepared: Prepared, timer: HookTimer, config: MeasureConfig,
                *, hooked_first: bool) -> dict[str, Any]:
        faults.in_measured_region(config.tiling_rows, config.tiling_cols, config.attempt)
        kwargs = self._forward_kwargs(prepared, config)

        t0 = time.perf_counter_ns()
        inputs.process(image)
        preprocess_ms = (time.perf_counter_ns() - t0) / 1e6

        if hooked_first:
            hooked = self._hooked(kwargs, timer)
            plain = self._unhooked(kwargs, prepared, config)
        else:
            plain = self._unhooked(kwargs, prepared, config)
            hooked = self._hooked(kwargs, timer)
        return {"t_preprocess_ms": preprocess_ms, **hooked, **plain, "hooked_first": hooked_first}

    def _hooked(self, kwargs: dict[str, Any], timer: HookTimer) -> dict[str, Any]:
        """Hook method: one forward, stage spans from hooks."""
        clock = self.clock
        clock.reset()
        with timer.attached():
            start = clock.mark()
            out = self.model(**kwargs)
            end = clock.mark()
        clock.synchronize()
        stages = timer.read()
        total_ms = clock.elapsed_ms(start, end)
        del out
        vision = stages.ms["vision"]
        return {
            # Every stage's time is its own: a projector inside the vision module is taken out of vision.
            "t_vision_ms": (vision - (stages.ms["projector"] or 0.0)
                            if self.module_map.projector_within_vision and vision is not None else vision),
            "t_projector_ms": stages.ms["projector"],
            "t_llm_prefill_ms": stages.ms["llm_prefill"],
            "t_lm_head_ms": stages.ms["lm_head"],
            "t_total_ms": total_ms,
            "vision_calls": stages.calls["vision"],
            "projector_calls": stages.calls["projector"],
            "t_llm_blocks_ms": stages.llm_blocks_ms,
            "t_vision_blocks_ms": stages.vision_blocks_ms,
        }

    def _unhooked(self, kwargs: dict[str, Any], prepared: Prepared, config: MeasureConfig) -> dict[str, Any]:
        """Subtraction method: the vision path alone, then a whole un-hooked prefill step (and decode)."""
        clock, model = self.clock, self.model
        clock.reset()
        start = clock.mark()
        self.inputs.vision_only(model, prepared.vision)
        end = clock.mark()
        clock.synchronize()
        vision_only_ms = clock.elapsed_ms(start, end)

        clock.reset()
        ttft_ms = tpot_ms = None
        start = clock.mark()
        out = model(**kwargs)
        end = clock.mark()
        if config.decode_tokens:
            out.logits[:, -1].argmax(-1)  # the first token is chosen here
            first = clock.mark()
            for step in range(config.decode_tokens):
                out = self.inputs.decode_step(model, out, step, prepared.seq_len)
            last = clock.mark()
        clock.synchronize()
        prefill_ms = clock.elapsed_ms(start, end)
        if config.decode_tokens:
            ttft_ms = clock.elapsed_ms(start, first)
            tpot_ms = clock.elapsed_ms(first, last) / config.decode_tokens
        del out
        return {
            "t_prefill_step_ms": prefill_ms,
            "t_vision_only_ms": vision_only_ms,
            "t_llm_sub_ms": prefill_ms - vision_only_ms,
            "t_ttft_ms": ttft_ms,
            "t_tpot_ms": tpot_ms,
        }

    def _energy(self, prepared: Prepared, config: MeasureConfig) -> dict[str, Any]:
        """Joules per un-hooked forward and mean power, from NVML's total-energy counter.

        The counter is read around back-to-back forwards lasting ``energy_s`` (at
        least 3), each end after a synchronize, so the window holds those forwards
        and nothing else. No NVML (or ``energy_s`` 0): every value is None.
        """
        none = {"energy_j_per_forward": None, "power_mean_w": None, "energy_forwards": None}
        if config.energy_s <= 0 or self.probe.energy_mj() is None:
            return none
        kwargs = {**prepared.forward, **self.inputs.prefill_kwargs(False)}
        self.clock.synchronize()
        began, start_mj = time.perf_counter(), self.probe.energy_mj()
        count = 0
        while count < 3 or time.perf_counter() - began < config.energy_s:
            self.model(**kwargs)  # the output is dropped at once: only the energy counts
            count += 1
            if count % 4 == 0:  # bound the queue so the wall clock tracks the GPU
                self.clock.synchronize()
        self.clock.synchronize()
        elapsed_s, end_mj = time.perf_counter() - began, self.probe.energy_mj()
        if start_mj is None or end_mj is None or end_mj < start_mj:
            return none
        joules = (end_mj - start_mj) / 1000.0
        return {"energy_j_per_forward": joules / count, "power_mean_w": joules / elapsed_s, "energy_forwards": count}

    # ----------------------------------------------------------------------------------
    def _base_fields(self, config: MeasureConfig, size: tuple[int, int], predicted: Geometry,
                     overrides: dict[str, Any]) -> dict[str, Any]:
        return {
            "run_id": config.run_id,
            "config_id": config.config_id,
            "attempt": config.attempt,
            "model": self.name,
            "revision": self.revision,
            "profile": self.profile.name,
            "processor_overrides": overrides_text(overrides),
            "family": config.family,
            "tiling_rows": config.tiling_rows,
            "tiling_cols": config.tiling_cols,
            "crops": predicted.crops,
            "height": size[0],
            "width": size[1],
            "canvas_height": predicted.canvas[0],
            "canvas_width": predicted.canvas[1],
            "image_tokens": predicted.image_tokens,
            "sequence_tokens": predicted.sequence_tokens,
            "encoder_patches": predicted.encoder_patches or None,
            "warmup": config.warmup,
            "repeats": config.repeats,
            "decode_tokens": config.decode_tokens,
            "torch_threads": torch.get_num_threads(),
            "omp_threads": _int_env("OMP_NUM_THREADS"),
            **self._provenance,
        }

    def _extra(self, prepared: Prepared | None) -> str:
        extra: dict[str, Any] = {"architecture": self.architecture, "modules": self.modules.paths, "pid": os.getpid()}
        if prepared is not None:
            extra.update(inputs=prepared.source, prompt_tokens=prepared.seq_len - prepared.sequence_tokens)
        return json.dumps(extra, sort_keys=True)

    def _failed_record(self, config: MeasureConfig, started: datetime, error_type: str, error: str) -> Record:
        try:
            size, predicted, overrides = self._prediction(config)
        except ValueError:  # e.g. a tiling over max_crops: describe it without the inverse
            overrides = dict(config.processor_overrides or {})
            tiling = Tiling(config.tiling_rows, config.tiling_cols)
            try:
                predicted = tiling_geometry(tiling, self.profile)
            except ValueError:  # a scheme that cannot describe an unreachable target at all
                predicted = Geometry(tiling=tiling, crops=0, canvas=(0, 0), image_tokens=0, sequence_tokens=0)
            size = predicted.canvas if config.height is None else (config.height, config.width)
        return Record(
            **self._base_fields(config, size, predicted, overrides),
            status=STATUS_FAILED,
            error_type=error_type,
            error=error,
            started_at=started,
            finished_at=_now(),
            extra=self._extra(None),
        )

    def _free(self) -> None:
        """Give back what a failed configuration held, so the next one starts clean."""
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)


@contextlib.contextmanager
def _on_device(device: torch.device) -> Iterator[None]:
    """Make `device` the current CUDA device, so work and events without an explicit device land on it."""
    if device.type == "cuda" and device.index is not None:
        with torch.cuda.device(device):
            yield
    else:
        yield


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:  # not available on this platform
        return None


def _int_env(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    return int(value) if value.isdigit() else None
