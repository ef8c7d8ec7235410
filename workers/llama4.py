"""The Llama 4 family: ``Llama4ForConditionalGeneration`` (MetaCLIP-style vision tower, pixel-shuffle adapter, MoE text).

Llama 4's image processor (``Llama4ImageProcessor``) picks the canvas of 336 px tiles (at most
16) that needs the least up-scaling, in torch float32, the smallest area on a tie; resizes the
image into it without distortion, pads it, cuts it into tiles and, for more than one tile, adds
the whole image at 336 x 336 last (the global tile). Every tile goes through the vision tower;
its 24 x 24 patch features are pixel-shuffled to 12 x 12 = 144 and mapped to the text width:
``Llama4Processor`` writes 144 ``<|patch|>`` tokens per tile, ``<|tile_x_separator|>`` between
the tiles of a row and ``<|tile_y_separator|>`` after each row (multi-tile grids), then
``<|image|>`` and the global tile's 144, inside ``<|image_start|>`` ... ``<|image_end|>``
(`tilings.tiled` describes the geometry; its scheme ``llama4`` is this family's). Every one of
those is a special token, so the sequence count needs no tokenizer.

Only a tiny model is registered. Llama 4's smallest released model, Scout (17B active, 16
experts), has 109B parameters: about 218 GB in bf16, which does not fit one 80 GB GPU, so there
is no full-size ``-arch`` preset (shapes that do not fit one GPU cannot be timed by one worker).
A hub id or local path of a transformers-format checkpoint loads real weights (``model_type``
``llama4``). Where no tokenizer can be loaded, the input builder runs the model's image
processor and lays out the text ``Llama4Processor.replace_image_token`` writes for that output,
with the ids of the released tokenizer's order (`TokenLayout.from_config`).

Module map (`MODULE_MAP`):

- vision: ``vision_model`` (``Llama4VisionModel``): the unfold patch embedding, the class token
  and position embeddings, every encoder layer (2-D RoPE), the layer norms, and the vision
  adapter (``vision_adapter``: the 0.5 pixel shuffle, 576 -> 144 features a tile, and its
  2-layer MLP). The adapter is part of the vision model in transformers and is timed as vision.
- projector: ``multi_modal_projector``, the one linear layer from the adapter's width to the
  text width.
- LLM prefill: first to last of ``language_model.model.layers`` (MoE and dense feed-forwards,
  chunked and global attention as the config says).
- LM head: ``language_model.lm_head``.

Untimed glue: the text embedding, flattening the features, the scatter into the embeddings.

transformers 5.24's ``Llama4ForConditionalGeneration.forward`` raises at its very end: it reads
``image_outputs`` from the text model's output, which has none. `fix_forward_output` gives that
output the missing attribute (None) with a forward hook on ``language_model``, so the forward
returns; the test ``test_the_forward_needs_the_output_fix`` fails once transformers no longer needs it.
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

DEFAULT_PROFILE = "llama4"
# The released tokenizer's vision tokens follow <|image_start|> (200080): <|image_end|> +1, <|tile_x_separator|> +4,
# <|tile_y_separator|> +5, <|image|> +10, <|patch|> +12 (= Llama4Config.image_token_index 200092); transformers'
# convert_llama4_weights_to_hf.py lists them in that order from 200080. Configs name only start, end and patch.
OFFSETS = {"<|image_end|>": 1, "<|tile_x_separator|>": 4, "<|tile_y_separator|>": 5, "<|image|>": 10, "<|patch|>": 12}
# The tiny model's: inside its 1024-token vocabulary, above every id of PROMPT_IDS and FORCED_TOKEN_IDS.
TINY_VOCAB = 1024
TINY_BOI = 1000
_SPECIAL = re.compile(r"<\|[a-z_]+\|>")


# ----------------------------------------------------------------------------------------------
# Configs


def _tiny_config() -> Any:
    """Llama 4 at toy size: a 2-layer vision tower of width 32 on the released 336 px tiles and 14 px patches
    (24 x 24 patches pixel-shuffled to 144 features a tile, as released; the adapter MLP takes 4 x 32 = 128), and
    a 2-layer MoE text tower of width 64 (4 experts, top-1, plus the shared expert; layer 0 chunked attention with
    RoPE, layer 1 global attention without, as the released every-fourth-layer NoPE pattern does)."""
    from transformers import Llama4Config

    return Llama4Config(
        vision_config={
            "hidden_size": 32, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
            "image_size": 336, "patch_size": 14, "pixel_shuffle_ratio": 0.5, "projector_input_dim": 64,
            "projector_output_dim": 64, "vision_output_dim": 64, "rope_theta": 10000,
        },
        text_config={
            "vocab_size": TINY_VOCAB, "hidden_size": 64, "intermediate_size": 64, "intermediate_size_mlp": 128,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
            "num_local_experts": 4, "num_experts_per_tok": 1, "no_rope_layer_interval": 2,
            "max_position_embeddings": 8192, "bos_token_id": 1020, "eos_token_id": 1021,
            "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0},
        },
        boi_token_index=TINY_BOI, eoi_token_index=TINY_BOI + 1, image_token_index=TINY_BOI + OFFSETS["<|patch|>"],
        tie_word_embeddings=False,
    )


# ----------------------------------------------------------------------------------------------
# Module map

MODULE_MAP = ModuleMap(
    vision=("vision_model",),
    projector=("multi_modal_projector",),
    llm_blocks="language_model.model.layers",
    lm_head=("language_model.lm_head",),
    vision_blocks="vision_model.model.layers",
    required=("vision", "projector", "llm_blocks", "lm_head", "vision_blocks"),
)


# ----------------------------------------------------------------------------------------------
# Schemes: which tiles a model takes


def tower_numbers(config: Any) -> dict[str, Any]:
    """The vision tower's tile, patch and pixel shuffle (a config object, a raw ``config.json`` dict or a model);
    keys a raw config leaves out take Llama4VisionConfig's defaults."""
    vision = config_value(config, "vision_config", default={})
    return {"image_size": config_value(vision, "image_size", default=448),
            "patch_size": config_value(vision, "patch_size", default=14),
            "pixel_shuffle_ratio": config_value(vision, "pixel_shuffle_ratio", default=0.5)}


def tokens_per_tile(config: Any) -> int | None:
    """Features a tile gives after the pixel shuffle, ``(S/p)^2 * ratio^2`` (None: not a whole number)."""
    got = tower_numbers(config)
    features = (got["image_size"] // got["patch_size"]) ** 2 * got["pixel_shuffle_ratio"] ** 2
    return int(features) if features == int(features) else None


def _presets() -> str:
    return ", ".join(n for n, s in PROFILES.items() if isinstance(s, TiledCanvas) and s.order == "llama4")


def check_scheme_fits(config: Any, scheme: Scheme) -> None:
    """The scheme must cut the tiles the vision tower takes and count the features it makes.

    Args:
        config: the model's config object, a model (its ``config`` is read), or a raw ``config.json`` dict.

    Raises:
        UsageError: not a Llama 4 tiled-canvas scheme, or a tile, patch or token count the model does not take.
    """
    if not isinstance(scheme, TiledCanvas) or scheme.order != "llama4":
        raise UsageError(
            f"profile {getattr(scheme, 'name', scheme)!r} is not a Llama 4 tiled-canvas scheme; Llama 4 models take "
            f"{_presets()} or a Llama 4 preprocessor_config.json"
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
    want = tokens_per_tile(config)
    if want is not None and scheme.tokens_per_tile != want:
        raise UsageError(
            f"profile {scheme.name!r} counts {scheme.tokens_per_tile} tokens per tile but the model makes {want} "
            f"(pixel_shuffle_ratio {got['pixel_shuffle_ratio']}); pick a profile with tokens_per_tile {want}"
        )


def image_processor_for(scheme: TiledCanvas) -> Any:
    from transformers import Llama4ImageProcessor

    return Llama4ImageProcessor(**scheme.processor_kwargs())


def token_counter(config: Any) -> Any:
    """transformers' own `Llama4Processor` without a tokenizer: its ``replace_image_token`` (the text it writes for
    one image, tokens per tile counted from the pixel values' shape) needs only the patch size and the shuffle."""
    from transformers import Llama4Processor

    got = tower_numbers(config)
    counter = Llama4Processor.__new__(Llama4Processor)
    counter.patch_size = got["patch_size"]
    counter.downsample_ratio = int(round(1.0 / (got["pixel_shuffle_ratio"] ** 2)))
    return counter


def fix_forward_output(model: nn.Module) -> nn.Module:
    """Let `model`'s forward return (module docstring): the text model's output gets ``image_outputs = None``.

    Registered once per model; the hook sets an attribute and returns, after the LM head (outside every stage).
    """
    if not getattr(model, "_tilesweep_output_fix", False):
        def add_image_outputs(module: nn.Module, args: Any, output: Any) -> None:
            if not hasattr(output, "image_outputs"):
                output.image_outputs = None

        model.language_model.register_forward_hook(add_image_outputs)
        model._tilesweep_output_fix = True
    return model


# ----------------------------------------------------------------------------------------------
# Input builder


@dataclass(frozen=True, slots=True)
class TokenLayout:
    """The ids of Llama 4's image tokens, by the token text ``Llama4Processor`` writes."""

    ids: dict[str, int]

    @classmethod
    def from_config(cls, config: Any) -> TokenLayout:
        """Start, end and patch from the config; the separators and ``<|image|>`` at the released offsets."""
        start = int(config.boi_token_index)
        ids = {"<|image_start|>": start, **{token: start + off for token, off in OFFSETS.items()}}
        ids["<|image_end|>"], ids["<|patch|>"] = int(config.eoi_token_index), int(config.image_token_index)
        return cls(ids)

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> TokenLayout:
        tokens = ["<|image_start|>", *OFFSETS]
        return cls(dict(zip(tokens, (int(i) for i in tokenizer.convert_tokens_to_ids(tokens)))))

    def encode(self, text: str) -> list[int]:
        """The ids of a text made of image tokens only (what replace_image_token writes)."""
        tokens = _SPECIAL.findall(text)
        if "".join(tokens) != text:
            raise GeometryMismatchError(f"Llama4Processor wrote text other than image tokens ({text[:80]!r}...); "
                                        "its version differs from the one this tool knows")
        return [self.ids[t] for t in tokens]

    @property
    def patch(self) -> int:
        return self.ids["<|patch|>"]


@dataclass(slots=True)
class Llama4Inputs:
    """`Llama4ImageProcessor` plus the processor's own token text, or the full processor when a tokenizer loads.

    Forward kwargs: ``input_ids`` and ``pixel_values`` (``(crops, 3, 336, 336)``: the tiles row-major,
    then the global tile). Without a tokenizer, ``input_ids`` is ``PROMPT_IDS[0]``, the image's ids,
    then the rest of ``PROMPT_IDS``. No attention mask (one unpadded sequence).
    """

    image_processor: Any
    layout: TokenLayout
    counter: Any  # token_counter(config)
    tokens_per_tile: int
    processor: Any = None  # a Llama4Processor with a tokenizer, or None
    prompt_ids: tuple[int, ...] = PROMPT_IDS
    decode_ids: tuple[int, ...] = FORCED_TOKEN_IDS

    def process(self, image: Image.Image) -> Prepared:
        if self.processor is not None:
            return self._with_processor(image)
        out = self.image_processor(images=[image], return_tensors="pt")
        span = self.layout.encode(self.counter.replace_image_token(out, 0))
        head, tail = list(self.prompt_ids[:1]), list(self.prompt_ids[1:])
        input_ids = torch.tensor([head + span + tail], dtype=torch.long)
        rows, cols = (int(v) for v in out["aspect_ratios"][0])
        return self._prepared(out, input_ids, (rows, cols), self.layout, "image-processor+layout")

    def _with_processor(self, image: Image.Image) -> Prepared:
        proc = self.processor
        out = proc(images=[image], text=f"{proc.fake_image_token}{PROMPT}", return_tensors="pt")
        layout = TokenLayout.from_tokenizer(proc.tokenizer)
        return self._prepared(out, out["input_ids"], self._grid(proc.image_processor, image), layout, "processor")

    @staticmethod
    def _grid(image_processor: Any, image: Image.Image) -> tuple[int, int]:
        """(rows, cols) by the image processor's own selection, on its own settings (the full processor drops the
        ``aspect_ratios`` the image processor reports)."""
        from transformers.models.llama4.image_processing_llama4 import find_supported_resolutions, get_best_fit

        size = image_processor.size
        resolutions = torch.tensor(find_supported_resolutions(image_processor.max_patches, size))
        height, width = (int(v) for v in get_best_fit((image.height, image.width), resolutions))
        return (height // size.height, width // size.width)

    def _prepared(self, out: Any, input_ids: torch.Tensor, grid: tuple[int, int], layout: TokenLayout,
                  source: str) -> Prepared:
        """The counts from the processor's output and the ids.

        Raises:
            GeometryMismatchError: the tiles, the grid and the placeholder ids disagree.
        """
        pixel_values = out["pixel_values"]
        crops = int(pixel_values.shape[0])
        rows, cols = grid
        if crops != rows * cols + int(rows * cols > 1):
            raise GeometryMismatchError(
                f"Llama4ImageProcessor returned {crops} tiles for its grid {rows}x{cols} (expected "
                f"{rows * cols + int(rows * cols > 1)} with the global tile); its version differs from the one this "
                "tool knows"
            )
        ids = input_ids[0]
        image_tokens = int((ids == layout.patch).sum())
        if image_tokens != crops * self.tokens_per_tile:
            raise GeometryMismatchError(
                f"input_ids hold {image_tokens} <|patch|> tokens but the model makes {self.tokens_per_tile} features "
                f"for each of the processor's {crops} tiles; the processor's patch size or pixel shuffle differs "
                "from the model's"
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
        """The vision model (adapter included) and the projector on the flattened features, as the forward runs them."""
        features = model.get_image_features(pixel_values=vision["pixel_values"]).last_hidden_state
        return model.multi_modal_projector(features.view(-1, features.size(-1)))

    def decode_step(self, model: nn.Module, output: Any, step: int, prefix_len: int) -> Any:
        """One forced token through the cache; the text tower takes its position from the cache length."""
        token = torch.tensor([[self.decode_ids[step % len(self.decode_ids)]]], device=output.logits.device)
        return model(input_ids=token, cache=output.cache, use_cache=True, logits_to_keep=1)


def inputs_for(model: nn.Module, scheme: TiledCanvas, *, image_processor: Any = None,
               processor: Any = None) -> Llama4Inputs:
    """The input builder of `model` (its forward fixed, `fix_forward_output`), its image processor configured by
    `scheme` unless given."""
    fix_forward_output(model)
    config = model.config
    return Llama4Inputs(
        image_processor=image_processor if image_processor is not None else image_processor_for(scheme),
        layout=TokenLayout.from_config(config), counter=token_counter(config),
        tokens_per_tile=tokens_per_tile(config) or scheme.tokens_per_tile, processor=processor,
    )


def _inputs(model: nn.Module, scheme: TiledCanvas) -> Llama4Inputs:
    return inputs_for(model, scheme)


# ----------------------------------------------------------------------------------------------
# Loading


def _tokenizer_fits(processor: Any, config: Any) -> bool:
    """Whether the processor's tokenizer spells ``<|patch|>`` as the model's image id and every image token as one."""
    tokenizer = getattr(processor, "tokenizer", None)
    try:
        layout = TokenLayout.from_tokenizer(tokenizer)
        unknown = getattr(tokenizer, "unk_token_id", None)
        return (layout.patch == int(config.image_token_index) and len(set(layout.ids.values())) == len(layout.ids)
                and unknown not in layout.ids.values())
    except (AttributeError, KeyError, TypeError, ValueError):
        return False


def scheme_from_checkpoint(image_processor: Any, model_config: Any) -> TiledCanvas:
    """The checkpoint's scheme: its image processor's settings, the model's patch size and tokens per tile."""
    overrides: dict[str, Any] = {"patch_size": tower_numbers(model_config)["patch_size"]}
    tokens = tokens_per_tile(model_config)
    if tokens is not None:
        overrides["tokens_per_tile"] = tokens
    return TiledCanvas.from_preprocessor_config(image_processor.to_dict(), **overrides)


def _load(source: str, *, revision: str | None, device: torch.device, dtype: torch.dtype,
          model_kwargs: dict[str, Any], scheme: TiledCanvas | None) -> Pretrained:
    from transformers import Llama4ForConditionalGeneration, Llama4ImageProcessor

    model = Llama4ForConditionalGeneration.from_pretrained(source, revision=revision, dtype=dtype, **model_kwargs)
    model = model.to(device).eval()
    processor, image_processor = load_processors(source, revision, Llama4ImageProcessor,
                                                 lambda p: _tokenizer_fits(p, model.config))
    if scheme is None:
        if image_processor is not None:
            scheme = scheme_from_checkpoint(image_processor, model.config)
        else:
            logger.warning("%s has no preprocessor config; using the %r tiling profile", source, DEFAULT_PROFILE)
            scheme = PROFILES[DEFAULT_PROFILE]
    check_scheme_fits(model.config, scheme)
    inputs = inputs_for(model, scheme, image_processor=image_processor, processor=processor)
    return Pretrained(model=model, scheme=scheme, inputs=inputs)


ARCHITECTURES: dict[str, Architecture] = {
    "llama4": Architecture(
        name="llama4", title="Llama 4", model_class="Llama4ForConditionalGeneration", model_types=("llama4",),
        module_map=MODULE_MAP, default_profile=DEFAULT_PROFILE, inputs=_inputs, check_fits=check_scheme_fits,
        load_pretrained=_load,
    ),
}

MODELS: dict[str, ModelSpec] = {
    "tiny-llama4": ModelSpec(
        name="tiny-llama4",
        description="Llama 4 architecture at toy size (32-wide vision tower on 336 px tiles, 64-wide MoE text with "
                    "4 experts), random weights; tens of ms per forward on a CPU. No full-size preset: Scout "
                    "(109B parameters) does not fit one 80 GB GPU in bf16",
        architecture="llama4", profile=DEFAULT_PROFILE, config=_tiny_config,
    ),
}
