"""Building registered models: devices, dtypes, and random weights made fast.

A registered model (`workers.arch.ModelSpec`, collected in `workers.registry`) is
built from its config with random weights (latency depends on shapes, not on
weights): tiny ones for CPU tests with the library's own seeded initialisation,
full-size architectures on the meta device and then materialised with a cheap
fill, for GPU runs without downloads.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from tilesweep.errors import UsageError
from workers.arch import ModelSpec
from workers.registry import ARCHITECTURES, MODELS

__all__ = ["DTYPES", "MODELS", "ModelSpec", "build_on_meta", "build_registered", "count_parameters", "materialize_",
           "model_class", "resolve_device", "resolve_dtype"]

logger = logging.getLogger(__name__)

DTYPES: dict[str, torch.dtype] = {
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
}


def resolve_device(device: str | None) -> torch.device:
    """The device to run on: ``cuda`` when there is one, else ``cpu``, unless given.

    Raises:
        UsageError: a CUDA device where CUDA is unavailable, or an unparsable name.
    """
    if device is None:
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UsageError(f"unknown device {device!r}; use cpu, cuda or cuda:<index>") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"device {device!r} asked for but CUDA is not available here; use --device cpu")
        return torch.device("cuda", dev.index if dev.index is not None else torch.cuda.current_device())
    if dev.type != "cpu":
        raise UsageError(f"unsupported device {device!r}; use cpu, cuda or cuda:<index>")
    return dev


def resolve_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    """bf16 on a GPU, fp32 on the CPU, unless given.

    Raises:
        UsageError: an unknown dtype name.
    """
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    key = str(dtype).lower().removeprefix("torch.")
    if key not in DTYPES:
        raise UsageError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    return DTYPES[key]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_class(spec: ModelSpec) -> Any:
    """The transformers class a registered model is built with (its architecture's)."""
    import transformers

    return getattr(transformers, ARCHITECTURES[spec.architecture].model_class)


def build_on_meta(spec: ModelSpec, dtype: torch.dtype = torch.bfloat16, attn_implementation: str | None = None) -> nn.Module:
    """The spec's model with every tensor on the meta device: shapes only, no memory, no init cost."""
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    with torch.device("meta"):
        return model_class(spec)._from_config(spec.config(), dtype=dtype, **kwargs)


@torch.no_grad()
def materialize_(model: nn.Module, device: torch.device, seed: int, std: float = 0.02) -> nn.Module:
    """Give a meta-device model real storage on `device` and a cheap deterministic fill.

    Weights are drawn N(0, std) on the device, norms are ones, biases zeros; the
    rotary tables are recomputed, Gemma's embedding scale set and embedding position
    ids refilled (the buffers these models hold); any other buffer is an error.
    """
    model.to_empty(device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    filled_buffers: set[int] = set()
    for module in model.modules():
        kind = type(module).__name__
        for name, param in module.named_parameters(recurse=False):
            if "Norm" in kind:
                param.fill_(1.0 if name == "weight" else 0.0)
            elif name == "bias":
                param.zero_()
            else:
                param.normal_(0.0, std, generator=generator)
        if "RotaryEmbedding" in kind and (hasattr(module, "original_inv_freq") or _per_layer_type_rope(module)):
            model._init_weights(module)  # recomputes inv_freq (Gemma 3: one table per layer type) from the config
            filled_buffers.update(id(b) for b in module.buffers(recurse=False))
        if hasattr(module, "scalar_embed_scale") and hasattr(module, "embed_scale"):  # Gemma's scaled embedding
            module.embed_scale.fill_(module.scalar_embed_scale)
            filled_buffers.add(id(module.embed_scale))
    for name, buffer in model.named_buffers():
        # An input normalisation's statistics (Phi-4-multimodal's audio encoder), as the model's own init sets them.
        if name.endswith((".global_mean", ".global_invstd")):
            buffer.fill_(0.0 if name.endswith("mean") else 1.0)
            filled_buffers.add(id(buffer))
        # Embedding position ids (SigLIP's, non-persistent): 0..n-1 along the last dimension.
        if id(buffer) not in filled_buffers and name.endswith("position_ids") and not buffer.is_floating_point():
            buffer.copy_(torch.arange(buffer.shape[-1], device=buffer.device).expand_as(buffer))
            filled_buffers.add(id(buffer))
    missed = [name for name, b in model.named_buffers() if id(b) not in filled_buffers]
    if missed:
        raise RuntimeError(f"materialize_ cannot recompute buffers {missed[:5]}; build this model with weights='seeded-init'")
    return model


def _per_layer_type_rope(module: nn.Module) -> bool:
    """Gemma 3's rotary module: an ``<type>_inv_freq`` table per layer type, recomputed by the model's init."""
    types = getattr(module, "layer_types", None)
    return bool(types) and all(hasattr(module, f"{t}_original_inv_freq") for t in types)


def build_registered(spec: ModelSpec, *, device: torch.device, dtype: torch.dtype, attn_implementation: str | None, seed: int) -> nn.Module:
    """A registered spec's model on `device`, in `dtype`, in eval mode."""
    if spec.weights == "meta":
        model = materialize_(build_on_meta(spec, dtype, attn_implementation), device, seed)
    else:
        kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = model_class(spec)._from_config(spec.config(), dtype=dtype, **kwargs)
        model = model.to(device)
    return model.eval()
