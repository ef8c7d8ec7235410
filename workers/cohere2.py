"""The Cohere2-Vision family (Command A Vision): ``Cohere2VisionForConditionalGeneration`` (SigLIP + Cohere2 text).

Cohere2-Vision's image processor (``Cohere2VisionImageProcessor``) picks the grid of 512 px tiles
(at most 12) that needs the least up-scaling, in numpy float64, resizes the image to that canvas
(distorting it), cuts it into tiles and, for more than one tile, adds the whole image at 512 x 512
last (the thumbnail). Every crop goes through the SigLIP tower (32 x 32 patches of 16 px); the
projector pixel-shuffles them 2 x 2 to 16 x 16 = 256 features and maps them to the text width
with a SwiGLU MLP. ``Cohere2VisionProcessor`` writes ``<|START_OF_IMG|>``, per crop 256
``<|IMG_PATCH|>`` (its image processor's ``patch_size`` squared) and one ``<|IMG_LINE_BREAK|>``,
then ``<|END_OF_IMG|>``: 256 image tokens and 257 sequence tokens a crop, plus 2
(`tilings.tiled` describes the geometry; its scheme ``cohere2-vision`` is this family's). Every
one of those is a special token, so the sequence count needs no tokenizer.

Only a tiny model is registered. The released model, CohereLabs/command-a-vision-07-2025, has
112B parameters (Cohere's model card): about 224 GB in bf16, which does not fit one 80 GB GPU,
so there is no full-size ``-arch`` preset. A hub id or local path of a transformers-format
checkpoint loads real weights (``model_type`` ``cohere2_vision``). Where no tokenizer can be
loaded, the input builder runs the model's image processor and lays out the text
``Cohere2VisionProcessor.replace_image_token`` writes for its crop count: the model's
``image_token_id`` for ``<|IMG_PATCH|>``, and stand-in ids for the begin, end and line-break
tokens (the config does not name them; which id a token has does not change the forward's work).

Module map (`MODULE_MAP`):

- vision: ``model.vision_tower`` (``SiglipVisionModel``): patch and position embeddings, every
  encoder layer, the post-layernorm, and the attention-pooling head where the config has one
  (``vision_use_head``; its output is unused but it runs).
- projector: ``model.multi_modal_projector``: the 2 x 2 pixel shuffle (1024 -> 256 features a
  crop, a reshape inside it) and the SwiGLU MLP to the text width.
- LLM prefill: first to last of ``model.language_model.layers`` (Cohere2: sliding-window and
  global layers as the config says).
- LM head: ``lm_head`` (tied to the embedding, as released; Cohere2's logit scale is not applied).

Untimed glue: the text embedding and the scatter of the features into it.
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
from tilings.tiled import TiledCanvas
from workers.arch import Architecture, ModelSpec, Pretrained
from workers.checkpoints import config_value, load_processors
from workers.inputs import FORCED_TOKEN_IDS, PROMPT, PROMPT_IDS, Prepared
from workers.modulemap import ModuleMap

logger = logging.getLogger(__name__)

DEFAULT_PROFILE = "cohere2-vision"
IMAGE, BEGIN, END, BREAK = "<|IMG_PATCH|>", "<|START_OF_IMG|>", "<|END_OF_IMG|>", "<|IMG_LINE_BREAK|>"
# Without a tokenizer: the begin, end and line-break ids stand 3, 2 and 1 below the image id (stand-ins).
STAND_IN_OFFSETS = {BEGIN: -3, END: -2, BREAK: -1}
# The tiny model's: inside its 1024-token vocabulary, above every id of PROMPT_IDS and FORCED_TOKEN_IDS.
TINY_VOCAB = 1024
TINY_IMAGE_TOKEN_ID = 1003
_SPECIAL = re.compile(r"<\|[A-Z_]+\|>")


# ----------------------------------------------------------------------------------------------
# Configs


def _tiny_config() -> Any:
    """Cohere2-Vision at toy size: a 2-layer SigLIP of width 32 on the released 512 px crops and 16 px patches
    (32 x 32 patches, shuffled to 256 features a crop as released; no pooling head, whose output the model does not
    use), a projector of width 128, and a 2-layer Cohere2 text tower of width 64 (one sliding-window layer, one
    global, as the released 3:1 pattern mixes them), its head tied to the embedding as released."""
    from transformers import Cohere2VisionConfig

    return Cohere2VisionConfig(
        vision_config={
            "model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, "image_size": 512, "patch_size": 16, "vision_use_head": False,
        },
        text_config={
            "model_type": "cohere2", "vocab_size": TINY_VOCAB, "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "max_position_embeddings": 8192, "layer_types": ["sliding_attention", "full_attention"],
            "sliding_window": 4096, "bos_token_id": 1005, "eos_token_id": 1006, "pad_token_id": 1007,
        },
        downsample_factor=2, alignment_intermediate_size=128, image_token_id=TINY_IMAGE_TOKEN_ID,
        tie_word_embeddings=True,
    )


# ----------------------------------------------------------------------------------------------
# Module map

MODULE_MAP = ModuleMap(
    vision=("model.vision_tower",),
    projector=("model.multi_modal_projector",),
    llm_blocks="model.language_model.layers",
    lm_head=("lm_head",),
    vision_blocks="model.vision_tower.encoder.layers",
    required=("vision", "projector", "llm_blocks", "lm_head", "vision_blocks"),
)


# ----------------------------------------------------------------------------------------------
# Schemes: which tiles a model takes


def tower_numbers(config: Any) -> dict[str, Any]:
    """The vision tower's tile and patch and the pixel shuffle (a config object, a raw ``config.json`` dict or a
    model); keys a raw config leaves out take Cohere2VisionConfig's defaults."""
    vision = config_value(config, "vision_config", default={})
    return {"image_size": config_value(vision, "image_size", default=512),
            "patch_size": config_value(vision, "patch_size", default=16),
            "downsample_factor": config_value(config, "downsample_factor", default=2)}


def tokens_per_tile(config: Any) -> int:
    """Features a crop gives after the pixel shuffle: ``(S / p / downsample_factor)^2``."""
    got = tower_numbers(config)
    return (got["image_size"] // got["patch_size"] // got["downsample_factor"]) ** 2


def _presets() -> str:
    return ", ".join(n for n, s in PROFILES.items() if isinstance(s, TiledCanvas) and s.order == "cohere2")


def check_scheme_fits(config: Any, scheme: Scheme) -> None:
    """The scheme must cut the crops the SigLIP tower takes and count the features the projector makes.

    Args:
        config: the model's config object, a model (its ``config`` is read), or a raw ``config.json`` dict.

    Raises:
        UsageError: not a Cohere2-Vision tiled-canvas scheme, or a tile, patch or token count the model does not take.
    """
    if not isinstance(scheme, TiledCanvas) or scheme.order != "cohere2":
        raise UsageError(
            f"profile {getattr(scheme, 'name', scheme)!r} is not a Cohere2-Vision tiled-canvas scheme; Cohere2-Vision "
            f"models take {_presets()} or a Cohere2-Vision preprocessor_config.json"
        )
    got = tower_numbers(config)
    if scheme.tile_size != got["image_size"]:
        raise UsageError(
            f"profile {scheme.name!r} uses {scheme.tile_size} px tiles but the model's vision tower takes "
            f"{got['image_size']}x{got['image_size']}; pick a profile with tile_size {got['image_size']}"
        )
    if scheme.patch_size != got["patch_size"]:
        raise UsageError(
            f"profile {scheme.name!r} has patch_size {scheme.patch_size} but the model's vision tower uses "
            f"{got['patch_size']} px patches; pick a profile with patch_size {got['patch_size']}"
        )
    if scheme.tokens_per_tile != tokens_per_tile(config):
        raise UsageError(
            f"profile {scheme.name!r} counts {scheme.tokens_per_tile} tokens per tile but the model makes "
            f"{tokens_per_tile(config)} (downsample_factor {got['downsample_factor']}); pick a profile with "
            f"tokens_per_tile {tokens_per_tile(config)}"
        )


def image_processor_for(scheme: TiledCanvas) -> Any:
    from transformers import Cohere2VisionImageProcessor

    return Cohere2VisionImageProcessor(**scheme.processor_kwargs())


def token_counter(image_processor: Any) -> Any:
    """transformers' own `Cohere2VisionProcessor` without a tokenizer: its ``replace_image_token`` (the text it writes
    for one image from the crop count) reads only its token strings and the image processor's ``patch_size``."""
    from transformers import Cohere2VisionProcessor

    counter = Cohere2VisionProcessor.__new__(Cohere2VisionProcessor)
    counter.patch_size = image_processor.patch_size
    counter.image_token, counter.boi_token, counter.eoi_token, counter.img_line_break_token = IMAGE, BEGIN, END, BREAK
    return counter


# ----------------------------------------------------------------------------------------------
# Input builder


@dataclass(frozen=True, slots=True)
class TokenLayout:
    """The ids of Cohere2-Vision's image tokens, by the token text ``Cohere2VisionProcessor`` writes."""

    ids: dict[str, int]

    @classmethod
    def from_config(cls, config: Any) -> TokenLayout:
        """The config's image id; stand-ins below it for the others (module docstring)."""
        image = int(config.image_token_id)
        return cls({IMAGE: image, **{token: image + off for token, off in STAND_IN_OFFSETS.items()}})

    @classmethod
    def from_processor(cls, processor: Any) -> TokenLayout:
        tokens = [processor.image_token, processor.boi_token, processor.eoi_token, processor.img_line_break_token]
        ids = processor.tokenizer.convert_tokens_to_ids(tokens)
        return cls(dict(zip((IMAGE, BEGIN, END, BREAK), (int(i) for i in ids))))

    def encode(self, text: str) -> list[int]:
        """The ids of a text made of image tokens only (what replace_image_token writes)."""
        tokens = _SPECIAL.findall(text)
        if "".join(tokens) != text:
            raise GeometryMismatchError(f"Cohere2VisionProcessor wrote text other than image tokens ({text[:80]!r}"
                                        "...); its version differs from the one this tool knows")
        return [self.ids[t] for t in tokens]

    @property
    def image(self) -> int:
        return self.ids[IMAGE]


@dataclass(slots=True)
class Cohere2Inputs:
    """`Cohere2VisionImageProcessor` plus the processor's own token text, or the full processor with a tokenizer.

    Forward kwargs: ``input_ids`` and ``pixel_values`` (``(crops, 3, 512, 512)``: the tiles row-major, then
    the thumbnail). Without a tokenizer, ``input_ids`` is ``PROMPT_IDS[0]``, the image's ids, then the rest
    of ``PROMPT_IDS``. No attention mask (one unpadded sequence).
    """

    image_processor: Any
    layout: TokenLayout
    tokens_per_tile: int
    processor: Any = None  # a Cohere2VisionProcessor with a tokenizer, or None
    prompt_ids: tuple[int, ...] = PROMPT_IDS
    decode_ids: tuple[int, ...] = FORCED_TOKEN_IDS

    def process(self, image: Image.Image) -> Prepared:
        if self.processor is not None:
            return self._with_processor(image)
        out = self.image_processor(images=[image], return_tensors="pt")
        crops = int(out["num_patches"][0])
        span = self.layout.encode(token_counter(self.image_processor).replace_image_token(out, 0))
        head, tail = list(self.prompt_ids[:1]), list(self.prompt_ids[1:])
        input_ids = torch.tensor([head + span + tail], dtype=torch.long)
        return self._prepared(image, out, input_ids, crops, self.image_processor, self.layout,
                              "image-processor+layout")

    def _with_processor(self, image: Image.Image) -> Prepared:
        proc = self.processor
        out = proc(images=[image], text=f"{proc.image_token}{PROMPT}", return_tensors="pt")
        crops = proc.image_processor.get_number_of_image_patches(image.height, image.width)
        return self._prepared(image, out, out["input_ids"], crops, proc.image_processor,
                              TokenLayout.from_processor(proc), "processor")

    def _prepared(self, image: Image.Image, out: Any, input_ids: torch.Tensor, reported: int, image_processor: Any,
                  layout: TokenLayout, source: str) -> Prepared:
        """The counts from the processor's output and the ids.

        Raises:
            GeometryMismatchError: the tiles, the reported crop count, the grid and the placeholder ids disagree.
        """
        from transformers.models.cohere2_vision.image_processing_cohere2_vision import get_optimal_tiled_canvas

        pixel_values = out["pixel_values"]
        crops = int(pixel_values.shape[0])
        size = image_processor.size
        cols, rows = get_optimal_tiled_canvas((image.height, image.width), (size.height, size.width),
                                              image_processor.min_patches, image_processor.max_patches)
        if image_processor.max_patches <= 1 or not image_processor.crop_to_patches:
            rows = cols = 1
        if not crops == reported == rows * cols + int(rows * cols > 1):
            raise GeometryMismatchError(
                f"Cohere2VisionImageProcessor returned {crops} crops and reports {reported} for its grid {rows}x{cols} "
                f"(expected {rows * cols + int(rows * cols > 1)} with the thumbnail); its version differs from the "
                "one this tool knows"
            )
        ids = input_ids[0]
        image_tokens = int((ids == layout.image).sum())
        if image_tokens != crops * self.tokens_per_tile:
            raise GeometryMismatchError(
                f"input_ids hold {image_tokens} {IMAGE} tokens but the model makes {self.tokens_per_tile} features "
                f"for each of the processor's {crops} crops; the processor's patch_size differs from the model's tower"
            )
        vision = {"pixel_values": pixel_values}
        return Prepared(
            forward={**vision, "input_ids": input_ids},
            vision=vision,
            crops=crops,
            image_tokens=image_tokens,
            sequence_tokens=int(torch.isin(ids, torch.tensor(sorted(set(layout.ids.values())))).sum()),
            seq_len=int(input_ids.shape[1]),
            grids=(rows, cols),
            source=source,
        )

    @staticmethod
    def prefill_kwargs(use_cache: bool) -> dict[str, Any]:
        # Generation's prefill computes the logits of the last position only.
        return {"use_cache": use_cache, "logits_to_keep": 1}

    @staticmethod
    def vision_only(model: nn.Module, vision: dict[str, torch.Tensor]) -> Any:
        """The SigLIP tower and the projector (pixel shuffle + MLP), as the forward runs them."""
        return model.model.get_image_features(pixel_values=vision["pixel_values"])

    def decode_step(self, model: nn.Module, output: Any, step: int, prefix_len: int) -> Any:
        """One forced token through the cache; the text tower takes its position from the cache length."""
        token = torch.tensor([[self.decode_ids[step % len(self.decode_ids)]]], device=output.logits.device)
        return model(input_ids=token, cache=output.cache, use_cache=True, logits_to_keep=1)


def inputs_for(config: Any, scheme: TiledCanvas, *, image_processor: Any = None,
               processor: Any = None) -> Cohere2Inputs:
    """The input builder of a model with `config`, its image processor configured by `scheme` unless given."""
    return Cohere2Inputs(
        image_processor=image_processor if image_processor is not None else image_processor_for(scheme),
        layout=TokenLayout.from_config(config), tokens_per_tile=tokens_per_tile(config), processor=processor,
    )


def _inputs(model: nn.Module, scheme: TiledCanvas) -> Cohere2Inputs:
    return inputs_for(model.config, scheme)


# ----------------------------------------------------------------------------------------------
# Loading


def _tokenizer_fits(processor: Any, config: Any) -> bool:
    """Whether the processor's image token is the model's image id and its tokenizer spells the four image tokens as
    four different known tokens."""
    try:
        layout = TokenLayout.from_processor(processor)
        unknown = getattr(processor.tokenizer, "unk_token_id", None)
        return (layout.image == int(config.image_token_id) and len(set(layout.ids.values())) == 4
                and unknown not in layout.ids.values())
    except (AttributeError, KeyError, TypeError, ValueError):
        return False


def scheme_from_checkpoint(image_processor: Any, model_config: Any) -> TiledCanvas:
    """The checkpoint's scheme: its image processor's settings (tile, tile limit, tokens a side) and the model's
    patch size."""
    settings = {**image_processor.to_dict(), "patch_size": image_processor.patch_size}
    return TiledCanvas.from_preprocessor_config(settings, patch_size=tower_numbers(model_config)["patch_size"])


def _load(source: str, *, revision: str | None, device: torch.device, dtype: torch.dtype,
          model_kwargs: dict[str, Any], scheme: TiledCanvas | None) -> Pretrained:
    from transformers import Cohere2VisionForConditionalGeneration, Cohere2VisionImageProcessor

    model = Cohere2VisionForConditionalGeneration.from_pretrained(source, revision=revision, dtype=dtype,
                                                                  **model_kwargs)
    model = model.to(device).eval()
    processor, image_processor = load_processors(source, revision, Cohere2VisionImageProcessor,
                                                 lambda p: _tokenizer_fits(p, model.config))
    if scheme is None:
        if image_processor is not None:
            scheme = scheme_from_checkpoint(image_processor, model.config)
        else:
            logger.warning("%s has no preprocessor config; using the %r tiling profile", source, DEFAULT_PROFILE)
            scheme = PROFILES[DEFAULT_PROFILE]
    check_scheme_fits(model.config, scheme)
    inputs = inputs_for(model.config, scheme, image_processor=image_processor, processor=processor)
    return Pretrained(model=model, scheme=scheme, inputs=inputs)


ARCHITECTURES: dict[str, Architecture] = {
    "cohere2-vision": Architecture(
        name="cohere2-vision", title="Cohere2-Vision", model_class="Cohere2VisionForConditionalGeneration",
        model_types=("cohere2_vision",), module_map=MODULE_MAP, default_profile=DEFAULT_PROFILE, inputs=_inputs,
        check_fits=check_scheme_fits, load_pretrained=_load,
    ),
}

MODELS: dict[str, ModelSpec] = {
    "tiny-cohere2-vision": ModelSpec(
        name="tiny-cohere2-vision",
        description="Cohere2-Vision architecture at toy size (32-wide SigLIP on 512 px crops, 64-wide Cohere2 text), "
                    "random weights; tens of ms per forward on a CPU. No full-size preset: Command A Vision (112B "
                    "parameters) does not fit one 80 GB GPU in bf16",
        architecture="cohere2-vision", profile=DEFAULT_PROFILE, config=_tiny_config,
    ),
}
