"""Where a number came from: library versions, the device, and the GPU's state.

The GPU state (SM clock, temperature, power) is read through NVML
(``nvidia-ml-py``) at the start and end of every configuration: a throttled or hot
GPU explains drift that the timings alone cannot. NVML also gives the GPU's
identity (UUID, whether MIG partitions it) and its total-energy counter, from which
`ModelHost` takes the energy of a config's forwards. NVML is optional; without it
(or on the CPU) those columns are ``None``, never zero.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import resource
import socket
import sys
from dataclasses import dataclass, field
from typing import Any

import torch

logger = logging.getLogger(__name__)


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def versions() -> dict[str, str | None]:
    import transformers

    return {
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "tilesweep_version": package_version("tilesweep"),
        "cuda_version": torch.version.cuda if torch.cuda.is_available() else None,
    }


def device_info(device: torch.device) -> dict[str, str | None]:
    """``device``, ``gpu_name`` and ``gpu_driver`` columns."""
    if device.type != "cuda":
        return {"device": str(device), "gpu_name": None, "gpu_driver": None}
    index = device.index if device.index is not None else torch.cuda.current_device()
    probe = GpuProbe(device)
    return {
        "device": f"cuda:{index}",
        "gpu_name": torch.cuda.get_device_name(index),
        "gpu_driver": probe.driver(),
    }


def host_info() -> dict[str, Any]:
    return {"hostname": socket.gethostname(), "pid": os.getpid(), "python": sys.version.split()[0]}


@dataclass
class GpuProbe:
    """NVML handle for one CUDA device; every reading is ``None`` when NVML is unavailable."""

    device: torch.device
    _handle: Any = field(default=None, init=False)
    _nvml: Any = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.device.type != "cuda":
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handle = self._find_handle(pynvml)
        except Exception as exc:  # NVML is a nice-to-have: no library, no driver, no permission
            logger.info("NVML unavailable, GPU clocks/temperature/power not recorded: %s", exc)
            self._handle = None

    def _find_handle(self, pynvml: Any) -> Any:
        # torch numbers devices after CUDA_VISIBLE_DEVICES; NVML does not. The UUID is the same in both.
        index = self.device.index if self.device.index is not None else torch.cuda.current_device()
        uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
        if uuid is not None:
            text = str(uuid)
            return pynvml.nvmlDeviceGetHandleByUUID(text if text.startswith(("GPU-", "MIG-")) else f"GPU-{text}")
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        ids = [v.strip() for v in visible.split(",") if v.strip()]
        if ids and index < len(ids) and ids[index].isdigit():
            index = int(ids[index])
        return pynvml.nvmlDeviceGetHandleByIndex(index)

    def driver(self) -> str | None:
        if self._nvml is None:
            return None
        try:
            value = self._nvml.nvmlSystemGetDriverVersion()
            return value.decode() if isinstance(value, bytes) else str(value)
        except Exception:  # a reading that fails is a missing value, never a failed measurement
            return None

    def _read(self, read: Any) -> Any:
        if self._handle is None:
            return None
        try:
            return read(self._nvml, self._handle)
        except Exception:  # a reading that fails is a missing value, never a failed measurement
            return None

    def uuid(self) -> str | None:
        """The GPU's (or MIG instance's) UUID, the one stable name of a physical device across hosts and reboots."""
        value = self._read(lambda nvml, h: nvml.nvmlDeviceGetUUID(h))
        return value.decode() if isinstance(value, bytes) else value

    def mig_enabled(self) -> bool | None:
        """Whether MIG is on (a MIG slice has a fraction of the SMs: its timings are not the whole GPU's)."""
        modes = self._read(lambda nvml, h: nvml.nvmlDeviceGetMigMode(h))
        if modes is None:
            return None
        current = modes[0] if isinstance(modes, (list, tuple)) else modes
        return bool(current == getattr(self._nvml, "NVML_DEVICE_MIG_ENABLE", 1))

    def energy_mj(self) -> int | None:
        """The device's total-energy counter in millijoules (since the driver loaded; Volta and newer)."""
        return self._read(lambda nvml, h: int(nvml.nvmlDeviceGetTotalEnergyConsumption(h)))

    def sample(self) -> dict[str, float | None]:
        """SM clock (MHz), temperature (C) and power draw (W) now; a reading the board lacks is None."""
        return {
            "sm_clock_mhz": self._read(lambda nvml, h: float(nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_SM))),
            "temperature_c": self._read(
                lambda nvml, h: float(nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU))),
            "power_w": self._read(lambda nvml, h: nvml.nvmlDeviceGetPowerUsage(h) / 1000.0),
        }


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device: torch.device) -> int:
    """CUDA: peak allocated since the last reset. CPU: the process's max RSS so far (never reset)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    # ru_maxrss is in kilobytes on Linux (bytes on macOS).
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)
