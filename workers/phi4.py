"""The Phi-4-multimodal family: ``Phi4MultimodalForCausalLM`` (SigLIP image embedding, audio encoder, Phi-4-mini).

Phi-4-multimodal's image processor (``Phi4MultimodalImageProcessor``) cuts an image into
``ceil(h/448) x ceil(w/448)`` tiles of 448 px (at most 36; beyond, the closest aspect ratio),
resizes it to fit that canvas keeping its aspect ratio, pads the rest and marks the padding in a
patch mask; the global view (the canvas at 448 x 448) comes first. Every crop goes through the
SigLIP encoder; its features are pooled 2x2 (16 x 16 a crop), the tiles' features are trimmed to
the mask's unpadded rows and columns, one separator closes each row, one more separates the tiles
from the global view, and a 2-layer MLP maps them to the text width: ``273 + vr*vc + vr`` image
tokens (`tilings.ceiling` describes the geometry; its scheme ``phi4-mm`` is this family's). The
processor writes ``<|image|>`` that many times and nothing around it, so the sequence tokens are
the image tokens whether or not a tokenizer is loaded.

The registered models build the architecture from a config with random weights (latency depends
on shapes, not weights): a tiny one for CPU tests, the full-size Phi-4-multimodal-instruct for
GPU runs without downloads. A hub id or local path of a transformers-format checkpoint
(``model_type`` ``phi4_multimodal``) loads real weights; the released repository's original
remote-code format (``phi4mm``) is not loadable. Its LoRA adapters (``vision-lora``,
``speech-lora``) are not loaded: merged into the weights they leave the base model's shapes and
latency. Where no tokenizer can be loaded, the input builder runs the model's own image
processor and writes the ``<|image|>`` id as many times as ``Phi4MultimodalProcessor`` would
(its ``replace_image_token`` on the image processor's own count).

Module map (`MODULE_MAP`), all inside ``model.embed_tokens_extend.image_embed``
(``Phi4MultimodalImageEmbedding``) but the LLM and the head:

- vision: ``img_processor``, the SigLIP vision model on every crop: patch embedding, position
  ids bucketed from the mask, every encoder layer, the post-layernorm and the attention-pooling
  head. The features are the hidden states of layer -2 (``feature_layer``), so the last encoder
  layer, the post-layernorm and the pooling head run and their output is unused: the model does
  that work, so it is timed as vision.
- projector: ``image_token_compression`` (2x2 average pooling, 32 x 32 -> 16 x 16 a crop),
  ``img_projection_up`` and ``img_projection_down`` (the MLP); three spans that add up.
- untimed glue between them: the HD transform (global view and tiles reshaped to rows, the
  separators ``sub_img_feature_extensor``/``global_img_feature_extensor`` appended, the tiles
  trimmed to the mask's rows and columns), the GELU between the two projection layers (a
  function, not a module) and the scatter of the features into the text embeddings.
- LLM prefill: first to last of ``model.layers`` (the Phi-4-mini decoder layers).
- LM head: ``lm_head``.

The audio encoder (``audio_embed``) does not run on an image-only input; it is built (the
released model holds it) and counted in the parameters.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torch import nn

from tilesweep.errors import UsageError
from tilings import PROFILES, Scheme
from tilings.ceiling import CeilingGrid
from workers.arch import Architecture, ModelSpec, Pretrained
from workers.checkpoints import config_value, load_processors
from workers.inputs import FORCED_TOKEN_IDS, PROMPT, PROMPT_IDS, Prepared
from workers.modulemap import ModuleMap

logger = logging.getLogger(__name__)

DEFAULT_PROFILE = "phi4-mm"
# The processor's token count hard-codes 16 x 16 pooled features a crop (256 + 1 + ... + 16): the
# vision tower must make that many, ceil((image_size / patch_size) / 2) == 16.
FEATURES_PER_SIDE = 16
# The tiny model's special ids, inside its 1024-token vocabulary and above every id of
# workers.inputs.PROMPT_IDS / FORCED_TOKEN_IDS (the released: 200010 image, 200011 audio, 199999 bos/eos/pad).
TINY_VOCAB = 1024
TINY_IMAGE_TOKEN_ID = 1000
TINY_AUDIO_TOKEN_ID = 1001
# rope_scaling.long_factor of microsoft/Phi-4-multimodal-instruct's config.json (LongRoPE, used past 4096 positions;
# short_factor is 48 ones): values only, no effect on shapes or latency, kept so the preset is the checkpoint's.
LONG_FACTOR = (
    1, 1.118320672, 1.250641126, 1.398617824, 1.564103225, 1.74916897, 1.956131817, 2.187582649, 2.446418898,
    2.735880826, 3.059592084, 3.421605075, 3.826451687, 4.279200023, 4.785517845, 5.351743533, 5.984965424,
    6.693110555, 7.485043894, 8.370679318, 9.36110372, 10.4687158, 11.70738129, 13.09260651, 14.64173252,
    16.37415215, 18.31155283, 20.47818807, 22.90118105, 25.61086418, 28.64115884, 32.03, 32.1, 32.13, 32.23, 32.6,
    32.61, 32.64, 32.66, 32.7, 32.71, 32.93, 32.97, 33.28, 33.49, 33.5, 44.16, 47.77,
)


# ----------------------------------------------------------------------------------------------
# Configs


def _tiny_config() -> Any:
    """Phi-4-multimodal at toy size: a 2-layer SigLIP of width 32 on the released 448 px crops and 14 px patches
    (32 x 32 patches, pooled to the 16 x 16 features the processor counts; feature layer -2 as released), a
    2-layer text tower of width 64 (4 heads, 2 KV heads, partial rotary 0.75 as released), and the audio encoder
    as small as its config allows (width 8, one block, 8 mel bins): it never runs on images."""
    from transformers import Phi4MultimodalConfig

    return Phi4MultimodalConfig(
        vocab_size=TINY_VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=16384, original_max_position_embeddings=16384,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.75},
        bos_token_id=1003, eos_token_id=1004, pad_token_id=1005, tie_word_embeddings=False,
        vision_config={
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
            "image_size": 448, "patch_size": 14, "crop_size": 448, "feature_layer": -2,
            "image_token_id": TINY_IMAGE_TOKEN_ID,
        },
        audio_config={
            "hidden_size": 8, "intermediate_size": 8, "num_blocks": 1, "num_attention_heads": 1,
            "ext_pw_out_channel": 8, "depthwise_separable_out_channel": 8, "nemo_conv_channels": 8, "input_size": 8,
            "bias_max_distance": 4, "audio_token_id": TINY_AUDIO_TOKEN_ID,
        },
    )


def _phi4_mm_config() -> Any:
    """microsoft/Phi-4-multimodal-instruct.

    Numbers from its config.json (the remote-code ``phi4mm`` one; NVIDIA/TensorRT-LLM's
    tests/unittest/_torch/modeling/test_modeling_phi4mm.py holds a copy whose reduced layer
    counts note the originals, 32 and 24) as transformers' ``convert_phi4_multimodal_weights_to_hf.py``
    maps them: Phi-4-mini text (hidden 3072, MLP 8192, 32 layers, 24 heads of 128, 8 KV heads,
    partial rotary 0.75, LongRoPE from 4096 positions, vocabulary 200064, head tied to the embedding,
    sliding window 262144); the vision config is Phi4MultimodalVisionConfig's defaults, which the script
    keeps (SigLIP-so400m at 448/14: 27 layers of 1152, MLP 4304, 16 heads, features of layer -2); the
    audio encoder its ``audio_processor`` config (24 conformer blocks of 1024, 16 heads, MLP 1536, conv
    channels 1024, T5 bias distance 500, time reduction 8). Image id 200010, audio id 200011. The LoRA
    adapters are not part of it (see the module docstring). About 4.7e9 parameters.
    """
    from transformers import Phi4MultimodalConfig

    return Phi4MultimodalConfig(
        vocab_size=200064, hidden_size=3072, intermediate_size=8192, num_hidden_layers=32, num_attention_heads=24,
        num_key_value_heads=8, max_position_embeddings=131072, original_max_position_embeddings=4096,
        rms_norm_eps=1e-5, hidden_act="silu", sliding_window=262144, tie_word_embeddings=True,
        rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": 0.75,
                         "short_factor": [1.0] * 48, "long_factor": list(LONG_FACTOR)},
        bos_token_id=199999, eos_token_id=199999, pad_token_id=199999,
        vision_config={
            "hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27, "num_attention_heads": 16,
            "image_size": 448, "patch_size": 14, "crop_size": 448, "feature_layer": -2, "image_token_id": 200010,
        },
        audio_config={
            "hidden_size": 1024, "intermediate_size": 1536, "num_blocks": 24, "num_attention_heads": 16,
            "ext_pw_out_channel": 1024, "depthwise_separable_out_channel": 1024, "nemo_conv_channels": 1024,
            "input_size": 80, "time_reduction": 8, "bias_max_distance": 500, "left_chunk": 18, "chunk_size": -1,
            "kernel_size": 3, "audio_token_id": 200011,
        },
    )


# ----------------------------------------------------------------------------------------------
# Module map

_EMBED = "model.embed_tokens_extend.image_embed"
MODULE_MAP = ModuleMap(
    vision=(f"{_EMBED}.img_processor",),
    projector=(f"{_EMBED}.image_token_compression", f"{_EMBED}.img_projection_up", f"{_EMBED}.img_projection_down"),
    llm_blocks="model.layers",
    lm_head=("lm_head",),
    vision_blocks=f"{_EMBED}.img_processor.encoder.layers",
    required=("vision", "projector", "llm_blocks", "lm_head", "vision_blocks"),
)


# ----------------------------------------------------------------------------------------------
# Schemes: which crops a model takes


def model_numbers(config: Any) -> dict[str, Any]:
    """What a Phi-4-multimodal config says about image geometry (a config object, a raw dict or a model);
    keys a raw ``config.json`` leaves out take Phi4MultimodalVisionConfig's defaults."""
    vision = config_value(config, "vision_config", default={})
    return {
        "image_size": config_value(vision, "image_size", default=448),
        "patch_size": config_value(vision, "patch_size", default=14),
        "crop_size": config_value(vision, "crop_size", default=448),
        "image_token_id": config_value(vision, "image_token_id", default=200010),
    }


def _presets() -> str:
    return ", ".join(name for name, scheme in PROFILES.items() if isinstance(scheme, CeilingGrid))


def check_scheme_fits(config: Any, scheme: Scheme) -> None:
    """The scheme must cut the crops the model's image embedding takes.

    The SigLIP tower embeds ``image_size`` px crops in ``patch_size`` px patches, the image embedding
    recovers the grid as ``image_sizes // crop_size``, and the processor's count hard-codes 16 x 16
    pooled features a crop: the scheme's tile and patch must be the model's, and the model's tower
    must make 16 x 16 features.

    Args:
        config: the model's config object, a model (its ``config`` is read), or a raw ``config.json`` dict.

    Raises:
        UsageError: a scheme of another kind, or a tile or patch the model does not take.
    """
    if not isinstance(scheme, CeilingGrid):
        raise UsageError(
            f"profile {getattr(scheme, 'name', scheme)!r} is not a ceiling-grid scheme; Phi-4-multimodal models take "
            f"{_presets()} or a Phi-4-multimodal preprocessor_config.json"
        )
    got = model_numbers(config)
    size, patch, crop = got["image_size"], got["patch_size"], got["crop_size"]
    if (size // patch + 1) // 2 != FEATURES_PER_SIDE:
        raise UsageError(
            f"the model's vision tower ({size} px, patch {patch}) makes {(size // patch + 1) // 2} pooled features a "
            f"side, but Phi4MultimodalProcessor counts {FEATURES_PER_SIDE} (hard-coded); such a model cannot be fed "
            f"by its processor: use image_size / patch_size = 32 (e.g. 448 / 14)"
        )
    if size != crop:
        raise UsageError(
            f"the model's vision tower takes {size} px crops but its crop_size is {crop}: the image embedding would "
            f"read another grid than the processor cut; make them equal"
        )
    if scheme.tile_size != size:
        raise UsageError(
            f"profile {scheme.name!r} uses {scheme.tile_size} px tiles but the model's vision tower takes "
            f"{size}x{size}; pick a profile with tile_size {size} (e.g. {_presets()})"
        )
    if scheme.patch_size != patch:
        raise UsageError(
            f"profile {scheme.name!r} has patch_size {scheme.patch_size} but the model's vision tower uses {patch} px "
            f"patches; pick a profile with patch_size {patch}"
        )


def image_processor_for(scheme: CeilingGrid) -> Any:
    from transformers import Phi4MultimodalImageProcessor

    return Phi4MultimodalImageProcessor(**scheme.processor_kwargs())


def token_counter(image_token: str = "<|image|>") -> Any:
    """transformers' own `Phi4MultimodalProcessor`, without a tokenizer: only its ``<|image|>`` count is used.

    ``Phi4MultimodalProcessor.__init__`` asks the tokenizer for the token ids; its
    ``replace_image_token`` reads only ``image_token`` and the image processor's output."""
    from transformers import Phi4MultimodalProcessor

    counter = Phi4MultimodalProcessor.__new__(Phi4MultimodalProcessor)
    counter.image_token = image_token
    return counter


# ----------------------------------------------------------------------------------------------
# Input builder


@dataclass(slots=True)
class Phi4Inputs:
    """`Phi4MultimodalImageProcessor` plus the token layout, or the full processor when a tokenizer loads.

    Forward kwargs: ``input_ids``, ``image_pixel_values`` (``(1, crops, 3, T, T)``: the global view, then
    the tiles row-major), ``image_sizes`` (the canvas, from which the model reads the grid) and
    ``image_attention_mask`` (``(1, crops, T/p, T/p)``, the padding mask). Without a tokenizer,
    ``input_ids`` is ``PROMPT_IDS[0]`` (standing for ``<|user|>``), the ``<|image|>`` ids, then the rest
    of ``PROMPT_IDS``: the chat template puts the image first in the user turn. The image embedding
    finds its positions by the id, so the vision path alone takes ``input_ids`` too.
    """

    image_processor: Any
    image_token_id: int
    tile_size: int
    processor: Any = None  # a Phi4MultimodalProcessor with a tokenizer, or None
    prompt_ids: tuple[int, ...] = PROMPT_IDS
    decode_ids: tuple[int, ...] = FORCED_TOKEN_IDS

    def process(self, image: Image.Image) -> Prepared:
        if self.processor is not None:
            return self._with_processor(image)
        out = self.image_processor(images=[image], return_tensors="pt")
        counter = token_counter()
        n = counter.replace_image_token(out, 0).count(counter.image_token)  # the processor's own count
        head, tail = list(self.prompt_ids[:1]), list(self.prompt_ids[1:])
        input_ids = torch.tensor([head + [self.image_token_id] * n + tail], dtype=torch.long)
        return self._prepared(out, input_ids, "image-processor+layout")

    def _with_processor(self, image: Image.Image) -> Prepared:
        proc = self.processor
        out = proc(images=[image], text=self._prompt_text(proc), return_tensors="pt")
        return self._prepared(out, out["input_ids"], "processor")

    @staticmethod
    def _prompt_text(proc: Any) -> str:
        """The user turn as the checkpoint's chat template writes it: the processor's template (structured
        content), else the tokenizer's (``Phi4MultimodalProcessor.from_pretrained`` leaves a saved template on the
        tokenizer; Phi-4's is a text template, the image token inside the text), else the bare text."""
        if getattr(proc, "chat_template", None):
            conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}]
            return proc.apply_chat_template(conversation, add_generation_prompt=True)
        text = f"{proc.image_token}{PROMPT}"
        if getattr(proc.tokenizer, "chat_template", None):
            return proc.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                      add_generation_prompt=True)
        return text

    def _prepared(self, out: Any, input_ids: torch.Tensor, source: str) -> Prepared:
        vision = {k: out[k] for k in ("image_pixel_values", "image_sizes", "image_attention_mask")}
        placeholders = int((input_ids[0] == self.image_token_id).sum())
        height, width = (int(v) for v in out["image_sizes"][0])
        return Prepared(
            forward={**vision, "input_ids": input_ids},
            vision={**vision, "input_ids": input_ids},
            crops=int(out["image_pixel_values"].shape[1]),  # (images, crops, 3, T, T): crop 0 is the global view
            image_tokens=placeholders,
            sequence_tokens=placeholders,  # the processor writes no start, end or separator tokens
            seq_len=int(input_ids.shape[1]),
            grids=(height // self.tile_size, width // self.tile_size),  # the canvas, as the model reads the grid
            source=source,
        )

    @staticmethod
    def prefill_kwargs(use_cache: bool) -> dict[str, Any]:
        # Generation's prefill computes the logits of the last position only.
        return {"use_cache": use_cache, "logits_to_keep": 1}

    @staticmethod
    def vision_only(model: nn.Module, vision: dict[str, torch.Tensor]) -> Any:
        """The image embedding as the forward runs it: SigLIP, pooling, HD transform, projection and the scatter
        into the token embeddings (which it needs to place the features)."""
        input_ids = vision["input_ids"]
        embeds = model.model.embed_tokens(input_ids)
        return model.model.embed_tokens_extend.image_embed(
            input_ids, embeds, image_pixel_values=vision["image_pixel_values"], image_sizes=vision["image_sizes"],
            image_attention_mask=vision["image_attention_mask"],
        )

    def decode_step(self, model: nn.Module, output: Any, step: int, prefix_len: int) -> Any:
        """One forced token through the cache; the text tower takes its position from the cache length."""
        token = torch.tensor([[self.decode_ids[step % len(self.decode_ids)]]], device=output.logits.device)
        return model(input_ids=token, cache=output.cache, use_cache=True, logits_to_keep=1)


def inputs_for(config: Any, scheme: CeilingGrid, *, image_processor: Any = None,
               processor: Any = None) -> Phi4Inputs:
    """The input builder of a model with `config`, its image processor configured by `scheme` unless given."""
    image_processor = image_processor if image_processor is not None else image_processor_for(scheme)
    return Phi4Inputs(image_processor=image_processor, image_token_id=int(model_numbers(config)["image_token_id"]),
                      tile_size=int(image_processor.size.height), processor=processor)


def _inputs(model: nn.Module, scheme: CeilingGrid) -> Phi4Inputs:
    return inputs_for(model.config, scheme)


# ----------------------------------------------------------------------------------------------
# Loading


def _tokenizer_fits(processor: Any, image_token_id: int) -> bool:
    """Whether the processor's ``<|image|>`` is the model's image id and its tokenizer spells it there."""
    tokenizer = getattr(processor, "tokenizer", None)
    try:
        return (tokenizer is not None and processor.image_token_id == image_token_id
                and tokenizer.convert_tokens_to_ids(processor.image_token) == image_token_id)
    except (AttributeError, KeyError, TypeError, ValueError):
        return False


def _processors(source: str, revision: str | None, image_token_id: int) -> tuple[Any, Any]:
    from transformers import Phi4MultimodalImageProcessor

    return load_processors(source, revision, Phi4MultimodalImageProcessor,
                           lambda p: _tokenizer_fits(p, image_token_id))


def scheme_from_checkpoint(image_processor: Any) -> CeilingGrid:
    """The checkpoint's scheme: its image processor's settings (tile, patch, tile limit)."""
    return CeilingGrid.from_preprocessor_config(image_processor.to_dict())


def _load(source: str, *, revision: str | None, device: torch.device, dtype: torch.dtype,
          model_kwargs: dict[str, Any], scheme: CeilingGrid | None) -> Pretrained:
    from transformers import Phi4MultimodalForCausalLM

    model = Phi4MultimodalForCausalLM.from_pretrained(source, revision=revision, dtype=dtype, **model_kwargs)
    model = model.to(device).eval()
    processor, image_processor = _processors(source, revision, int(model_numbers(model.config)["image_token_id"]))
    if scheme is None:
        if image_processor is not None:
            scheme = scheme_from_checkpoint(image_processor)
        else:
            logger.warning("%s has no preprocessor config; using the %r tiling profile", source, DEFAULT_PROFILE)
            scheme = PROFILES[DEFAULT_PROFILE]
    check_scheme_fits(model.config, scheme)
    inputs = inputs_for(model.config, scheme, image_processor=image_processor, processor=processor)
    return Pretrained(model=model, scheme=scheme, inputs=inputs)


ARCHITECTURES: dict[str, Architecture] = {
    "phi4-multimodal": Architecture(
        name="phi4-multimodal", title="Phi-4-multimodal", model_class="Phi4MultimodalForCausalLM",
        model_types=("phi4_multimodal",), module_map=MODULE_MAP, default_profile=DEFAULT_PROFILE, inputs=_inputs,
        check_fits=check_scheme_fits, load_pretrained=_load,
    ),
}

MODELS: dict[str, ModelSpec] = {
    "tiny-phi4-mm": ModelSpec(
        name="tiny-phi4-mm",
        description="Phi-4-multimodal architecture at toy size (32-wide SigLIP on 448 px crops, 64-wide text, "
                    "8-wide audio), random weights; ~0.1 s per forward on a CPU at 1x1",
        architecture="phi4-multimodal", profile=DEFAULT_PROFILE, config=_tiny_config,
    ),
    "phi4-mm-arch": ModelSpec(
        name="phi4-mm-arch",
        description="Phi-4-multimodal-instruct shapes (SigLIP-so400m 448/14 + Phi-4-mini + audio encoder, no "
                    "LoRA), random weights, no download",
        architecture="phi4-multimodal", profile=DEFAULT_PROFILE, weights="meta", config=_phi4_mm_config,
    ),
}
