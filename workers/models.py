"""The model registry: how each model is loaded, which module map and input builder it uses.

Registered specs build Molmo2 from a config with random weights (latency depends
on shapes, not on weights): tiny ones for CPU tests, full-size architectures for
GPU runs without downloads. Anything else is a hub id or a local path, loaded with
``from_pretrained``: Molmo2 natively, Molmo v1 through its remote code only when
``trust_remote_code`` is given.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tilesweep.errors import UsageError
from tilings import PROFILES, Profile
from workers.inputs import TokenLayout

logger = logging.getLogger(__name__)

DTYPES: dict[str, torch.dtype] = {
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
}


def _tiny_config(crop_size: int) -> Any:
    from transformers import Molmo2Config

    return Molmo2Config(
        vision_config={
            "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3, "num_attention_heads": 4,
            "num_key_value_heads": 4, "head_dim": 16, "image_size": [crop_size, crop_size], "patch_size": 14,
        },
        adapter_config={
            "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 4,
            "head_dim": 16, "text_hidden_size": 64, "vision_feature_layer": [-1, -2],
        },
        text_config={
            "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
            "vocab_size": 1000, "additional_vocab_size": 128, "num_hidden_layers": 2, "intermediate_size": 128,
            "max_position_embeddings": 8192, "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
        },
        # Special ids sit in the additional vocabulary, above the base one, as in the released models.
        image_start_token_id=1000, image_end_token_id=1001, image_patch_id=1002, image_col_id=1003,
        low_res_image_start_token_id=1004, frame_start_token_id=1005, frame_end_token_id=1006,
    )


def _arch_config(*, hidden: int, intermediate: int, rope_theta: float) -> Any:
    """Molmo2's released shapes: a SigLIP-so400m ViT (25 of its 27 layers used) and a Qwen3 text tower."""
    from transformers import Molmo2Config

    return Molmo2Config(
        vision_config={
            "hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 25, "num_attention_heads": 16,
            "num_key_value_heads": 16, "head_dim": 72, "image_size": [378, 378], "patch_size": 14,
        },
        adapter_config={
            "hidden_size": 1152, "intermediate_size": intermediate, "num_attention_heads": 16,
            "num_key_value_heads": 16, "head_dim": 72, "text_hidden_size": hidden, "vision_feature_layer": [24, 18],
        },
        text_config={
            "hidden_size": hidden, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
            "vocab_size": 151936, "additional_vocab_size": 128, "num_hidden_layers": 36,
            "intermediate_size": intermediate, "max_position_embeddings": 36864,
            "rope_parameters": {"rope_type": "default", "rope_theta": rope_theta},
        },
        image_col_id=151939,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSpec:
    """A registered model: a config builder, its tiling profile and how its weights are made."""

    name: str
    description: str
    architecture: str  # its module map (workers.modulemap.ARCHITECTURE_MAPS)
    profile: str  # tilings profile name
    config: Callable[[], Any]
    # "seeded-init": the library's own initialisation under a fixed seed (small models);
    # "meta": build on the meta device, then materialise with a cheap fill (no slow init).
    weights: str = "seeded-init"


MODELS: dict[str, ModelSpec] = {
    "tiny-molmo2": ModelSpec(
        name="tiny-molmo2",
        description="Molmo2 architecture at toy size (64 hidden), random weights; tens of ms per forward on a CPU",
        architecture="molmo2", profile="molmo2", config=lambda: _tiny_config(378),
    ),
    "tiny-molmo-v1": ModelSpec(
        name="tiny-molmo-v1",
        description="the tiny Molmo2 architecture built for the molmo-v1 tiling (336 px crops, up to 12 crops)",
        architecture="molmo2", profile="molmo-v1", config=lambda: _tiny_config(336),
    ),
    "molmo2-4b-arch": ModelSpec(
        name="molmo2-4b-arch",
        description="Molmo2-4B shapes (Qwen3-4B text tower), random weights, no download",
        architecture="molmo2", profile="molmo2", weights="meta",
        config=lambda: _arch_config(hidden=2560, intermediate=9728, rope_theta=5_000_000.0),
    ),
    "molmo2-8b-arch": ModelSpec(
        name="molmo2-8b-arch",
        description="Molmo2-8B shapes (Qwen3-8B text tower), random weights, no download",
        architecture="molmo2", profile="molmo2", weights="meta",
        config=lambda: _arch_config(hidden=4096, intermediate=12288, rope_theta=1_000_000.0),
    ),
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


def build_on_meta(spec: ModelSpec, dtype: torch.dtype = torch.bfloat16, attn_implementation: str | None = None) -> nn.Module:
    """The spec's model with every tensor on the meta device: shapes only, no memory, no init cost."""
    from transformers import Molmo2ForConditionalGeneration

    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    with torch.device("meta"):
        return Molmo2ForConditionalGeneration._from_config(spec.config(), dtype=dtype, **kwargs)


@torch.no_grad()
def materialize_(model: nn.Module, device: torch.device, seed: int, std: float = 0.02) -> nn.Module:
    """Give a meta-device model real storage on `device` and a cheap deterministic fill.

    Weights are drawn N(0, std) on the device, norms are ones, biases zeros; the
    rotary tables (the only buffers these models hold) are recomputed.
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
        if "RotaryEmbedding" in kind and hasattr(module, "original_inv_freq"):
            model._init_weights(module)  # recomputes inv_freq from the config
            filled_buffers.update(id(b) for b in module.buffers(recurse=False))
    missed = [name for name, b in model.named_buffers() if id(b) not in filled_buffers]
    if missed:
        raise RuntimeError(f"materialize_ cannot recompute buffers {missed[:5]}; build this model with weights='seeded-init'")
    return model


def build_registered(spec: ModelSpec, *, device: torch.device, dtype: torch.dtype, attn_implementation: str | None, seed: int) -> nn.Module:
    """A registered spec's model on `device`, in `dtype`, in eval mode."""
    from transformers import Molmo2ForConditionalGeneration

    if spec.weights == "meta":
        model = materialize_(build_on_meta(spec, dtype, attn_implementation), device, seed)
    else:
        kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = Molmo2ForConditionalGeneration._from_config(spec.config(), dtype=dtype, **kwargs)
        model = model.to(device)
    return model.eval()


def layout_from_config(config: Any, profile: Profile) -> TokenLayout:
    # The released checkpoints place <im_col> right after <im_patch>; configs that do not
    # name it follow that order.
    return TokenLayout(
        image_start=config.image_start_token_id,
        low_res_start=config.low_res_image_start_token_id,
        image_end=config.image_end_token_id,
        patch=config.image_patch_id,
        col=getattr(config, "image_col_id", config.image_patch_id + 1),
        profile=profile,
    )


def molmo2_image_processor(profile: Profile) -> Any:
    from transformers import Molmo2ImageProcessor

    return Molmo2ImageProcessor(**profile.processor_kwargs())


def check_profile_fits(model: nn.Module, profile: Profile) -> None:
    """A Molmo2 ViT has one position embedding per patch of its crop: the profile's crop must match.

    Raises:
        UsageError: a profile whose crop size the model cannot take.
    """
    vision = getattr(getattr(model, "config", None), "vision_config", None)
    check_crop_size(getattr(vision, "image_size", None), profile)


def check_crop_size(size: Any, profile: Profile) -> None:
    """`check_profile_fits` on a vision config's ``image_size`` (``[h, w]``; None or empty: unknown, passes).

    Raises:
        UsageError: a profile whose crop size differs from `size`.
    """
    if size and list(size) != [profile.crop_size, profile.crop_size]:
        raise UsageError(
            f"profile {profile.name!r} uses {profile.crop_size} px crops but the model's vision tower takes "
            f"{size[0]}x{size[1]}; pick a profile with crop_size {size[0]} (e.g. "
            f"{', '.join(n for n, p in PROFILES.items() if p.crop_size == size[0]) or 'one built from its preprocessor config'})"
        )
