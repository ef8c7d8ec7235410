"""Molmo's family: Molmo2 (native in transformers) and Molmo v1 (the checkpoint's remote code).

The registered models build Molmo2 from a config with random weights (latency
depends on shapes, not on weights): tiny ones for CPU tests, full-size
architectures for GPU runs without downloads. A hub id or local path loads real
weights: Molmo2 natively, Molmo v1 through its remote code only with
``trust_remote_code``. Where no tokenizer can be loaded (random-weight
architectures, offline), the Molmo2 input builder uses the image processor and
lays out the image tokens itself, from the processor's own grid.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from tilesweep.errors import GeometryMismatchError, UsageError
from tilings import Profile
from tilings.profiles import PRESETS as MOLMO_PROFILES
from workers.arch import Architecture, ModelSpec, Pretrained
from workers.checkpoints import load_processors
from workers.inputs import FORCED_TOKEN_IDS, PROMPT, PROMPT_IDS, Prepared
from workers.modulemap import ModuleMap

logger = logging.getLogger(__name__)


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


_MAPS: dict[str, ModuleMap] = {
    # transformers' Molmo2ForConditionalGeneration.
    "molmo2": ModuleMap(
        vision=("model.vision_tower",),
        projector=("model.multi_modal_projector",),
        llm_blocks="model.language_model.layers",
        lm_head=("lm_head",),
        vision_blocks="model.vision_tower.layers",
        required=("vision", "projector", "llm_blocks", "lm_head", "vision_blocks"),
    ),
    # Molmo v1 remote code (MolmoForCausalLM): the vision backbone holds the ViT, the
    # pooling attention and the projector MLP as siblings; `ff_out` is absent when the
    # output embedding is tied to the input one (then the head is not a module to hook).
    "molmo-v1": ModuleMap(
        vision=("model.vision_backbone.image_vit",),
        projector=("model.vision_backbone.image_pooling_2d", "model.vision_backbone.image_projector"),
        llm_blocks="model.transformer.blocks",
        lm_head=("model.transformer.ff_out",),
        vision_blocks="model.vision_backbone.image_vit.transformer.resblocks",
        required=("vision", "llm_blocks"),
    ),
}


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


def check_profile_fits(config: Any, profile: Profile) -> None:
    """A Molmo2 ViT has one position embedding per patch of its crop: the profile's crop must match.

    Args:
        config: the model's config (or a model, whose ``config`` is read).

    Raises:
        UsageError: a profile of another scheme, or one whose crop size the model cannot take.
    """
    if not isinstance(profile, Profile):
        raise UsageError(f"profile {profile.name!r} is not a Molmo tiling profile; Molmo models take "
                         f"{', '.join(MOLMO_PROFILES)} or a Molmo preprocessor_config.json")
    config = getattr(config, "config", config)
    vision = getattr(config, "vision_config", None)
    if isinstance(vision, dict):
        check_crop_size(vision.get("image_size"), profile)
    else:
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
            f"{', '.join(n for n, p in MOLMO_PROFILES.items() if p.crop_size == size[0]) or 'one built from its preprocessor config'})"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenLayout:
    """Special token ids and the profile's layout flags: enough to build input_ids from a grid."""

    image_start: int
    low_res_start: int
    image_end: int
    patch: int
    col: int
    profile: Profile

    def image_span(self, low: tuple[int, int], high: tuple[int, int]) -> list[int]:
        """The processor's layout: the low-res view first, then the high-res view."""
        p = self.profile
        low_row = [self.patch] * low[1] + ([self.col] if p.low_res_col_tokens else [])
        high_row = [self.patch] * high[1] + ([self.col] if p.high_res_col_tokens else [])
        low_open = self.low_res_start if p.low_res_start_token else self.image_start
        return (
            [low_open] + low_row * low[0] + [self.image_end]
            + [self.image_start] + high_row * high[0] + [self.image_end]
        )


@dataclass(slots=True)
class Molmo2Inputs:
    """Molmo2 (native transformers): `Molmo2ImageProcessor`, plus the full processor when a tokenizer loads."""

    image_processor: Any
    layout: TokenLayout
    processor: Any = None  # a Molmo2Processor with a tokenizer, or None
    prompt_ids: tuple[int, ...] = PROMPT_IDS
    decode_ids: tuple[int, ...] = FORCED_TOKEN_IDS
    _special: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        lay = self.layout
        self._special = {lay.image_start, lay.low_res_start, lay.image_end, lay.patch, lay.col}

    def process(self, image: Image.Image) -> Prepared:
        if self.processor is not None:
            return self._with_processor(image)
        out = self.image_processor(images=[image], return_tensors="pt")
        low_h, low_w, high_h, high_w = (int(v) for v in out["image_grids"][0].tolist())
        span = self.layout.image_span((low_h, low_w), (high_h, high_w))
        patches = sum(1 for t in span if t == self.layout.patch)
        if patches != out["image_token_pooling"].shape[0]:
            # The model adds one pooled feature per patch token: the counts must agree.
            raise GeometryMismatchError(
                f"the token layout has {patches} patch tokens for grid {[low_h, low_w, high_h, high_w]} but the "
                f"processor pools {out['image_token_pooling'].shape[0]} image tokens; the image processor's "
                "version differs from the layout this tool knows"
            )
        head, tail = list(self.prompt_ids[:1]), list(self.prompt_ids[1:])
        input_ids = torch.tensor([head + span + tail], dtype=torch.long)
        mm_token_type_ids = torch.zeros_like(input_ids)
        mm_token_type_ids[0, len(head) : len(head) + len(span)] = 1
        vision = {k: out[k] for k in ("pixel_values", "image_token_pooling", "image_grids")}
        forward = {**vision, "image_num_crops": out["image_num_crops"], "input_ids": input_ids,
                   "mm_token_type_ids": mm_token_type_ids}
        return Prepared(
            forward=forward,
            vision=vision,
            crops=int(out["pixel_values"].shape[0]),
            image_tokens=int(out["image_token_pooling"].shape[0]),
            sequence_tokens=len(span),
            seq_len=int(input_ids.shape[1]),
            grids=((low_h, low_w), (high_h, high_w)),
            source="image-processor+layout",
        )

    def _with_processor(self, image: Image.Image) -> Prepared:
        proc = self.processor
        out = proc(images=[image], text=f"{proc.image_token}{PROMPT}", return_tensors="pt")
        low_h, low_w, high_h, high_w = (int(v) for v in out["image_grids"][0].tolist())
        input_ids = out["input_ids"]
        vision = {k: out[k] for k in ("pixel_values", "image_token_pooling", "image_grids")}
        forward = {k: v for k, v in out.items() if isinstance(v, torch.Tensor) and k != "attention_mask"}
        if "mm_token_type_ids" in out:  # the processor's own marking of image tokens
            sequence_tokens = int(out["mm_token_type_ids"].sum())
        else:
            sequence_tokens = int(torch.isin(input_ids[0], torch.tensor(sorted(self._special))).sum())
        return Prepared(
            forward=forward,
            vision=vision,
            crops=int(out["pixel_values"].shape[0]),
            image_tokens=int(out["image_token_pooling"].shape[0]),
            sequence_tokens=sequence_tokens,
            seq_len=int(input_ids.shape[1]),
            grids=((low_h, low_w), (high_h, high_w)),
            source="processor",
        )

    @staticmethod
    def prefill_kwargs(use_cache: bool) -> dict[str, Any]:
        # Generation's prefill computes the logits of the last position only.
        return {"use_cache": use_cache, "logits_to_keep": 1}

    @staticmethod
    def vision_only(model: torch.nn.Module, vision: dict[str, torch.Tensor]) -> Any:
        """The vision tower and the adapter, as the forward runs them."""
        return model.model.get_image_features(**vision)

    def decode_step(self, model: torch.nn.Module, output: Any, step: int, prefix_len: int) -> Any:
        token = torch.tensor([[self.decode_ids[step % len(self.decode_ids)]]], device=output.logits.device)
        return model(input_ids=token, cache=output.cache, use_cache=True, logits_to_keep=1)


@dataclass(slots=True)
class MolmoV1Inputs:
    """Molmo v1 remote code: its processor's ``process()`` and its vision backbone.

    Written against the published remote code (MolmoProcessor.process returns
    ``input_ids``, ``images``, ``image_input_idx``, ``image_masks`` unbatched).
    """

    processor: Any
    decode_ids: tuple[int, ...] = FORCED_TOKEN_IDS

    def process(self, image: Image.Image) -> Prepared:
        out = self.processor.process(images=[np.asarray(image)], text=PROMPT)
        batched = {k: v.unsqueeze(0) for k, v in out.items() if isinstance(v, torch.Tensor)}
        tok = self.processor.tokenizer
        special = torch.tensor(tok.convert_tokens_to_ids(["<im_patch>", "<im_col>", "<im_start>", "<im_end>"]))
        input_ids = batched["input_ids"]
        vision = {"images": batched["images"], "image_masks": batched.get("image_masks")}
        return Prepared(
            forward={k: batched[k] for k in ("input_ids", "images", "image_masks", "image_input_idx") if k in batched},
            vision={k: v for k, v in vision.items() if v is not None},
            crops=int(out["images"].shape[0]),
            image_tokens=int((out["image_input_idx"] >= 0).sum()),
            sequence_tokens=int(torch.isin(input_ids[0], special).sum()),
            seq_len=int(input_ids.shape[1]),
            source="processor",
        )

    @staticmethod
    def prefill_kwargs(use_cache: bool) -> dict[str, Any]:
        return {"use_cache": use_cache}

    @staticmethod
    def vision_only(model: torch.nn.Module, vision: dict[str, torch.Tensor]) -> Any:
        return model.model.vision_backbone(vision["images"], vision.get("image_masks"))

    def decode_step(self, model: torch.nn.Module, output: Any, step: int, prefix_len: int) -> Any:
        device = output.logits.device
        token = torch.tensor([[self.decode_ids[step % len(self.decode_ids)]]], device=device)
        mask = torch.ones((1, prefix_len + step + 1), dtype=torch.long, device=device)
        return model(input_ids=token, past_key_values=output.past_key_values, attention_mask=mask, use_cache=True)


def _molmo2_processors(source: str, revision: str | None) -> tuple[Any, Any]:
    """(full processor or None, image processor or None): the tokenizer may not load offline."""
    from transformers import Molmo2ImageProcessor

    return load_processors(source, revision, Molmo2ImageProcessor)


def _preprocessor_settings(processor: Any, image_processor: Any) -> dict[str, Any]:
    """The image processor's settings plus the token-layout flags that live on the full processor."""
    settings = image_processor.to_dict()
    for key in ("image_use_col_tokens", "use_single_crop_col_tokens", "use_single_crop_start_token"):
        if processor is not None and hasattr(processor, key):
            settings[key] = getattr(processor, key)
    return settings


def _inputs(model: nn.Module, profile: Profile) -> Molmo2Inputs:
    return Molmo2Inputs(image_processor=molmo2_image_processor(profile), layout=layout_from_config(model.config, profile))


def _load_molmo2(source: str, *, revision: str | None, device: torch.device, dtype: torch.dtype,
                 model_kwargs: dict[str, Any], scheme: Profile | None) -> Pretrained:
    from transformers import Molmo2ForConditionalGeneration

    model = Molmo2ForConditionalGeneration.from_pretrained(source, revision=revision, dtype=dtype, **model_kwargs)
    model = model.to(device).eval()
    processor, image_processor = _molmo2_processors(source, revision)
    if scheme is None:
        if image_processor is not None:
            scheme = Profile.from_preprocessor_config(_preprocessor_settings(processor, image_processor))
        else:
            logger.warning("%s has no preprocessor config; using the %r tiling profile", source, "molmo2")
            scheme = MOLMO_PROFILES["molmo2"]
    check_profile_fits(model, scheme)
    inputs = Molmo2Inputs(
        image_processor=image_processor if image_processor is not None else molmo2_image_processor(scheme),
        layout=layout_from_config(model.config, scheme),
        processor=processor,
    )
    return Pretrained(model=model, scheme=scheme, inputs=inputs)


def _load_molmo_v1(source: str, *, revision: str | None, device: torch.device, dtype: torch.dtype,
                   model_kwargs: dict[str, Any], scheme: Profile | None) -> Pretrained:
    from transformers import AutoModelForCausalLM, AutoProcessor

    model = AutoModelForCausalLM.from_pretrained(source, revision=revision, trust_remote_code=True, dtype=dtype,
                                                 **model_kwargs)
    model = model.to(device).eval()
    processor = AutoProcessor.from_pretrained(source, revision=revision, trust_remote_code=True)
    if scheme is None:
        scheme = Profile.from_preprocessor_config(processor.image_processor.to_dict())
    return Pretrained(model=model, scheme=scheme, inputs=MolmoV1Inputs(processor=processor))


ARCHITECTURES: dict[str, Architecture] = {
    "molmo2": Architecture(
        name="molmo2", title="Molmo2", model_class="Molmo2ForConditionalGeneration", model_types=("molmo2",),
        module_map=_MAPS["molmo2"], default_profile="molmo2", inputs=_inputs, check_fits=check_profile_fits,
        load_pretrained=_load_molmo2,
    ),
    "molmo-v1": Architecture(
        name="molmo-v1", title="Molmo v1", model_class="AutoModelForCausalLM", model_types=("molmo",),
        module_map=_MAPS["molmo-v1"], default_profile="molmo-v1", inputs=_inputs, load_pretrained=_load_molmo_v1,
        remote_code=True,
    ),
}

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
