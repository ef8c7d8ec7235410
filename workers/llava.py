"""LLaVA-OneVision's family: `LlavaOnevisionForConditionalGeneration` (SigLIP + projector + Qwen2).

The registered models build the model from a config with random weights (latency
depends on shapes, not on weights): a tiny one for CPU tests, the 7B architecture
for GPU runs without downloads. A hub id or local path loads real weights. Where
no tokenizer can be loaded (random-weight architectures, offline), the input
builder runs the image processor and lays out ``input_ids`` itself: the number of
``<image>`` placeholders is the count `LlavaOnevisionProcessor.replace_image_token`
computes from the image processor's own output (unpadding and the ``anyres_max``
cap included); the processor adds no start, end or separator tokens of its own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torch import nn

from tilesweep.errors import UsageError
from tilings.pinpoints import DEFAULT_PINPOINTS, Pinpoints, parse_vision_aspect_ratio
from tilings.pinpoints import PRESETS as PINPOINT_PRESETS
from workers.arch import Architecture, ModelSpec, Pretrained
from workers.checkpoints import config_value, load_processors
from workers.inputs import FORCED_TOKEN_IDS, PROMPT, PROMPT_IDS, Prepared
from workers.modulemap import ModuleMap

logger = logging.getLogger(__name__)

# The tiny model's special ids, inside its 1024-token vocabulary and above every id of
# workers.inputs.PROMPT_IDS / FORCED_TOKEN_IDS.
TINY_IMAGE_TOKEN_ID = 1000
TINY_VIDEO_TOKEN_ID = 1001

# LlavaOnevisionConfig's defaults where a raw config.json leaves a key out.
_DEFAULT_STRATEGY = "full"
_DEFAULT_ASPECT_RATIO = "anyres_max_9"
_DEFAULT_VISION = {"image_size": 384, "patch_size": 14, "model_type": "siglip_vision_model"}


def _tiny_config() -> Any:
    """Toy widths and depths; the vision tower, pinpoints, strategy and cap are the released ones
    (SigLIP 384/14, 27x27 = 729 features a crop, no CLS; the 36 default pinpoints; "full"; anyres_max_9)."""
    from transformers import LlavaOnevisionConfig

    return LlavaOnevisionConfig(
        vision_config={
            "model_type": "siglip_vision_model", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 4, "image_size": 384, "patch_size": 14, "vision_use_head": False,
        },
        text_config={
            "model_type": "qwen2", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1024,
            "max_position_embeddings": 32768, "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0},
        },
        image_token_index=TINY_IMAGE_TOKEN_ID, video_token_index=TINY_VIDEO_TOKEN_ID,
        vision_feature_select_strategy="full", vision_feature_layer=-1, vision_aspect_ratio="anyres_max_9",
    )


def _ov_7b_config() -> Any:
    """llava-hf/llava-onevision-qwen2-7b-ov-hf.

    Numbers from transformers' conversion script that wrote that checkpoint
    (``models/llava_onevision/convert_llava_onevision_weights_to_hf.py``): SigLIP-so400m
    at 384/14 with its last layer dropped (26 of 27 layers, no pooling head), the
    Qwen2-7B-Instruct text config (hidden 3584, MLP 18944, 28 layers, 28 heads, 4 KV
    heads, rope_theta 1e6), its 152064-token vocabulary grown by ``<image>`` and
    ``<video>`` and padded to a multiple of 64 (152128), ``<image>`` = 151646,
    ``<video>`` = 151647, untied head, LlavaOnevisionConfig's defaults for the rest
    (36 pinpoints, "full", layer -1, anyres_max_9). About 8.03e9 parameters.
    """
    from transformers import LlavaOnevisionConfig

    return LlavaOnevisionConfig(
        vision_config={
            "model_type": "siglip_vision_model", "hidden_size": 1152, "intermediate_size": 4304,
            "num_hidden_layers": 26, "num_attention_heads": 16, "image_size": 384, "patch_size": 14,
            "vision_use_head": False,
        },
        text_config={
            "model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
            "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152128,
            "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0},
            "bos_token_id": 151643, "eos_token_id": 151645,
        },
        image_token_index=151646, video_token_index=151647,
        vision_feature_select_strategy="full", vision_feature_layer=-1, vision_aspect_ratio="anyres_max_9",
    )


# transformers' LlavaOnevisionForConditionalGeneration. `vision` is the SigLIP tower (its
# hidden states at vision_feature_layer are the features), `projector` the 2-layer MLP;
# pack_image_features (unpadding, the anyres_max interpolation, image_newline) runs between
# the projector and the LLM in no module of its own, so it is in no stage (it is cheap).
# `vision_blocks` is required so that this map does not also fit Molmo2, whose other paths
# have the same names.
MODULE_MAP = ModuleMap(
    vision=("model.vision_tower",),
    projector=("model.multi_modal_projector",),
    llm_blocks="model.language_model.layers",
    lm_head=("lm_head",),
    vision_blocks="model.vision_tower.encoder.layers",
    required=("vision", "projector", "llm_blocks", "lm_head", "vision_blocks"),
)


# ----- does a scheme fit a model? ------------------------------------------------------------
def _get(obj: Any, key: str, default: Any = None) -> Any:
    """A config value from a config object or a raw ``config.json`` dict."""
    return config_value(obj, key, default=default)


def model_numbers(config: Any) -> dict[str, Any]:
    """What a LLaVA-OneVision config says about image geometry (a config object, a raw dict or a model).

    Keys a raw ``config.json`` leaves out take LlavaOnevisionConfig's defaults; a vision
    config without ``image_size``/``patch_size`` gives None (unknown).
    """
    config = getattr(config, "config", config)
    vision = _get(config, "vision_config")
    if vision is None:
        vision = _DEFAULT_VISION
    pinpoints = _get(config, "image_grid_pinpoints", DEFAULT_PINPOINTS)
    return {
        "image_size": _get(vision, "image_size"),
        "patch_size": _get(vision, "patch_size"),
        "vision_model_type": _get(vision, "model_type"),
        "pinpoints": [list(p) for p in pinpoints],
        "strategy": _get(config, "vision_feature_select_strategy", _DEFAULT_STRATEGY),
        "aspect_ratio": _get(config, "vision_aspect_ratio", _DEFAULT_ASPECT_RATIO),
    }


def check_scheme_fits(config: Any, scheme: Any) -> None:
    """The scheme must be the processor the model's `pack_image_features` was built for.

    The model recomputes the grid from ``image_sizes`` with its own pinpoints, views
    each crop as ``(image_size // patch_size)^2`` features and caps with its own
    ``vision_aspect_ratio``: each of those must equal the scheme's, or the processor's
    ``<image>`` count and the model's features disagree (or the forward fails).

    Args:
        config: a transformers config object, a raw ``config.json`` dict or a model.

    Raises:
        UsageError: a scheme of another kind, or a tile, patch, pinpoint list, feature
            strategy or cap that differs from the model's.
    """
    if not isinstance(scheme, Pinpoints):
        name = getattr(scheme, "name", scheme)
        raise UsageError(
            f"profile {name!r} is not a pinpoint scheme; LLaVA-OneVision models take "
            f"{', '.join(PINPOINT_PRESETS)} or a LLaVA-OneVision preprocessor_config.json"
        )
    got = model_numbers(config)
    size, patch = got["image_size"], got["patch_size"]
    if size is not None and size != scheme.tile_size:
        raise UsageError(
            f"profile {scheme.name!r} uses {scheme.tile_size} px tiles but the model's vision tower takes "
            f"{size}x{size}; pick a profile with tile_size {size} (e.g. one built from the checkpoint's "
            "preprocessor config)"
        )
    if patch is not None and patch != scheme.patch_size:
        raise UsageError(
            f"profile {scheme.name!r} has patch_size {scheme.patch_size} but the model's vision tower uses "
            f"{patch} px patches; pick a profile with patch_size {patch}"
        )
    if got["pinpoints"] != [list(p) for p in scheme.pinpoints]:
        raise UsageError(
            f"profile {scheme.name!r} has pinpoints {[list(p) for p in scheme.pinpoints]} but the model config's "
            f"image_grid_pinpoints are {got['pinpoints']}; the model recomputes the grid from its own list, so "
            "pick a profile with the model's pinpoints"
        )
    if got["strategy"] != scheme.vision_feature_select_strategy:
        raise UsageError(
            f"profile {scheme.name!r} has vision_feature_select_strategy {scheme.vision_feature_select_strategy!r} "
            f"but the model's is {got['strategy']!r}; pick a profile with the model's strategy"
        )
    if got["strategy"] == "default" and got["vision_model_type"] == "siglip_vision_model":
        raise UsageError(
            "vision_feature_select_strategy 'default' drops a CLS token SigLIP does not have, so the model cannot "
            "view its features as a tile grid; use 'full' in both model config and profile"
        )
    try:
        cap = parse_vision_aspect_ratio(got["aspect_ratio"])
    except UsageError as exc:
        raise UsageError(f"the model config's {exc}") from None
    if cap != scheme.anyres_max:
        raise UsageError(
            f"profile {scheme.name!r} caps features at anyres_max_{scheme.anyres_max} but the model's "
            f"vision_aspect_ratio is {got['aspect_ratio']!r}; pick a profile with anyres_max={cap}"
        )


# ----- inputs ---------------------------------------------------------------------------------
def image_processor_for(scheme: Pinpoints) -> Any:
    from transformers import LlavaOnevisionImageProcessor

    return LlavaOnevisionImageProcessor(**scheme.processor_kwargs())


def token_counter(image_processor: Any, *, num_image_tokens: int, strategy: str, aspect_ratio: str) -> Any:
    """transformers' own `LlavaOnevisionProcessor`, without a tokenizer: only its ``<image>`` count is used.

    ``LlavaOnevisionProcessor.__init__`` asks the tokenizer for the token ids; the
    counting (`replace_image_token`, `_get_number_of_features`, `_get_unpadded_features`)
    reads only these five attributes, so they are set on an instance made without it.
    """
    from transformers import LlavaOnevisionProcessor

    counter = LlavaOnevisionProcessor.__new__(LlavaOnevisionProcessor)
    counter.image_processor = image_processor
    counter.num_image_tokens = num_image_tokens
    counter.vision_feature_select_strategy = strategy
    counter.vision_aspect_ratio = aspect_ratio
    counter.image_token = "<image>"
    return counter


def _grid(image_sizes: torch.Tensor, pinpoints: list[list[int]], tile: int) -> tuple[int, int]:
    """The grid the processor tiled the image into, by its own `select_best_resolution`."""
    from transformers.image_processing_utils import select_best_resolution

    height, width = select_best_resolution([int(v) for v in image_sizes[0].tolist()], pinpoints)
    return height // tile, width // tile


@dataclass(slots=True)
class LlavaOnevisionInputs:
    """`LlavaOnevisionImageProcessor` plus the token layout, or the full processor when a tokenizer loads.

    Without a tokenizer, ``input_ids`` is ``PROMPT_IDS[0]`` (standing for
    ``<|im_start|>user\\n``), the image's ``<image>`` placeholders, then the rest of
    ``PROMPT_IDS`` (the prompt): the chat template puts the image first in the user
    turn, and the processor expands its one ``<image>`` into N in place.
    """

    image_processor: Any
    image_token_id: int
    counter: Any  # token_counter(...): the processor's own <image> count
    tile_size: int
    processor: Any = None  # a LlavaOnevisionProcessor with a tokenizer, or None
    prompt_ids: tuple[int, ...] = PROMPT_IDS
    decode_ids: tuple[int, ...] = FORCED_TOKEN_IDS

    def process(self, image: Image.Image) -> Prepared:
        if self.processor is not None:
            return self._with_processor(image)
        out = self.image_processor(images=[image], return_tensors="pt")
        n = self.counter.replace_image_token(out, 0).count(self.counter.image_token)
        head, tail = list(self.prompt_ids[:1]), list(self.prompt_ids[1:])
        input_ids = torch.tensor([head + [self.image_token_id] * n + tail], dtype=torch.long)
        return self._prepared(out, input_ids, "image-processor+layout")

    def _with_processor(self, image: Image.Image) -> Prepared:
        proc = self.processor
        text = f"{proc.image_token}\n{PROMPT}"
        if getattr(proc, "chat_template", None):
            conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}]
            text = proc.apply_chat_template(conversation, add_generation_prompt=True)
        out = proc(images=[image], text=text, return_tensors="pt")
        return self._prepared(out, out["input_ids"], "processor")

    def _prepared(self, out: Any, input_ids: torch.Tensor, source: str) -> Prepared:
        vision = {"pixel_values": out["pixel_values"], "image_sizes": out["image_sizes"]}
        if "batch_num_images" in out:
            vision["batch_num_images"] = torch.as_tensor(out["batch_num_images"])
        placeholders = int((input_ids[0] == self.image_token_id).sum())
        return Prepared(
            forward={**vision, "input_ids": input_ids},
            vision=vision,
            crops=int(out["pixel_values"].shape[1]),  # (images, crops, 3, T, T): crop 0 is the whole image
            image_tokens=placeholders,
            sequence_tokens=placeholders,  # the processor writes no start, end or separator tokens
            seq_len=int(input_ids.shape[1]),
            grids=_grid(out["image_sizes"], self.image_processor.image_grid_pinpoints, self.tile_size),
            source=source,
        )

    @staticmethod
    def prefill_kwargs(use_cache: bool) -> dict[str, Any]:
        # Generation's prefill computes the logits of the last position only.
        return {"use_cache": use_cache, "logits_to_keep": 1}

    @staticmethod
    def vision_only(model: nn.Module, vision: dict[str, torch.Tensor]) -> Any:
        """The SigLIP tower, the projector and `pack_image_features`, as the forward runs them."""
        return model.model.get_image_features(**vision)

    def decode_step(self, model: nn.Module, output: Any, step: int, prefix_len: int) -> Any:
        # Qwen2's 1-D RoPE: positions continue from the cache's length when none are given.
        token = torch.tensor([[self.decode_ids[step % len(self.decode_ids)]]], device=output.logits.device)
        return model(input_ids=token, cache=output.cache, use_cache=True, logits_to_keep=1)


def inputs_for(config: Any, scheme: Pinpoints, *, image_processor: Any = None,
               processor: Any = None) -> LlavaOnevisionInputs:
    """The input builder of a model with `config`, its image processor configured by `scheme` unless given."""
    image_processor = image_processor if image_processor is not None else image_processor_for(scheme)
    got = model_numbers(config)
    counter = token_counter(
        image_processor,
        num_image_tokens=(got["image_size"] // got["patch_size"]) ** 2,
        strategy=got["strategy"],
        aspect_ratio=got["aspect_ratio"],
    )
    return LlavaOnevisionInputs(image_processor=image_processor, image_token_id=config.image_token_id, counter=counter,
                                tile_size=_tile_of(image_processor), processor=processor)


def _tile_of(image_processor: Any) -> int:
    """The side of the processor's tiles, as its ``_preprocess`` picks it: ``crop_size``, else ``size``."""
    for key in ("crop_size", "size"):
        value = getattr(image_processor, key, None)
        side = _get(value, "height") if value is not None else None
        side = side if side is not None else (_get(value, "shortest_edge") if value is not None else None)
        if side:
            return int(side)
    raise UsageError(f"{type(image_processor).__name__} states neither crop_size nor size; cannot tell its tile size")


def _inputs(model: nn.Module, scheme: Pinpoints) -> LlavaOnevisionInputs:
    return inputs_for(model.config, scheme)


# ----- checkpoints ----------------------------------------------------------------------------
def _processors(source: str, revision: str | None) -> tuple[Any, Any]:
    """(full processor or None, image processor or None): the tokenizer may not load offline."""
    from transformers import AutoImageProcessor

    return load_processors(source, revision, AutoImageProcessor)


def scheme_from_checkpoint(config: Any, processor: Any, image_processor: Any) -> Pinpoints:
    """The checkpoint's scheme: its image processor's settings, the processor's token settings where a
    full processor loaded, and the model config's numbers for what neither states (patch size,
    strategy, cap)."""
    settings = image_processor.to_dict()
    for key in ("num_image_tokens", "vision_feature_select_strategy", "vision_aspect_ratio"):
        if processor is not None and getattr(processor, key, None) is not None:
            settings[key] = getattr(processor, key)
    got = model_numbers(config)
    overrides: dict[str, Any] = {}
    if got["patch_size"] is not None:
        overrides["patch_size"] = got["patch_size"]
    if "vision_feature_select_strategy" not in settings:
        overrides["vision_feature_select_strategy"] = got["strategy"]
    if "vision_aspect_ratio" not in settings:
        overrides["anyres_max"] = parse_vision_aspect_ratio(got["aspect_ratio"])
    return Pinpoints.from_preprocessor_config(settings, **overrides)


def _load(source: str, *, revision: str | None, device: torch.device, dtype: torch.dtype,
          model_kwargs: dict[str, Any], scheme: Pinpoints | None) -> Pretrained:
    from transformers import LlavaOnevisionForConditionalGeneration

    model = LlavaOnevisionForConditionalGeneration.from_pretrained(source, revision=revision, dtype=dtype,
                                                                   **model_kwargs)
    model = model.to(device).eval()
    processor, image_processor = _processors(source, revision)
    if scheme is None:
        if image_processor is not None:
            scheme = scheme_from_checkpoint(model.config, processor, image_processor)
        else:
            logger.warning("%s has no preprocessor config; using the %r tiling profile", source, "llava-onevision")
            scheme = PINPOINT_PRESETS["llava-onevision"]
    check_scheme_fits(model.config, scheme)
    inputs = inputs_for(model.config, scheme, image_processor=image_processor, processor=processor)
    return Pretrained(model=model, scheme=scheme, inputs=inputs)


ARCHITECTURES: dict[str, Architecture] = {
    "llava-onevision": Architecture(
        name="llava-onevision", title="LLaVA-OneVision", model_class="LlavaOnevisionForConditionalGeneration",
        model_types=("llava_onevision",), module_map=MODULE_MAP, default_profile="llava-onevision", inputs=_inputs,
        check_fits=check_scheme_fits, load_pretrained=_load,
    ),
}

MODELS: dict[str, ModelSpec] = {
    "tiny-llava-onevision": ModelSpec(
        name="tiny-llava-onevision",
        description="LLaVA-OneVision architecture at toy size (64 hidden, 2+2 layers), SigLIP 384/14 geometry, "
                    "random weights; ~0.1 s per forward on a CPU at 1x1",
        architecture="llava-onevision", profile="llava-onevision", config=_tiny_config,
    ),
    "llava-onevision-7b-arch": ModelSpec(
        name="llava-onevision-7b-arch",
        description="llava-onevision-qwen2-7b-ov shapes (SigLIP-so400m 26 layers + Qwen2-7B), random weights, "
                    "no download",
        architecture="llava-onevision", profile="llava-onevision", weights="meta", config=_ov_7b_config,
    ),
}
