"""Pixtral and Mistral 3: a Pixtral vision tower at native resolution, a Mistral LLM, ``[IMG]`` rows.

Pixtral-12B runs in transformers as ``LlavaForConditionalGeneration`` with a Pixtral
vision config (``model_type`` "llava", vision ``model_type`` "pixtral"; every 16 px
patch is a token); Mistral 3 (Mistral-Small-3.1) as ``Mistral3ForConditionalGeneration``
(14 px patches, 2x2 of them merged into a token by the projector's patch merger). Both
use ``PixtralImageProcessor`` and ``PixtralProcessor``: the image keeps its aspect ratio
under a longest-edge cap and each side rounds up to a token (`tilings.nativeres`).

The registered models build the architectures from a config with random weights
(latency depends on shapes, not weights): tiny ones for CPU tests, full-size ones
for GPU runs without downloads. A hub id or local path loads real weights. Where no
tokenizer can be loaded (random-weight architectures, offline), the input builder
runs the image processor as ``PixtralProcessor`` does (``patch_size * spatial_merge_size``)
and writes the image's tokens with ``PixtralProcessor.replace_image_token`` itself:
``([IMG] * cols + [IMG_BREAK]) * rows`` with the last break an ``[IMG_END]``. The image
token count is exact either way; so is the sequence count (one id per ``[IMG]``, break and
end), with the ids of the loaded tokenizer where there is one, else the model config's
(``image_token_index``, and ``image_break_token_id`` / ``image_end_token_id`` where the
config states them, as the tiny models do) or Mistral's Tekken ids 12 and 13.

Module map (both architectures; the same module paths, so `detect_architecture` cannot
tell them apart and names the first, while a loaded model always knows its own):
vision = ``model.vision_tower`` (the Pixtral ViT: patch conv, RMSNorm, 2-D RoPE
transformer, run once on the whole image); projector = ``model.multi_modal_projector``
(Pixtral-12B: 2-layer GELU MLP; Mistral 3: RMSNorm, the patch merger, which folds 2x2
patch features into one and projects them, then the 2-layer MLP); LLM prefill = first to
last ``model.language_model.layers``; LM head = ``lm_head``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torch import nn

from tilesweep.errors import GeometryMismatchError, UsageError
from tilings import PROFILES, Scheme
from tilings.nativeres import PRESETS as NATIVE_PRESETS
from tilings.nativeres import NativeResolution
from workers.arch import Architecture, ModelSpec, Pretrained
from workers.checkpoints import config_value, load_processors
from workers.inputs import FORCED_TOKEN_IDS, PROMPT, PROMPT_IDS, Prepared
from workers.modulemap import ModuleMap

logger = logging.getLogger(__name__)

# The tiny models' special ids, inside their 1024-token vocabulary and above every id of
# workers.inputs.PROMPT_IDS / FORCED_TOKEN_IDS (Mistral's own 10, 12 and 13 collide with them).
TINY_VOCAB = 1024
TINY_IDS = {"image_token_index": 1000, "image_break_token_id": 1001, "image_end_token_id": 1002}
# [IMG], [IMG_BREAK] and [IMG_END] in Mistral's Tekken tokenizer (Pixtral-12B, Mistral-Small-3.1: the
# params.json image_token_id / image_break_token_id / image_end_token_id); config.json states only the first.
MISTRAL_IDS = {"image_token_index": 10, "image_break_token_id": 12, "image_end_token_id": 13}
_TOKEN = re.compile(r"\[IMG(?:_BREAK|_END)?\]")


# ----------------------------------------------------------------------------------------------
# Configs


def _tiny_vision(patch_size: int, image_size: int) -> dict[str, Any]:
    return {"model_type": "pixtral", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 4, "patch_size": patch_size, "image_size": image_size, "hidden_act": "silu"}


_TINY_TEXT = {
    "model_type": "mistral", "vocab_size": TINY_VOCAB, "hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
    "max_position_embeddings": 32768, "sliding_window": None,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000_000.0},
}


def _tiny_pixtral_config() -> Any:
    """Pixtral-12B at toy size: the released geometry (16 px patches, every patch a token, 1024 px cap)."""
    from transformers import LlavaConfig

    return LlavaConfig(
        vision_config=_tiny_vision(16, 1024), text_config=_TINY_TEXT, vision_feature_layer=-1,
        vision_feature_select_strategy="full", projector_hidden_act="gelu", multimodal_projector_bias=True,
        image_seq_length=1, tie_word_embeddings=False, **TINY_IDS,
    )


def _tiny_mistral3_config() -> Any:
    """Mistral 3 at toy size: the released geometry (14 px patches, 2x2 merged, 1540 px cap)."""
    from transformers import Mistral3Config

    return Mistral3Config(
        vision_config=_tiny_vision(14, 1540), text_config=_TINY_TEXT, vision_feature_layer=-1,
        spatial_merge_size=2, projector_hidden_act="gelu", multimodal_projector_bias=False,
        tie_word_embeddings=False, **TINY_IDS,
    )


def _pixtral_12b_config() -> Any:
    """mistral-community/pixtral-12b's config.json (the checkpoint transformers' docs run; 12.68B parameters).

    Text: Mistral-Nemo-12B (hidden 5120, MLP 14336, 40 layers, 32 heads of 128, 8 KV heads,
    rope_theta 1e9, 131072-token vocabulary, untied head, max_position_embeddings 1024000, no
    sliding window). Vision: Pixtral-ViT (hidden 1024, MLP 4096, 24 layers, 16 heads of 64,
    patch 16, image_size 1024, rope_theta 1e4, SiLU-gated MLP). LLaVA: image_token_index 10,
    vision_feature_layer -1, strategy "full", GELU projector with biases (params.json adapter_bias).
    The same numbers as transformers' ``convert_pixtral_weights_to_hf.py`` writes; the vision
    ``hidden_act`` (which changes neither shapes nor the parameter count) was not re-read from the hub.
    """
    from transformers import LlavaConfig

    return LlavaConfig(
        vision_config={
            "model_type": "pixtral", "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
            "num_attention_heads": 16, "head_dim": 64, "patch_size": 16, "image_size": 1024, "hidden_act": "silu",
            "rope_parameters": {"rope_type": "axial", "rope_theta": 10000.0},
        },
        text_config={
            "model_type": "mistral", "vocab_size": 131072, "hidden_size": 5120, "intermediate_size": 14336,
            "num_hidden_layers": 40, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
            "max_position_embeddings": 1024000, "rms_norm_eps": 1e-5, "sliding_window": None, "hidden_act": "silu",
            "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000_000.0},
            "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": False,
        },
        vision_feature_layer=-1, vision_feature_select_strategy="full", projector_hidden_act="gelu",
        multimodal_projector_bias=True, image_seq_length=1, tie_word_embeddings=False, **MISTRAL_IDS,
    )


def _mistral3_24b_config() -> Any:
    """mistralai/Mistral-Small-3.1-24B-Instruct-2503's config.json (24.0B parameters; 48 GB in bf16: one 80 GB GPU).

    Text: hidden 5120, MLP 32768, 40 layers, 32 heads of 128, 8 KV heads, rope_theta 1e9,
    131072-token vocabulary, untied head, max_position_embeddings 131072, no sliding window.
    Vision: Pixtral-ViT (hidden 1024, MLP 4096, 24 layers, 16 heads of 64, patch 14, image_size
    1540, rope_theta 1e4, SiLU). Mistral 3: spatial_merge_size 2, image_token_index 10,
    vision_feature_layer -1, GELU projector without biases. The numbers transformers'
    ``convert_mistral3_weights_to_hf.py`` reads from its params.json (max_image_size 1540,
    mm_projector_id "patch_merge", adapter_bias false), as a copy of that config.json states them.
    """
    from transformers import Mistral3Config

    return Mistral3Config(
        vision_config={
            "model_type": "pixtral", "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
            "num_attention_heads": 16, "head_dim": 64, "patch_size": 14, "image_size": 1540, "hidden_act": "silu",
            "rope_parameters": {"rope_type": "axial", "rope_theta": 10000.0},
        },
        text_config={
            "model_type": "mistral", "vocab_size": 131072, "hidden_size": 5120, "intermediate_size": 32768,
            "num_hidden_layers": 40, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
            "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "sliding_window": None, "hidden_act": "silu",
            "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000_000.0},
            "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": False,
        },
        vision_feature_layer=-1, spatial_merge_size=2, projector_hidden_act="gelu", multimodal_projector_bias=False,
        tie_word_embeddings=False, **MISTRAL_IDS,
    )


# ----------------------------------------------------------------------------------------------
# Module map (module docstring): the same paths in LlavaForConditionalGeneration and Mistral3ForConditionalGeneration.

MODULE_MAP = ModuleMap(
    vision=("model.vision_tower",),
    projector=("model.multi_modal_projector",),
    llm_blocks="model.language_model.layers",
    lm_head=("lm_head",),
    # The Pixtral ViT's blocks (`transformer.layers`), which tell it from SigLIP/CLIP/InternViT towers.
    vision_blocks="model.vision_tower.transformer.layers",
    required=("vision", "projector", "llm_blocks", "lm_head", "vision_blocks"),
)


# ----------------------------------------------------------------------------------------------
# Does a scheme fit a model?


def model_numbers(config: Any) -> dict[str, Any]:
    """What a Pixtral-12B (LLaVA) or Mistral 3 config says about image geometry (a config object, a raw
    ``config.json`` dict or a model): vision tower type and patch, tokens' merge, feature strategy."""
    config = getattr(config, "config", config)
    model_type = config_value(config, "model_type")
    vision = config_value(config, "vision_config", default={})
    return {
        "model_type": model_type,
        "vision_model_type": config_value(vision, "model_type"),
        "patch_size": config_value(vision, "patch_size"),
        # LLaVA has no merge (every patch is a token); Mistral3Config defaults to 2.
        "merge_size": config_value(config, "spatial_merge_size", default=2) if model_type == "mistral3" else 1,
        # LlavaConfig's default is "default", which drops a CLS token a Pixtral tower does not have.
        "strategy": config_value(config, "vision_feature_select_strategy", default="default")
        if model_type == "llava" else "full",
    }


def check_scheme_fits(config: Any, scheme: Scheme) -> None:
    """The scheme must round images to the model's tokens: its patch and merge are the model's.

    Args:
        config: a transformers config object, a raw ``config.json`` dict or a model.

    Raises:
        UsageError: a scheme of another kind; a LLaVA checkpoint whose vision tower is not Pixtral or whose
            feature strategy drops a CLS token; a patch or merge size other than the model's.
    """
    if not isinstance(scheme, NativeResolution):
        raise UsageError(
            f"profile {getattr(scheme, 'name', scheme)!r} is not a native-resolution scheme; Pixtral and Mistral 3 "
            f"models take {', '.join(NATIVE_PRESETS)} or a Pixtral preprocessor_config.json"
        )
    got = model_numbers(config)
    if got["vision_model_type"] not in (None, "pixtral"):
        raise UsageError(
            f"the model's vision tower is {got['vision_model_type']!r}, not 'pixtral': tilesweep runs LLaVA "
            "checkpoints with a Pixtral tower (Pixtral-12B) only; pass a Pixtral or Mistral 3 checkpoint"
        )
    if got["strategy"] != "full":
        raise UsageError(
            f"the model's vision_feature_select_strategy is {got['strategy']!r}, which drops a CLS token the Pixtral "
            "tower does not have (one feature fewer than [IMG] tokens); use 'full', as Pixtral-12B's config does"
        )
    patch = got["patch_size"]
    if patch is not None and patch != scheme.patch_size:
        fitting = ", ".join(n for n, p in NATIVE_PRESETS.items() if p.patch_size == patch)
        raise UsageError(
            f"profile {scheme.name!r} has patch_size {scheme.patch_size} but the model's vision tower uses {patch} px "
            f"patches; pick a profile with patch_size {patch} (e.g. {fitting or 'one built from its config'})"
        )
    if got["merge_size"] != scheme.merge_size:
        raise UsageError(
            f"profile {scheme.name!r} merges {scheme.merge_size}x{scheme.merge_size} patches into a token but the "
            f"model merges {got['merge_size']}x{got['merge_size']}; its [IMG] count and the model's features would "
            f"differ: pick a profile with merge_size {got['merge_size']}"
        )


# ----------------------------------------------------------------------------------------------
# Input builder


def image_processor_for(scheme: NativeResolution) -> Any:
    """`transformers.PixtralImageProcessor` configured to the scheme."""
    from transformers import PixtralImageProcessor

    return PixtralImageProcessor(**scheme.processor_kwargs())


def token_writer(patch_size: int, spatial_merge_size: int) -> Any:
    """transformers' own `PixtralProcessor`, without a tokenizer: only its `replace_image_token` is used.

    ``PixtralProcessor.__init__`` asks a tokenizer for the token ids; `replace_image_token`
    reads only these five attributes, so they are set on an instance made without one.
    """
    from transformers import PixtralProcessor

    writer = PixtralProcessor.__new__(PixtralProcessor)
    writer.patch_size = patch_size
    writer.spatial_merge_size = spatial_merge_size
    writer.image_token, writer.image_break_token, writer.image_end_token = "[IMG]", "[IMG_BREAK]", "[IMG_END]"
    return writer


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenLayout:
    """The ids of ``[IMG]``, ``[IMG_BREAK]`` and ``[IMG_END]`` in one model's vocabulary."""

    image: int
    image_break: int
    image_end: int

    def ids(self, text: str) -> list[int]:
        """The ids of a `replace_image_token` string (its tokens written back to back, nothing else)."""
        names = _TOKEN.findall(text)
        if "".join(names) != text:
            raise GeometryMismatchError(f"PixtralProcessor wrote {text[:80]!r}..., not only [IMG] tokens; the "
                                        "processor's version differs from the one this tool knows")
        by_name = {"[IMG]": self.image, "[IMG_BREAK]": self.image_break, "[IMG_END]": self.image_end}
        return [by_name[n] for n in names]

    @property
    def special(self) -> tuple[int, int, int]:
        return (self.image, self.image_break, self.image_end)


def layout_from_config(config: Any, processor: Any = None) -> TokenLayout:
    """The loaded tokenizer's ids where a full processor is given, else the config's (Tekken's 12, 13 by default)."""
    if processor is not None:
        return TokenLayout(image=processor.image_token_id, image_break=processor.image_break_token_id,
                           image_end=processor.image_end_token_id)
    return TokenLayout(
        image=config_value(config, "image_token_index", default=config_value(config, "image_token_id")),
        image_break=config_value(config, "image_break_token_id", default=MISTRAL_IDS["image_break_token_id"]),
        image_end=config_value(config, "image_end_token_id", default=MISTRAL_IDS["image_end_token_id"]),
    )


@dataclass(slots=True)
class PixtralInputs:
    """`PixtralImageProcessor` plus the token layout, or the full `PixtralProcessor` when a tokenizer loads.

    Without a tokenizer, ``input_ids`` is ``PROMPT_IDS[0]`` (standing for ``<s>[INST]``), the
    image's tokens, then the rest of ``PROMPT_IDS`` (the prompt): the chat template writes the
    image's ``[IMG]`` where the user turn puts it, first here, and the processor expands it in place.
    Forward kwargs: ``input_ids``, ``pixel_values`` (one image, ``(1, 3, H, W)``) and
    ``image_sizes`` (the tower cuts the image to it, the model splits features by it).
    """

    image_processor: Any
    writer: Any  # token_writer(...): PixtralProcessor's own layout of the image's tokens
    layout: TokenLayout
    processor: Any = None  # a PixtralProcessor with a tokenizer, or None
    prompt_ids: tuple[int, ...] = PROMPT_IDS
    decode_ids: tuple[int, ...] = FORCED_TOKEN_IDS

    @property
    def token_side(self) -> int:
        """F: the pixels of a token's side, what PixtralProcessor hands its image processor as patch_size."""
        return self.writer.patch_size * self.writer.spatial_merge_size

    def process(self, image: Image.Image) -> Prepared:
        if self.processor is not None:
            return self._with_processor(image)
        # As PixtralProcessor._process_images: the image processor rounds to patch * merge.
        out = self.image_processor(images=[image], patch_size=self.token_side, return_tensors="pt")
        span = self.layout.ids(self.writer.replace_image_token(out, 0))
        head, tail = list(self.prompt_ids[:1]), list(self.prompt_ids[1:])
        input_ids = torch.tensor([head + span + tail], dtype=torch.long)
        return self._prepared(out, input_ids, "image-processor+layout")

    def _with_processor(self, image: Image.Image) -> Prepared:
        proc = self.processor
        text = f"{proc.image_token}{PROMPT}"
        if getattr(proc, "chat_template", None):
            conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}]
            text = proc.apply_chat_template(conversation, add_generation_prompt=True)
        out = proc(images=[image], text=text, return_tensors="pt")
        return self._prepared(out, out["input_ids"], "processor")

    def _prepared(self, out: Any, input_ids: torch.Tensor, source: str) -> Prepared:
        vision = {"pixel_values": out["pixel_values"], "image_sizes": out["image_sizes"]}
        if out["image_sizes"].shape[0] != 1:
            raise GeometryMismatchError(f"the processor returned {out['image_sizes'].shape[0]} images for one")
        height, width = (int(v) for v in out["image_sizes"][0].tolist())
        grid = (height // self.token_side, width // self.token_side)
        ids = input_ids[0]
        image_tokens = int((ids == self.layout.image).sum())
        if image_tokens != grid[0] * grid[1]:
            raise GeometryMismatchError(
                f"input_ids hold {image_tokens} [IMG] tokens but the processor resized the image to {height}x{width} "
                f"px, {grid[0]}x{grid[1]} tokens of {self.token_side} px"
            )
        return Prepared(
            forward={**vision, "input_ids": input_ids},
            vision=vision,
            crops=int(out["pixel_values"].shape[0]),  # one image, no crops
            image_tokens=image_tokens,
            sequence_tokens=int(torch.isin(ids, torch.tensor(self.layout.special)).sum()),
            seq_len=int(input_ids.shape[1]),
            grids=grid,
            source=source,
        )

    @staticmethod
    def prefill_kwargs(use_cache: bool) -> dict[str, Any]:
        # Generation's prefill computes the logits of the last position only.
        return {"use_cache": use_cache, "logits_to_keep": 1}

    @staticmethod
    def vision_only(model: nn.Module, vision: dict[str, torch.Tensor]) -> Any:
        """The Pixtral tower and the projector (Mistral 3: with its patch merger), as the forward runs them."""
        return model.model.get_image_features(pixel_values=vision["pixel_values"], image_sizes=vision["image_sizes"])

    def decode_step(self, model: nn.Module, output: Any, step: int, prefix_len: int) -> Any:
        # Mistral's 1-D RoPE: positions continue from the cache's length when none are given.
        token = torch.tensor([[self.decode_ids[step % len(self.decode_ids)]]], device=output.logits.device)
        return model(input_ids=token, cache=output.cache, use_cache=True, logits_to_keep=1)


def inputs_for(config: Any, scheme: NativeResolution, *, image_processor: Any = None,
               processor: Any = None) -> PixtralInputs:
    """The input builder of a model with `config`, its image processor configured by `scheme` unless given."""
    return PixtralInputs(
        image_processor=image_processor if image_processor is not None else image_processor_for(scheme),
        writer=token_writer(scheme.patch_size, scheme.merge_size),
        layout=layout_from_config(config, processor),
        processor=processor,
    )


def _inputs(model: nn.Module, scheme: NativeResolution) -> PixtralInputs:
    return inputs_for(model.config, scheme)


# ----------------------------------------------------------------------------------------------
# Checkpoints


def _tokenizer_fits(processor: Any, config: Any) -> bool:
    """Whether the processor is a PixtralProcessor whose [IMG] is the model's image token id."""
    image = config_value(config, "image_token_index", default=config_value(config, "image_token_id"))
    return all(getattr(processor, key, None) is not None
               for key in ("tokenizer", "image_break_token_id", "image_end_token_id")) \
        and getattr(processor, "image_token_id", None) == image


def scheme_from_checkpoint(config: Any, processor: Any, image_processor: Any) -> NativeResolution:
    """The checkpoint's scheme: its image processor's cap, the patch and merge its processor uses (or, without
    one, the model config's: the vision tower's patch and Mistral 3's spatial_merge_size)."""
    got = model_numbers(config)
    patch = getattr(processor, "patch_size", None) if processor is not None else got["patch_size"]
    merge = getattr(processor, "spatial_merge_size", None) if processor is not None else got["merge_size"]
    overrides = {k: v for k, v in (("patch_size", patch), ("merge_size", merge)) if v is not None}
    return NativeResolution.from_preprocessor_config(image_processor.to_dict(), **overrides)


def _loader(model_class: str, default_profile: str) -> Any:
    def load(source: str, *, revision: str | None, device: torch.device, dtype: torch.dtype,
             model_kwargs: dict[str, Any], scheme: Scheme | None) -> Pretrained:
        import transformers

        model = getattr(transformers, model_class).from_pretrained(source, revision=revision, dtype=dtype,
                                                                   **model_kwargs)
        model = model.to(device).eval()
        processor, image_processor = load_processors(source, revision, transformers.PixtralImageProcessor,
                                                     lambda p: _tokenizer_fits(p, model.config))
        if scheme is None:
            if image_processor is not None:
                scheme = scheme_from_checkpoint(model.config, processor, image_processor)
            else:
                logger.warning("%s has no preprocessor config; using the %r tiling profile", source, default_profile)
                scheme = PROFILES[default_profile]
        check_scheme_fits(model.config, scheme)
        inputs = inputs_for(model.config, scheme, image_processor=image_processor, processor=processor)
        return Pretrained(model=model, scheme=scheme, inputs=inputs)

    return load


ARCHITECTURES: dict[str, Architecture] = {
    "pixtral": Architecture(
        name="pixtral", title="Pixtral (LLaVA with a Pixtral vision tower)", model_class="LlavaForConditionalGeneration",
        model_types=("llava",), module_map=MODULE_MAP, default_profile="pixtral", inputs=_inputs,
        check_fits=check_scheme_fits, load_pretrained=_loader("LlavaForConditionalGeneration", "pixtral"),
    ),
    "mistral3": Architecture(
        name="mistral3", title="Mistral 3", model_class="Mistral3ForConditionalGeneration", model_types=("mistral3",),
        module_map=MODULE_MAP, default_profile="mistral3", inputs=_inputs, check_fits=check_scheme_fits,
        load_pretrained=_loader("Mistral3ForConditionalGeneration", "mistral3"),
    ),
}

MODELS: dict[str, ModelSpec] = {
    "tiny-pixtral": ModelSpec(
        name="tiny-pixtral",
        description="Pixtral-12B architecture (LLaVA + Pixtral tower) at toy size (64 hidden, 2+2 layers), patch 16, "
                    "random weights; tens of ms per forward on a CPU",
        architecture="pixtral", profile="pixtral", config=_tiny_pixtral_config,
    ),
    "tiny-mistral3": ModelSpec(
        name="tiny-mistral3",
        description="Mistral 3 architecture at toy size (64 hidden, 2+2 layers), patch 14, 2x2 patch merger, "
                    "random weights; tens of ms per forward on a CPU",
        architecture="mistral3", profile="mistral3", config=_tiny_mistral3_config,
    ),
    "pixtral-12b-arch": ModelSpec(
        name="pixtral-12b-arch",
        description="Pixtral-12B shapes (mistral-community/pixtral-12b config.json), random weights, no download",
        architecture="pixtral", profile="pixtral", weights="meta", config=_pixtral_12b_config,
    ),
    "mistral3-24b-arch": ModelSpec(
        name="mistral3-24b-arch",
        description="Mistral-Small-3.1-24B shapes (mistralai/Mistral-Small-3.1-24B-Instruct-2503 config.json), "
                    "random weights, no download; 48 GB in bf16",
        architecture="mistral3", profile="mistral3", weights="meta", config=_mistral3_24b_config,
    ),
}
