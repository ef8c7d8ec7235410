"""The InternVL family: InternVL3 (native in transformers as ``InternVLForConditionalGeneration``).

InternVL's processor (``InternVLProcessor`` over ``GotOcr2ImageProcessor`` with
``crop_to_patches`` forced on) picks the grid of square tiles whose aspect ratio is
closest to the image's, cuts the image into rows x cols tiles of 448 px and, for more
than one tile, adds the whole image as a thumbnail; the InternViT encoder runs on
every tile, a pixel shuffle (``downsample_ratio`` 0.5) folds 2x2 patch features into
one, and the projector maps each to the text width: 256 tokens per tile, written as
``<img>`` + ``<IMG_CONTEXT>`` x 256*tiles + ``</img>`` (`tilings.aspect` describes the
geometry; its scheme ``internvl3`` is this family's).

The registered models build the architecture from a config with random weights
(latency depends on shapes, not weights): a tiny one for CPU tests, the full-size
InternVL3-8B for GPU runs without downloads. A hub id or local path loads real
weights. Where no tokenizer can be loaded (random-weight architectures, offline),
the input builder runs the model's own image processor
(`transformers.GotOcr2ImageProcessor`) and lays out the image tokens itself, from the
number of tiles the processor returned.

Module map. ``model.vision_tower`` (InternViT: patch embedding, CLS token, position
embeddings, ``encoder.layer``), then the pixel shuffle (a reshape in
``InternVLModel.get_image_features``, not a module: between the two spans, untimed),
then ``model.multi_modal_projector`` (LayerNorm + 2-layer MLP), the Qwen2 blocks
``model.language_model.layers`` and ``lm_head``. The vision and projector spans are
siblings: ``t_vision_ms`` does not include ``t_projector_ms``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torch import nn

from tilesweep.errors import GeometryMismatchError, UsageError
from tilings import PROFILES, Scheme
from tilings.aspect import ClosestAspect
from workers.arch import Architecture, ModelSpec, Pretrained
from workers.checkpoints import config_value, load_processors
from workers.inputs import FORCED_TOKEN_IDS, PROMPT, PROMPT_IDS, Prepared
from workers.modulemap import ModuleMap

logger = logging.getLogger(__name__)

DEFAULT_PROFILE = "internvl3"
# The processor that loads InternVL checkpoints forces crop_to_patches on at call time
# (its images_kwargs default), whatever the image processor's own config says.
PROCESSOR_CLASS = "InternVLProcessor"
# The model config names only the context token (``image_token_id``). The released tokenizers
# (OpenGVLab/InternVL3-*-hf, added_tokens.json) put ``<img>`` and ``</img>`` right before it:
# 151665 <img>, 151666 </img>, 151667 <IMG_CONTEXT>. Configs that do not name them follow that order.
START_OFFSET, END_OFFSET = -2, -1

# Special ids of the tiny model: inside its 1024-token vocabulary, above every id of PROMPT_IDS and
# FORCED_TOKEN_IDS, in the released order (<img>, </img>, <IMG_CONTEXT>); 1005/1006 the text bos/eos.
TINY_VOCAB = 1024
TINY_IDS = {"image_start_token_id": 1000, "image_end_token_id": 1001, "image_token_id": 1002}


# ----------------------------------------------------------------------------------------------
# Configs


def _tiny_config() -> Any:
    """InternVL3 at toy size: a 2-layer InternViT of width 32 on the released 448 px tiles and 14 px
    patches (32x32 patches, pixel-shuffled to 16x16 = 256 tokens per tile, as released), a 2-layer
    Qwen2 text tower of width 64."""
    from transformers import InternVLConfig

    return InternVLConfig(
        vision_config={
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
            "image_size": [448, 448], "patch_size": [14, 14], "attention_bias": True, "use_qk_norm": False,
            "norm_type": "layer_norm", "hidden_act": "gelu", "layer_scale_init_value": 0.1,
            "use_mean_pooling": True, "use_absolute_position_embeddings": True,
        },
        text_config={
            "model_type": "qwen2", "vocab_size": TINY_VOCAB, "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "max_position_embeddings": 8192, "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0},
            "use_sliding_window": False, "bos_token_id": 1005, "eos_token_id": 1006, "tie_word_embeddings": False,
        },
        downsample_ratio=0.5, image_seq_length=256, projector_hidden_act="gelu", vision_feature_layer=-1,
        vision_feature_select_strategy="default", tie_word_embeddings=False, **TINY_IDS,
    )


def _internvl3_8b_config() -> Any:
    """The numbers of OpenGVLab/InternVL3-8B-hf's config.json: InternViT-300M-448px-V2_5 (24 layers of
    width 1024, qkv bias, LayerNorm, layer scale) and Qwen2.5-7B (28 layers of width 3584, GQA 28/4,
    vocabulary 151674, untied head); 7.94B parameters. RoPE is the default one: a dynamic-NTK rope_scaling,
    as the InternVL3-1B-hf config carries (not verified for the 8B), acts only beyond 32768 positions, which no
    InternVL3 image sequence reaches (at most 13 x 256 + 2 tokens)."""
    from transformers import InternVLConfig

    return InternVLConfig(
        vision_config={
            "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
            "image_size": [448, 448], "patch_size": [14, 14], "attention_bias": True, "use_qk_norm": False,
            "norm_type": "layer_norm", "layer_norm_eps": 1e-6, "hidden_act": "gelu", "layer_scale_init_value": 0.1,
            "use_mean_pooling": True, "use_absolute_position_embeddings": True,
        },
        text_config={
            "model_type": "qwen2", "vocab_size": 151674, "hidden_size": 3584, "intermediate_size": 18944,
            "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
            "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "hidden_act": "silu",
            "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0},
            "use_sliding_window": False, "bos_token_id": 151643, "eos_token_id": 151645, "tie_word_embeddings": False,
        },
        downsample_ratio=0.5, image_seq_length=256, projector_hidden_act="gelu", vision_feature_layer=-1,
        vision_feature_select_strategy="default", image_token_id=151667, tie_word_embeddings=False,
    )


# ----------------------------------------------------------------------------------------------
# Module map

MAP = ModuleMap(
    vision=("model.vision_tower",),
    projector=("model.multi_modal_projector",),
    llm_blocks="model.language_model.layers",
    lm_head=("lm_head",),
    # InternViT's blocks: `encoder.layer` (singular), which tells it from a CLIP/SigLIP tower.
    vision_blocks="model.vision_tower.encoder.layer",
    required=("vision", "projector", "llm_blocks", "lm_head", "vision_blocks"),
)


# ----------------------------------------------------------------------------------------------
# Schemes: which tiles a model takes


def _side(value: Any) -> int | None:
    """A square size given as N or [N, N] (None: unknown or not square)."""
    if isinstance(value, (list, tuple)):
        return int(value[0]) if len(value) == 2 and value[0] == value[1] else None
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True, slots=True)
class TowerGeometry:
    """What a model's vision tower makes of one tile, from its config."""

    tile_size: int | None  # vision_config.image_size (square)
    patch_size: int | None
    downsample_ratio: float

    @property
    def tokens_per_tile(self) -> int | None:
        """Features per tile after the pixel shuffle: ((S/p) * r)^2."""
        if not self.tile_size or not self.patch_size:
            return None
        side = self.tile_size // self.patch_size * self.downsample_ratio
        return int(side) ** 2 if side == int(side) else None


def tower_geometry(config: Any) -> TowerGeometry:
    """The tile geometry of a config object, a model or a raw ``config.json`` dict."""
    vision = config_value(config, "vision_config")
    ratio = config_value(config, "downsample_ratio")
    return TowerGeometry(tile_size=_side(config_value(vision, "image_size")),
                         patch_size=_side(config_value(vision, "patch_size")),
                         downsample_ratio=float(ratio) if ratio is not None else 0.5)


def _presets() -> list[str]:
    return [name for name, scheme in PROFILES.items() if isinstance(scheme, ClosestAspect)]


def check_scheme_fits(config: Any, scheme: Scheme) -> None:
    """An InternViT embeds one grid of patches per tile and the text holds a fixed number of tokens per tile:
    the scheme's tile size, patch size and tokens per tile must be the model's.

    Args:
        config: the model's config object, a model (its ``config`` is read), or a raw ``config.json`` dict.

    Raises:
        UsageError: a scheme of another kind, or a tile, patch or token count the model does not take.
    """
    if not isinstance(scheme, ClosestAspect):
        raise UsageError(
            f"profile {getattr(scheme, 'name', scheme)!r} is not a closest-aspect tile scheme; InternVL models take "
            f"{', '.join(_presets()) or 'a closest-aspect scheme'} or an InternVL preprocessor_config.json"
        )
    tower = tower_geometry(config)
    fitting = ", ".join(_presets()) or "one built from its preprocessor_config.json"
    if tower.patch_size is not None and scheme.patch_size != tower.patch_size:
        raise UsageError(
            f"profile {scheme.name!r} uses patch_size {scheme.patch_size} but the model's vision tower takes "
            f"patch_size {tower.patch_size}; pick a profile with patch_size {tower.patch_size} (e.g. {fitting})"
        )
    if tower.tile_size is not None and scheme.tile_size != tower.tile_size:
        raise UsageError(
            f"profile {scheme.name!r} uses {scheme.tile_size} px tiles but the model's vision tower takes "
            f"{tower.tile_size}x{tower.tile_size}; pick a profile with tile_size {tower.tile_size} (e.g. {fitting})"
        )
    want = tower.tokens_per_tile
    if want is not None and scheme.tokens_per_tile != want:
        raise UsageError(
            f"profile {scheme.name!r} counts {scheme.tokens_per_tile} tokens per tile but the model makes {want} "
            f"({tower.tile_size}/{tower.patch_size} patches a side, downsample_ratio {tower.downsample_ratio}); "
            f"pick a profile with tokens_per_tile {want}"
        )


def internvl_image_processor(scheme: Scheme) -> Any:
    """The model's own image processor class, configured to the scheme."""
    from transformers import GotOcr2ImageProcessor

    return GotOcr2ImageProcessor(**scheme.processor_kwargs())


# ----------------------------------------------------------------------------------------------
# Input builder


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenLayout:
    """The image ids of one model and its tokens per tile: enough to lay out an image span from a tile count."""

    start: int  # <img>
    end: int  # </img>
    image: int  # <IMG_CONTEXT>
    tokens_per_tile: int

    def image_span(self, tiles: int) -> list[int]:
        """``<img>`` + ``<IMG_CONTEXT>`` x (tokens per tile x tiles) + ``</img>``: what
        `InternVLProcessor.replace_image_token` makes of the one ``<IMG_CONTEXT>`` the chat template writes."""
        return [self.start] + [self.image] * (self.tokens_per_tile * tiles) + [self.end]

    @property
    def special(self) -> tuple[int, int, int]:
        return (self.start, self.image, self.end)


def layout_from_config(config: Any) -> TokenLayout:
    """The layout of a model config: its ``image_token_id``, ``<img>``/``</img>`` where it names them (else the
    released tokenizer's order), and the features its tower makes per tile.

    Raises:
        UsageError: a tower whose tile is not a whole, even number of patches (no pixel shuffle fits it).
    """
    image = int(config.image_token_id)
    tokens = tower_geometry(config).tokens_per_tile
    if tokens is None:
        raise UsageError(
            f"the model's vision tower ({config.vision_config.image_size} px, patch {config.vision_config.patch_size}, "
            f"downsample_ratio {config.downsample_ratio}) gives no whole number of tokens per tile; "
            "it is not an InternVL layout this tool knows"
        )
    return TokenLayout(
        start=int(getattr(config, "image_start_token_id", image + START_OFFSET)),
        end=int(getattr(config, "image_end_token_id", image + END_OFFSET)),
        image=image,
        tokens_per_tile=tokens,
    )


@dataclass(slots=True)
class InternVLInputs:
    """InternVL3: `GotOcr2ImageProcessor` (tiles plus thumbnail), plus the full processor when a tokenizer loads.

    Forward kwargs: ``input_ids`` and ``pixel_values`` (``(tiles, 3, T, T)``: every tile, then the
    thumbnail). No attention mask (one unpadded sequence) and no position ids (the Qwen2 text
    tower counts 1-D positions from the cache, as generation does).
    """

    image_processor: Any
    layout: TokenLayout
    crop_to_patches: bool = True  # what the processor is called with (InternVLProcessor forces True)
    processor: Any = None  # an InternVLProcessor with a tokenizer, or None
    prompt_ids: tuple[int, ...] = PROMPT_IDS
    decode_ids: tuple[int, ...] = FORCED_TOKEN_IDS

    def _grid(self, image: Image.Image) -> tuple[int, int]:
        """(rows, cols) by the image processor's own selection function, on its own settings."""
        from transformers.models.got_ocr2.image_processing_got_ocr2 import get_optimal_tiled_canvas

        if not self.crop_to_patches:
            return (1, 1)
        proc = self.image_processor
        size = proc.size
        tile = (size["height"], size["width"]) if isinstance(size, Mapping) else (size.height, size.width)
        cols, rows = get_optimal_tiled_canvas((image.height, image.width), tile, proc.min_patches, proc.max_patches)
        return (rows, cols)

    def _counts(self, image: Image.Image, out: Any, input_ids: torch.Tensor, image_token: int,
                special: tuple[int, ...]) -> tuple[tuple[int, int], int, int, int]:
        """(grid, crops, image tokens, sequence tokens), counted from the processor's output and the ids.

        Raises:
            GeometryMismatchError: the tiles, the processor's patch count, the grid and the placeholder ids disagree.
        """
        pixel_values = out["pixel_values"]
        crops = int(pixel_values.shape[0])
        if "num_patches" in out:  # the image processor alone reports it; the full processor pops it
            reported = int(torch.as_tensor(out["num_patches"]).sum())
            if reported != crops:
                raise GeometryMismatchError(
                    f"the image processor reports {reported} tiles but returned {crops}; its version differs from "
                    "the one this tool knows"
                )
        rows, cols = self._grid(image)
        if crops != rows * cols + int(rows * cols != 1):
            raise GeometryMismatchError(
                f"the image processor returned {crops} tiles for its grid {rows}x{cols} (expected "
                f"{rows * cols + int(rows * cols != 1)} with the thumbnail); its version differs from the one this "
                "tool knows"
            )
        ids = input_ids[0]
        image_tokens = int((ids == image_token).sum())
        if image_tokens != crops * self.layout.tokens_per_tile:
            raise GeometryMismatchError(
                f"input_ids hold {image_tokens} image tokens but the model makes {self.layout.tokens_per_tile} "
                f"features for each of the processor's {crops} tiles ({crops * self.layout.tokens_per_tile}); "
                "the processor's image_seq_length differs from the model's vision tower"
            )
        sequence_tokens = int(torch.isin(ids, torch.tensor(special)).sum())
        return (rows, cols), crops, image_tokens, sequence_tokens

    def process(self, image: Image.Image) -> Prepared:
        if self.processor is not None:
            return self._with_processor(image)
        out = self.image_processor(images=[image], crop_to_patches=self.crop_to_patches, return_tensors="pt")
        tiles = int(torch.as_tensor(out["num_patches"]).sum())  # replace_image_token's count
        span = self.layout.image_span(tiles)
        head, tail = list(self.prompt_ids[:1]), list(self.prompt_ids[1:])
        input_ids = torch.tensor([head + span + tail], dtype=torch.long)
        return self._prepared(image, out, input_ids, self.layout.image, self.layout.special,
                              source="image-processor+layout")

    def _with_processor(self, image: Image.Image) -> Prepared:
        proc = self.processor
        # The chat template writes an image as its context token and a newline; the processor expands it.
        out = proc(images=[image], text=f"{proc.image_token}\n{PROMPT}", crop_to_patches=self.crop_to_patches,
                   return_tensors="pt")
        special = (proc.start_image_token_id, proc.image_token_id, proc.end_image_token_id)
        return self._prepared(image, out, out["input_ids"], proc.image_token_id, special, source="processor")

    def _prepared(self, image: Image.Image, out: Any, input_ids: torch.Tensor, image_token: int,
                  special: tuple[int, ...], *, source: str) -> Prepared:
        grid, crops, image_tokens, sequence_tokens = self._counts(image, out, input_ids, image_token, special)
        vision = {"pixel_values": out["pixel_values"]}
        return Prepared(
            forward={**vision, "input_ids": input_ids},
            vision=vision,
            crops=crops,
            image_tokens=image_tokens,
            sequence_tokens=sequence_tokens,
            seq_len=int(input_ids.shape[1]),
            grids=grid,
            source=source,
        )

    @staticmethod
    def prefill_kwargs(use_cache: bool) -> dict[str, Any]:
        # Generation's prefill computes the logits of the last position only.
        return {"use_cache": use_cache, "logits_to_keep": 1}

    @staticmethod
    def vision_only(model: torch.nn.Module, vision: dict[str, torch.Tensor]) -> Any:
        """The vision tower, the pixel shuffle and the projector, as the forward runs them."""
        return model.model.get_image_features(pixel_values=vision["pixel_values"])

    def decode_step(self, model: torch.nn.Module, output: Any, step: int, prefix_len: int) -> Any:
        """One forced token through the cache; the text tower takes its position from the cache length."""
        token = torch.tensor([[self.decode_ids[step % len(self.decode_ids)]]], device=output.logits.device)
        return model(input_ids=token, cache=output.cache, use_cache=True, logits_to_keep=1)


# ----------------------------------------------------------------------------------------------
# Loading


def _inputs(model: nn.Module, scheme: Scheme) -> InternVLInputs:
    return InternVLInputs(image_processor=internvl_image_processor(scheme), layout=layout_from_config(model.config),
                          crop_to_patches=scheme.crop_to_patches)


def _processors(source: str, revision: str | None, layout: TokenLayout) -> tuple[Any, Any]:
    """(full processor or None, image processor or None): `InternVLProcessor` needs a tokenizer that names the
    image tokens (``start_image_token`` ...), so the full one counts only if it maps them to the model's ids."""
    from transformers import GotOcr2ImageProcessor

    return load_processors(source, revision, GotOcr2ImageProcessor, lambda p: _tokenizer_fits(p, layout))


def _tokenizer_fits(processor: Any, layout: TokenLayout) -> bool:
    """Whether the processor's context token is the model's ``image_token_id`` and its tokenizer spells the three
    image tokens at the processor's ids."""
    tokenizer = getattr(processor, "tokenizer", None)
    try:
        ids = [processor.start_image_token_id, processor.image_token_id, processor.end_image_token_id]
        names = [processor.start_image_token, processor.image_token, processor.end_image_token]
        return (tokenizer is not None and ids[1] == layout.image
                and list(tokenizer.convert_tokens_to_ids(names)) == ids)
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        return False


def scheme_from_processor(image_processor: Any, processor: Any, model_config: Any) -> ClosestAspect:
    """The checkpoint's scheme: its image processor's settings as `InternVLProcessor` calls it (crop_to_patches
    forced on), the tokens per tile of its processor (else of the model) and the model's patch size."""
    settings = {**image_processor.to_dict(), "processor_class": PROCESSOR_CLASS}
    tower = tower_geometry(model_config)
    seq = getattr(processor, "image_seq_length", None) if processor is not None else None
    overrides: dict[str, Any] = {}
    if seq is not None:
        settings["image_seq_length"] = seq
    elif tower.tokens_per_tile is not None:
        overrides["tokens_per_tile"] = tower.tokens_per_tile
    if tower.patch_size is not None:
        overrides["patch_size"] = tower.patch_size
    return ClosestAspect.from_preprocessor_config(settings, **overrides)


def _load(source: str, *, revision: str | None, device: torch.device, dtype: torch.dtype,
          model_kwargs: dict[str, Any], scheme: Scheme | None) -> Pretrained:
    from transformers import InternVLForConditionalGeneration

    model = InternVLForConditionalGeneration.from_pretrained(source, revision=revision, dtype=dtype, **model_kwargs)
    model = model.to(device).eval()
    layout = layout_from_config(model.config)
    processor, image_processor = _processors(source, revision, layout)
    if scheme is None:
        if image_processor is not None:
            scheme = scheme_from_processor(image_processor, processor, model.config)
        else:
            logger.warning("%s has no preprocessor config; using the %r tiling profile", source, DEFAULT_PROFILE)
            scheme = PROFILES[DEFAULT_PROFILE]
    check_scheme_fits(model.config, scheme)
    if processor is not None:  # the processor's own ids and tokens per tile lay out the text
        layout = TokenLayout(start=processor.start_image_token_id, end=processor.end_image_token_id,
                             image=processor.image_token_id, tokens_per_tile=layout.tokens_per_tile)
    inputs = InternVLInputs(
        image_processor=image_processor if image_processor is not None else internvl_image_processor(scheme),
        layout=layout,
        crop_to_patches=scheme.crop_to_patches,
        processor=processor,
    )
    return Pretrained(model=model, scheme=scheme, inputs=inputs)


ARCHITECTURES: dict[str, Architecture] = {
    "internvl3": Architecture(
        name="internvl3", title="InternVL3", model_class="InternVLForConditionalGeneration", model_types=("internvl",),
        module_map=MAP, default_profile=DEFAULT_PROFILE, inputs=_inputs, check_fits=check_scheme_fits,
        load_pretrained=_load,
    ),
}

MODELS: dict[str, ModelSpec] = {
    "tiny-internvl3": ModelSpec(
        name="tiny-internvl3",
        description="InternVL3 architecture at toy size (32-wide InternViT on 448 px tiles, 64-wide Qwen2), "
                    "random weights; tens of ms per forward on a CPU",
        architecture="internvl3", profile=DEFAULT_PROFILE, config=_tiny_config,
    ),
    "internvl3-8b-arch": ModelSpec(
        name="internvl3-8b-arch",
        description="InternVL3-8B shapes (OpenGVLab/InternVL3-8B-hf config.json: InternViT-300M + Qwen2.5-7B), "
                    "random weights, no download",
        architecture="internvl3", profile=DEFAULT_PROFILE, weights="meta", config=_internvl3_8b_config,
    ),
}
