"""Llama 3.2 Vision's family: `MllamaForConditionalGeneration` (a tiled ViT, cross-attention into Llama 3.1).

Mllama's processor (``MllamaImageProcessor``, `tilings.mllama`) picks a canvas of up to
``max_image_tiles`` square tiles, cuts the image into them and **pads every image to
``max_image_tiles`` tiles**; the vision model runs on all of them (padding tiles are
masked in attention, not skipped). The features never enter the text: the prompt
holds one ``<|image|>`` token, and the language model's cross-attention layers (every
fifth layer of the released 40) attend to the ``max_image_tiles * ((T/p)^2 + 1)``
vision states, padding included. So the work of a forward does not depend on the
tiling: this family is tilesweep's constant-compute control (`tilings.scheme.constant_compute`).

What the counts mean here. ``crops`` = the tiles the encoder runs on (``pixel_values``'
tile axis: ``max_image_tiles``, padding included); ``image_tokens`` =
``sequence_tokens`` = 1, the ``<|image|>`` token in ``input_ids`` (counted there), the
only token the image adds to the text; the cross-attention length is
`tilings.mllama.PaddedCanvas.cross_attention_tokens`. The tiling itself is read from
the processor's ``aspect_ratio_ids`` and checked against its ``aspect_ratio_mask``.

The registered models build the model from a config with random weights (latency
depends on shapes, not weights): a tiny one for CPU tests and the 11B architecture for
GPU runs without downloads. A hub id or local path loads real weights. Where no
tokenizer can be loaded, the input builder runs the image processor and lays out
``input_ids`` itself (the first prompt id standing for ``<|begin_of_text|>``, then
``<|image|>``, then the prompt), and builds the cross-attention mask with
transformers' own ``get_cross_attention_token_mask`` and
``convert_sparse_cross_attention_mask_to_dense``, as ``MllamaProcessor`` does.

Module map. ``vision`` = ``model.vision_model`` (``MllamaVisionModel``: patch embedding,
tile and position embeddings, the local ``transformer`` and the gated
``global_transformer``, all tiles at once); ``projector`` =
``model.multi_modal_projector`` (one Linear, vision_output_dim -> text width);
``llm_prefill`` = ``model.language_model.layers`` from the first block to the last, the
cross-attention layers included (they sit between self-attention layers); ``lm_head``.
The cross-attention mask preparation in ``MllamaModel.forward`` runs between the
projector and the first block, in no stage (it is cheap). ``vision_blocks`` are the
local transformer's layers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image
from torch import nn

from tilesweep.errors import GeometryMismatchError, UsageError
from tilings import PROFILES, Scheme
from tilings.mllama import PaddedCanvas
from workers.arch import Architecture, ModelSpec, Pretrained
from workers.checkpoints import config_value, load_processors
from workers.inputs import FORCED_TOKEN_IDS, PROMPT, PROMPT_IDS, Prepared
from workers.modulemap import ModuleMap

logger = logging.getLogger(__name__)

DEFAULT_PROFILE = "mllama"
TINY_PROFILE = "mllama-tiny"
# The tiny model's ids: as released, <|image|> is the first of the 8 embedding rows past the vocabulary
# (128256 = vocab_size); bos/eos/pad inside the vocabulary, above every id of PROMPT_IDS and FORCED_TOKEN_IDS.
TINY_VOCAB = 1024
TINY_IMAGE_TOKEN_ID = TINY_VOCAB
_TINY_TEXT_IDS = {"bos_token_id": 1000, "eos_token_id": 1001, "pad_token_id": 1002}


# ----------------------------------------------------------------------------------------------
# Configs


def _tiny_config() -> Any:
    """Mllama at toy size: the released 560 px tiles and 4 tiles, 56 px patches (10x10 per tile plus CLS:
    at the released 14 px the encoder attends over 4 x 1608 positions, seconds per forward on a CPU), a 2+1
    layer vision encoder of width 32, and a 3-layer text tower of width 64 whose middle layer is a
    cross-attention layer (the released tower has one every fifth layer, from layer 3)."""
    from transformers import MllamaConfig

    return MllamaConfig(
        vision_config={
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_global_layers": 1,
            "attention_heads": 2, "image_size": 560, "patch_size": 56, "max_num_tiles": 4,
            "intermediate_layers_indices": [1], "vision_output_dim": 64,  # 32 x (1 + one intermediate layer)
        },
        text_config={
            "vocab_size": TINY_VOCAB, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3,
            "num_attention_heads": 4, "num_key_value_heads": 2, "cross_attention_layers": [1],
            "max_position_embeddings": 2048, "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0},
            "tie_word_embeddings": False, **_TINY_TEXT_IDS,
        },
        image_token_index=TINY_IMAGE_TOKEN_ID,
    )


def _llama32_11b_vision_config() -> Any:
    """The numbers of meta-llama/Llama-3.2-11B-Vision's config.json (the -Instruct checkpoint has the same).

    Vision: 560 px tiles of 14 px patches (40x40 + CLS = 1601 positions a tile), at most 4 tiles,
    width 1280, MLP 5120, 16 heads, 32 local + 8 gated global layers, intermediate layers
    [3, 7, 15, 23, 30] concatenated with the last: vision_output_dim 7680 = 1280 x 6, the 8 default
    aspect ratios. Text: Llama 3.1 8B with 8 cross-attention layers inserted (40 layers, cross-attention
    at 3, 8, ..., 38), width 4096, MLP 14336, 32 heads, 8 KV heads, vocabulary 128256 (+8 embedding
    rows; <|image|> = 128256), llama3 RoPE (theta 500000, factor 8, low/high freq factors 1/4, original
    8192 positions), rms_norm_eps 1e-5, untied head. Where the numbers come from: transformers'
    MllamaVisionConfig/MllamaTextConfig defaults, documented as this checkpoint's, agree with every
    number but the tile (their image_size is 448); the checkpoint's config.json and
    preprocessor_config.json (size 560, max_image_tiles 4), as public code reproduces them, give 560.
    10.67e9 parameters (the model card says 10.6B).
    """
    from transformers import MllamaConfig

    return MllamaConfig(
        vision_config={
            "hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32, "num_global_layers": 8,
            "attention_heads": 16, "image_size": 560, "patch_size": 14, "max_num_tiles": 4, "norm_eps": 1e-5,
            "intermediate_layers_indices": [3, 7, 15, 23, 30], "vision_output_dim": 7680, "hidden_act": "gelu",
            "supported_aspect_ratios": [[1, 1], [1, 2], [1, 3], [1, 4], [2, 1], [2, 2], [3, 1], [4, 1]],
        },
        text_config={
            "vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 40,
            "num_attention_heads": 32, "num_key_value_heads": 8,
            "cross_attention_layers": [3, 8, 13, 18, 23, 28, 33, 38], "max_position_embeddings": 131072,
            "rms_norm_eps": 1e-5, "hidden_act": "silu", "tie_word_embeddings": False,
            "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                "original_max_position_embeddings": 8192},
            "bos_token_id": 128000, "eos_token_id": 128001, "pad_token_id": 128004,
        },
        image_token_index=128256,
    )


# ----------------------------------------------------------------------------------------------
# Module map

MODULE_MAP = ModuleMap(
    vision=("model.vision_model",),
    projector=("model.multi_modal_projector",),
    llm_blocks="model.language_model.layers",
    lm_head=("lm_head",),
    vision_blocks="model.vision_model.transformer.layers",
    required=("vision", "projector", "llm_blocks", "lm_head", "vision_blocks"),
)


# ----------------------------------------------------------------------------------------------
# Does a scheme fit a model?


@dataclass(frozen=True, slots=True)
class TowerGeometry:
    """What a model's vision tower takes, from its config (None: not stated)."""

    tile_size: int | None
    patch_size: int | None
    max_num_tiles: int | None
    aspect_ratios: int | None  # len(supported_aspect_ratios): the tile-embedding rows the processor's ids index

    @property
    def positions_per_tile(self) -> int | None:
        """Patches plus the CLS token: ``MllamaVisionModel.num_patches``."""
        if not self.tile_size or not self.patch_size:
            return None
        return (self.tile_size // self.patch_size) ** 2 + 1


def tower_geometry(config: Any) -> TowerGeometry:
    """The tile geometry of a config object, a model or a raw ``config.json`` dict (MllamaVisionConfig defaults
    for what a raw dict leaves out)."""
    vision = config_value(config, "vision_config", default={})
    ratios = config_value(vision, "supported_aspect_ratios")
    return TowerGeometry(
        tile_size=config_value(vision, "image_size", default=448),
        patch_size=config_value(vision, "patch_size", default=14),
        max_num_tiles=config_value(vision, "max_num_tiles", default=4),
        aspect_ratios=len(ratios) if ratios is not None else 8,
    )


def _presets() -> str:
    return ", ".join(name for name, scheme in PROFILES.items() if isinstance(scheme, PaddedCanvas))


def check_scheme_fits(config: Any, scheme: Scheme) -> None:
    """The processor's tiles must be the tower's: tile and patch size, the tile count it pads to, and aspect-ratio
    ids the tower has embeddings for.

    Args:
        config: the model's config object, a model (its ``config`` is read), or a raw ``config.json`` dict.

    Raises:
        UsageError: a scheme of another kind, or a tile, patch, tile count or aspect-ratio list the model cannot take.
    """
    if not isinstance(scheme, PaddedCanvas):
        raise UsageError(f"profile {getattr(scheme, 'name', scheme)!r} is not a padded-canvas scheme; Llama 3.2 "
                         f"Vision models take {_presets()} or a Llama 3.2 Vision preprocessor_config.json")
    tower = tower_geometry(config)
    if tower.tile_size != scheme.tile_size:
        raise UsageError(f"profile {scheme.name!r} uses {scheme.tile_size} px tiles but the model's vision tower takes "
                         f"{tower.tile_size}x{tower.tile_size}; pick a profile with tile_size {tower.tile_size}")
    if tower.patch_size != scheme.patch_size:
        raise UsageError(f"profile {scheme.name!r} uses patch_size {scheme.patch_size} but the model's vision tower "
                         f"takes {tower.patch_size}; pick a profile with patch_size {tower.patch_size}")
    if tower.max_num_tiles != scheme.max_image_tiles:
        raise UsageError(
            f"profile {scheme.name!r} pads images to max_image_tiles {scheme.max_image_tiles} but the model's vision "
            f"tower embeds max_num_tiles {tower.max_num_tiles}; pick a profile with max_image_tiles "
            f"{tower.max_num_tiles}")
    if tower.aspect_ratios is not None and tower.aspect_ratios < len(scheme.candidates()):
        raise UsageError(
            f"profile {scheme.name!r} has {len(scheme.candidates())} canvases but the model embeds only "
            f"{tower.aspect_ratios} supported_aspect_ratios; pick a profile with fewer tiles")


def mllama_image_processor(scheme: PaddedCanvas) -> Any:
    """The model's own image processor class, configured to the scheme."""
    from transformers import MllamaImageProcessor

    return MllamaImageProcessor(**scheme.processor_kwargs())


# ----------------------------------------------------------------------------------------------
# Input builder


def _grid(out: Any, max_image_tiles: int) -> tuple[int, int]:
    """(rows, cols) from the processor's ``aspect_ratio_ids`` (its own list, 1-based), checked against its
    ``aspect_ratio_mask``, its ``num_tiles`` (when reported) and the tile axis.

    Raises:
        GeometryMismatchError: the processor's outputs disagree with each other.
    """
    from transformers.models.mllama.image_processing_mllama import get_all_supported_aspect_ratios

    rows, cols = get_all_supported_aspect_ratios(max_image_tiles)[int(out["aspect_ratio_ids"][0, 0]) - 1]
    filled = int(out["aspect_ratio_mask"][0, 0].sum())
    reported = [int(n) for n in out["num_tiles"][0]] if "num_tiles" in out else [filled]
    if filled != rows * cols or reported != [rows * cols] or out["pixel_values"].shape[2] != max_image_tiles:
        raise GeometryMismatchError(
            f"the image processor's aspect ratio {rows}x{cols}, its mask ({filled} tiles), its num_tiles {reported} "
            f"and its {out['pixel_values'].shape[2]} padded tiles (max_image_tiles {max_image_tiles}) disagree; "
            "its version differs from the one this tool knows")
    return rows, cols


@dataclass(slots=True)
class MllamaInputs:
    """`MllamaImageProcessor` plus the token layout, or the full `MllamaProcessor` when a tokenizer loads.

    Forward kwargs: ``input_ids``, ``pixel_values`` ``(1, 1, max_image_tiles, 3, T, T)``,
    ``aspect_ratio_ids``, ``aspect_ratio_mask`` and ``cross_attention_mask``
    ``(1, seq, 1, max_image_tiles)`` (the tokens from ``<|image|>`` on attend to the image's
    tiles). Decode steps pass the last row of the mask, as generation does; it is kept
    from the last `process` call (the host processes the image at the start of every
    repeat, so it is the image being decoded).
    """

    image_processor: Any
    image_token_id: int
    processor: Any = None  # an MllamaProcessor with a tokenizer, or None
    prompt_ids: tuple[int, ...] = PROMPT_IDS
    decode_ids: tuple[int, ...] = FORCED_TOKEN_IDS
    _decode_mask: torch.Tensor | None = field(default=None, repr=False)

    @property
    def max_image_tiles(self) -> int:
        return int(self.image_processor.max_image_tiles)

    def process(self, image: Image.Image) -> Prepared:
        if self.processor is not None:
            return self._with_processor(image)
        from transformers.models.mllama.processing_mllama import (
            convert_sparse_cross_attention_mask_to_dense,
            get_cross_attention_token_mask,
        )

        out = self.image_processor(images=[[image]], return_tensors="pt")
        ids = [*self.prompt_ids[:1], self.image_token_id, *self.prompt_ids[1:]]
        mask = convert_sparse_cross_attention_mask_to_dense(
            [get_cross_attention_token_mask(ids, self.image_token_id)], num_tiles=out["num_tiles"],
            max_num_tiles=self.max_image_tiles, length=len(ids))
        out["cross_attention_mask"] = torch.from_numpy(mask)
        return self._prepared(out, torch.tensor([ids], dtype=torch.long), "image-processor+layout")

    def _with_processor(self, image: Image.Image) -> Prepared:
        proc = self.processor
        text = f"{proc.image_token}{PROMPT}"  # a base checkpoint: MllamaProcessor puts <|begin_of_text|> after it
        if getattr(proc, "chat_template", None):
            conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}]
            text = proc.apply_chat_template(conversation, add_generation_prompt=True)
        out = proc(images=[[image]], text=text, return_tensors="pt")
        return self._prepared(out, out["input_ids"], "processor")

    def _prepared(self, out: Any, input_ids: torch.Tensor, source: str) -> Prepared:
        grid = _grid(out, self.max_image_tiles)
        vision = {k: out[k] for k in ("pixel_values", "aspect_ratio_ids", "aspect_ratio_mask")}
        mask = torch.as_tensor(out["cross_attention_mask"])
        self._decode_mask = mask[:, -1:]
        placeholders = int((input_ids[0] == self.image_token_id).sum())
        return Prepared(
            forward={**vision, "input_ids": input_ids, "cross_attention_mask": mask},
            vision=vision,
            crops=int(out["pixel_values"].shape[2]),  # every tile the encoder runs on, padding included
            image_tokens=placeholders,  # <|image|>: the features are cross-attention states, not text tokens
            sequence_tokens=placeholders,
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
        """The vision model and the projector, as `MllamaModel.forward` runs them."""
        inner = model.model
        states = inner.vision_model(**vision).last_hidden_state
        return inner.multi_modal_projector(states).reshape(-1, states.shape[-2], inner.hidden_size)

    def decode_step(self, model: nn.Module, output: Any, step: int, prefix_len: int) -> Any:
        """One forced token through the cache: the cross-attention layers read the cached vision states, the mask
        row is the prompt's last (generation's ``_update_model_kwargs_for_generation``)."""
        device = output.logits.device
        token = torch.tensor([[self.decode_ids[step % len(self.decode_ids)]]], device=device)
        mask = self._decode_mask.to(device) if self._decode_mask is not None else None
        return model(input_ids=token, cache=output.cache, use_cache=True, cross_attention_mask=mask,
                     logits_to_keep=1)


def inputs_for(config: Any, scheme: PaddedCanvas, *, image_processor: Any = None,
               processor: Any = None) -> MllamaInputs:
    """The input builder of a model with `config`, its image processor configured by `scheme` unless given."""
    image_processor = image_processor if image_processor is not None else mllama_image_processor(scheme)
    image_token = processor.image_token_id if processor is not None else int(config.image_token_id)
    return MllamaInputs(image_processor=image_processor, image_token_id=image_token, processor=processor)


def _inputs(model: nn.Module, scheme: PaddedCanvas) -> MllamaInputs:
    return inputs_for(model.config, scheme)


# ----------------------------------------------------------------------------------------------
# Checkpoints


def _processors(source: str, revision: str | None, image_token_id: int) -> tuple[Any, Any]:
    """(full processor or None, image processor or None): the full one counts only when its tokenizer spells
    ``<|image|>`` as the model's ``image_token_index``."""
    from transformers import MllamaImageProcessor

    def fits(processor: Any) -> bool:
        try:
            return processor.tokenizer is not None and int(processor.image_token_id) == image_token_id
        except (AttributeError, TypeError, ValueError):
            return False

    return load_processors(source, revision, MllamaImageProcessor, fits)


def scheme_from_checkpoint(config: Any, image_processor: Any) -> PaddedCanvas:
    """The checkpoint's scheme: its image processor's tile and tile count, the model's patch size."""
    tower = tower_geometry(config)
    overrides = {"patch_size": tower.patch_size} if tower.patch_size is not None else {}
    return PaddedCanvas.from_preprocessor_config(image_processor.to_dict(), **overrides)


def _load(source: str, *, revision: str | None, device: torch.device, dtype: torch.dtype,
          model_kwargs: dict[str, Any], scheme: Scheme | None) -> Pretrained:
    from transformers import MllamaForConditionalGeneration

    model = MllamaForConditionalGeneration.from_pretrained(source, revision=revision, dtype=dtype, **model_kwargs)
    model = model.to(device).eval()
    processor, image_processor = _processors(source, revision, int(model.config.image_token_id))
    if scheme is None:
        if image_processor is not None:
            scheme = scheme_from_checkpoint(model.config, image_processor)
        else:
            logger.warning("%s has no preprocessor config; using the %r tiling profile", source, DEFAULT_PROFILE)
            scheme = PROFILES[DEFAULT_PROFILE]
    check_scheme_fits(model.config, scheme)
    inputs = inputs_for(model.config, scheme, image_processor=image_processor, processor=processor)
    return Pretrained(model=model, scheme=scheme, inputs=inputs)


ARCHITECTURES: dict[str, Architecture] = {
    "mllama": Architecture(
        name="mllama", title="Llama 3.2 Vision", model_class="MllamaForConditionalGeneration", model_types=("mllama",),
        module_map=MODULE_MAP, default_profile=DEFAULT_PROFILE, inputs=_inputs, check_fits=check_scheme_fits,
        load_pretrained=_load,
    ),
}

MODELS: dict[str, ModelSpec] = {
    "tiny-mllama": ModelSpec(
        name="tiny-mllama",
        description="Llama 3.2 Vision architecture at toy size (560 px tiles of 56 px patches, 32-wide 2+1 layer "
                    "vision encoder, 64-wide 3-layer text tower with one cross-attention layer), random weights; "
                    "~15 ms per forward on one CPU thread, the same at every tiling",
        architecture="mllama", profile=TINY_PROFILE, config=_tiny_config,
    ),
    "llama3.2-11b-vision-arch": ModelSpec(
        name="llama3.2-11b-vision-arch",
        description="Llama-3.2-11B-Vision shapes (meta-llama/Llama-3.2-11B-Vision config.json: 560 px tiles, "
                    "32+8-layer ViT-H, Llama 3.1 8B + 8 cross-attention layers), random weights, no download",
        architecture="mllama", profile=DEFAULT_PROFILE, weights="meta", config=_llama32_11b_vision_config,
    ),
}
