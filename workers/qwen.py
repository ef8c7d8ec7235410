"""The Qwen-VL family: Qwen2.5-VL and Qwen3-VL (native in transformers), pixel-budget image processing.

Both resize the whole image to a pixel budget (``smart_resize``, no crops) and feed
``(H/F)*(W/F)`` merged tokens (F = patch * merge: 28 for Qwen2.5-VL, 32 for
Qwen3-VL) into the text between ``<|vision_start|>`` and ``<|vision_end|>``; the
`tilings` target of a budget scheme is that merged-token grid (rows x cols).

The registered models build the architectures from a config with random weights
(latency depends on shapes, not weights): tiny ones for CPU tests, full-size ones
for GPU runs without downloads. A hub id or local path loads real weights. Where no
tokenizer can be loaded (random-weight architectures, offline), the input builder
runs the model's own image processor (`transformers.Qwen2VLImageProcessor`) and
lays out the image tokens itself, from the grid the processor reports.

Module map. The vision tower (``model.visual``) holds its projector as a child
(``merger``; Qwen3-VL also its three DeepStack mergers, called between vision
blocks), so for this family ``t_vision_ms`` *includes* ``t_projector_ms``: the
projector span nests inside the vision span (see `MAPS`).
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
from tilings.budget import PRESETS as BUDGET_PRESETS
from tilings.budget import PixelBudget
from workers.arch import Architecture, ModelSpec, Pretrained
from workers.checkpoints import config_value, load_processors
from workers.inputs import FORCED_TOKEN_IDS, PROMPT, PROMPT_IDS, Prepared
from workers.modulemap import ModuleMap

logger = logging.getLogger(__name__)

# Special ids of the tiny models: inside their 1024-token vocabulary, above every id of
# PROMPT_IDS and FORCED_TOKEN_IDS, in the released order (151652 vision_start, 151653
# vision_end, 151655 image_pad, 151656 video_pad; 151643/151645 the text bos/eos).
TINY_VOCAB = 1024
TINY_IDS = {"vision_start_token_id": 1000, "vision_end_token_id": 1001, "image_token_id": 1003,
            "video_token_id": 1004}
_TINY_TEXT_IDS = {"bos_token_id": 1005, "eos_token_id": 1006}


# ----------------------------------------------------------------------------------------------
# Configs


def _tiny_qwen25_config() -> Any:
    """Qwen2.5-VL at toy size: a 2-block windowed ViT (one window block, one full-attention block,
    as the released 32-block tower alternates them) with the released patch 14, merge 2, window 112."""
    from transformers import Qwen2_5_VLConfig

    return Qwen2_5_VLConfig(
        vision_config={
            "depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 64,
            "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 112,
            "fullatt_block_indexes": [1], "tokens_per_second": 2, "hidden_act": "silu",
        },
        text_config={
            "vocab_size": TINY_VOCAB, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 8192,
            # head_dim 16: the M-RoPE sections (t, h, w) must add up to head_dim / 2.
            "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [2, 3, 3]},
            **_TINY_TEXT_IDS,
        },
        **TINY_IDS,
    )


def _tiny_qwen3_config() -> Any:
    """Qwen3-VL at toy size: a 3-block ViT whose every block feeds a DeepStack merger (the released
    one taps 3 of 27), 3 text layers (DeepStack adds one feature set after each of the first 3)."""
    from transformers import Qwen3VLConfig

    return Qwen3VLConfig(
        vision_config={
            "depth": 3, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 64,
            "patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2, "num_position_embeddings": 2304,
            "deepstack_visual_indexes": [0, 1, 2], "hidden_act": "gelu_pytorch_tanh",
        },
        text_config={
            "vocab_size": TINY_VOCAB, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 8192,
            "rope_parameters": {"rope_type": "default", "rope_theta": 5_000_000.0, "mrope_section": [4, 2, 2],
                                "mrope_interleaved": True},
        },
        **TINY_IDS,
    )


def _qwen25_vl_7b_config() -> Any:
    """The numbers of Qwen/Qwen2.5-VL-7B-Instruct's config.json (8.29B parameters)."""
    from transformers import Qwen2_5_VLConfig

    return Qwen2_5_VLConfig(
        vision_config={
            "depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "out_hidden_size": 3584,
            "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 112,
            "fullatt_block_indexes": [7, 15, 23, 31], "tokens_per_second": 2, "hidden_act": "silu", "in_channels": 3,
        },
        text_config={
            "vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
            "num_attention_heads": 28, "num_key_value_heads": 4, "max_position_embeddings": 128000,
            "rms_norm_eps": 1e-6, "use_sliding_window": False, "sliding_window": 32768, "max_window_layers": 28,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [16, 24, 24]},
            "bos_token_id": 151643, "eos_token_id": 151645,
        },
        image_token_id=151655, video_token_id=151656, vision_start_token_id=151652, vision_end_token_id=151653,
        tie_word_embeddings=False,
    )


def _qwen3_vl_8b_config() -> Any:
    """The numbers of Qwen/Qwen3-VL-8B-Instruct's config.json (8.77B parameters)."""
    from transformers import Qwen3VLConfig

    return Qwen3VLConfig(
        vision_config={
            "depth": 27, "hidden_size": 1152, "intermediate_size": 4304, "num_heads": 16, "out_hidden_size": 4096,
            "patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2, "num_position_embeddings": 2304,
            "deepstack_visual_indexes": [8, 16, 24], "hidden_act": "gelu_pytorch_tanh", "in_channels": 3,
        },
        text_config={
            "vocab_size": 151936, "hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 36,
            "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "max_position_embeddings": 262144,
            "rms_norm_eps": 1e-6, "attention_bias": False,
            "rope_parameters": {"rope_type": "default", "rope_theta": 5_000_000.0, "mrope_section": [24, 20, 20],
                                "mrope_interleaved": True},
        },
        image_token_id=151655, video_token_id=151656, vision_start_token_id=151652, vision_end_token_id=151653,
        tie_word_embeddings=False,
    )


# ----------------------------------------------------------------------------------------------
# Module maps

MAPS: dict[str, ModuleMap] = {
    # transformers' Qwen3VLForConditionalGeneration. The projector is the final merger plus the
    # DeepStack mergers (each the same LayerNorm+MLP on the merged features of an intermediate
    # block; every released dense Qwen3-VL has three); all sit inside `model.visual`, so the
    # projector span nests inside the vision span. Listed before Qwen2.5-VL: its map (required
    # DeepStack paths) does not fit a Qwen2.5-VL model, while Qwen2.5-VL's would fit a Qwen3-VL one.
    "qwen3-vl": ModuleMap(
        vision=("model.visual",),
        projector=("model.visual.merger", "model.visual.deepstack_merger_list.0",
                   "model.visual.deepstack_merger_list.1", "model.visual.deepstack_merger_list.2"),
        llm_blocks="model.language_model.layers",
        lm_head=("lm_head",),
        vision_blocks="model.visual.blocks",
        projector_within_vision=True,
        required=("vision", "projector", "llm_blocks", "lm_head"),
    ),
    # transformers' Qwen2_5_VLForConditionalGeneration: `model.visual.merger` (RMSNorm + 2-layer MLP
    # on 2x2 merged patches) is the projector, nested inside the vision tower's span.
    "qwen2.5-vl": ModuleMap(
        vision=("model.visual",),
        projector=("model.visual.merger",),
        llm_blocks="model.language_model.layers",
        lm_head=("lm_head",),
        vision_blocks="model.visual.blocks",
        projector_within_vision=True,
        required=("vision", "projector", "llm_blocks", "lm_head"),
    ),
}


# ----------------------------------------------------------------------------------------------
# Schemes: which pixel-budget settings a model takes


def check_scheme_fits(config: Any, scheme: Scheme) -> None:
    """A Qwen-VL vision tower embeds patches of one size and merges a fixed square of them: the scheme's must match.

    Args:
        config: the model's config object, a model (its ``config`` is read), or a raw ``config.json`` dict.

    Raises:
        UsageError: a scheme that is not a `PixelBudget`, or a patch, merge or temporal patch size the
            model does not take.
    """
    if not isinstance(scheme, PixelBudget):
        raise UsageError(
            f"profile {getattr(scheme, 'name', scheme)!r} is not a Qwen pixel-budget scheme; Qwen-VL models take "
            f"{', '.join(BUDGET_PRESETS)} or a Qwen preprocessor_config.json"
        )
    vision = config_value(config, "vision_config")
    pairs = (("patch_size", "patch_size"), ("merge_size", "spatial_merge_size"),
             ("temporal_patch_size", "temporal_patch_size"))
    for scheme_key, model_key in pairs:
        want, have = getattr(scheme, scheme_key), config_value(vision, model_key)
        if have is None or want == have:  # unknown on the model's side: nothing to compare
            continue
        fitting = [n for n, p in BUDGET_PRESETS.items() if getattr(p, scheme_key) == have]
        raise UsageError(
            f"profile {scheme.name!r} uses {scheme_key} {want} but the model's vision tower takes "
            f"{model_key} {have}; pick a profile with {scheme_key} {have} "
            f"(e.g. {', '.join(fitting) or 'one built from its preprocessor_config.json'})"
        )


def qwen_image_processor(scheme: Scheme) -> Any:
    """The model's own image processor class, configured to the scheme."""
    from transformers import Qwen2VLImageProcessor

    return Qwen2VLImageProcessor(**scheme.processor_kwargs())


# ----------------------------------------------------------------------------------------------
# Input builder


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenLayout:
    """The special ids of one model: enough to lay out an image span from a token count."""

    vision_start: int
    vision_end: int
    image: int

    def image_span(self, image_tokens: int) -> list[int]:
        """``<|vision_start|>`` + ``<|image_pad|>`` x N + ``<|vision_end|>``, as the chat template writes an
        image and the processor's ``replace_image_token`` expands its one placeholder into N."""
        return [self.vision_start] + [self.image] * image_tokens + [self.vision_end]

    @property
    def special(self) -> tuple[int, int, int]:
        return (self.vision_start, self.image, self.vision_end)


def layout_from_config(config: Any) -> TokenLayout:
    return TokenLayout(vision_start=config.vision_start_token_id, vision_end=config.vision_end_token_id,
                       image=config.image_token_id)


@dataclass(slots=True)
class QwenInputs:
    """Qwen2.5-VL / Qwen3-VL: `Qwen2VLImageProcessor`, plus the full processor when a tokenizer loads.

    Forward kwargs: ``input_ids``, ``pixel_values`` (``(t*h*w, 3*T*P*P)`` flattened patches),
    ``image_grid_thw`` and ``mm_token_type_ids`` (1 on the ``<|image_pad|>`` tokens, 0 elsewhere,
    as the processor marks them: the model builds its 3-D M-RoPE positions from it, and
    Qwen3-VL raises without it). No attention mask (one unpadded sequence) and no position ids
    (the model derives them, and caches the M-RoPE offset that decode steps reuse).
    """

    image_processor: Any
    layout: TokenLayout
    processor: Any = None  # a Qwen2_5_VLProcessor / Qwen3VLProcessor with a tokenizer, or None
    prompt_ids: tuple[int, ...] = PROMPT_IDS
    decode_ids: tuple[int, ...] = FORCED_TOKEN_IDS
    _merge: int = field(default=0)

    def __post_init__(self) -> None:
        self._merge = int(self.image_processor.merge_size)

    def _counts(self, out: Any, input_ids: torch.Tensor) -> tuple[tuple[int, int], int, int]:
        """(merged token grid, image tokens, sequence tokens), counted from the processor's output and the ids.

        Raises:
            GeometryMismatchError: the flattened patches, the grid and the placeholder ids disagree.
        """
        grid_thw = out["image_grid_thw"]
        if grid_thw.shape[0] != 1:
            raise GeometryMismatchError(f"the processor returned {grid_thw.shape[0]} grids for one image")
        t, h, w = (int(v) for v in grid_thw[0].tolist())
        patches = int(out["pixel_values"].shape[0])
        if patches != t * h * w:
            raise GeometryMismatchError(
                f"the processor returned {patches} patches for grid (t, h, w) = {(t, h, w)}; the image processor's "
                "version differs from the one this tool knows"
            )
        ids = input_ids[0]
        image_tokens = int((ids == self.layout.image).sum())
        if image_tokens * self._merge**2 != patches:
            raise GeometryMismatchError(
                f"input_ids hold {image_tokens} image tokens but the processor's {patches} patches merge "
                f"{self._merge}x{self._merge} into {patches // self._merge**2}"
            )
        sequence_tokens = int(torch.isin(ids, torch.tensor(self.layout.special)).sum())
        return (h // self._merge, w // self._merge), image_tokens, sequence_tokens

    def process(self, image: Image.Image) -> Prepared:
        if self.processor is not None:
            return self._with_processor(image)
        out = self.image_processor(images=[image], return_tensors="pt")
        n = int(out["image_grid_thw"].prod(-1).sum()) // self._merge**2  # replace_image_token's count
        span = self.layout.image_span(n)
        head, tail = list(self.prompt_ids[:1]), list(self.prompt_ids[1:])
        input_ids = torch.tensor([head + span + tail], dtype=torch.long)
        mm_token_type_ids = (input_ids == self.layout.image).long()
        return self._prepared(out, input_ids, mm_token_type_ids, source="image-processor+layout")

    def _with_processor(self, image: Image.Image) -> Prepared:
        proc = self.processor
        tok = proc.tokenizer
        start, end = tok.convert_ids_to_tokens([self.layout.vision_start, self.layout.vision_end])
        out = proc(images=[image], text=f"{start}{proc.image_token}{end}{PROMPT}", return_tensors="pt")
        if "mm_token_type_ids" in out:  # the processor's own marking
            mm_token_type_ids = out["mm_token_type_ids"]
        else:
            mm_token_type_ids = (out["input_ids"] == self.layout.image).long()
        return self._prepared(out, out["input_ids"], mm_token_type_ids, source="processor")

    def _prepared(self, out: Any, input_ids: torch.Tensor, mm_token_type_ids: torch.Tensor, *, source: str) -> Prepared:
        grid, image_tokens, sequence_tokens = self._counts(out, input_ids)
        vision = {"pixel_values": out["pixel_values"], "image_grid_thw": out["image_grid_thw"]}
        return Prepared(
            forward={**vision, "input_ids": input_ids, "mm_token_type_ids": mm_token_type_ids},
            vision=vision,
            crops=int(out["image_grid_thw"].shape[0]),  # images the encoder runs on: one, no crops
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
        """The vision tower with its mergers (and Qwen3-VL's DeepStack mergers), as the forward runs them."""
        return model.model.get_image_features(vision["pixel_values"], vision["image_grid_thw"])

    def decode_step(self, model: torch.nn.Module, output: Any, step: int, prefix_len: int) -> Any:
        """One forced token through the cache. Its M-RoPE position is the cache length plus the offset
        (``rope_deltas``) the model stored at the prefill, as generation does; no image kwargs, so the
        model takes that path."""
        token = torch.tensor([[self.decode_ids[step % len(self.decode_ids)]]], device=output.logits.device)
        return model(input_ids=token, cache=output.cache, use_cache=True, logits_to_keep=1)


# ----------------------------------------------------------------------------------------------
# Loading


def _inputs(model: nn.Module, scheme: Scheme) -> QwenInputs:
    return QwenInputs(image_processor=qwen_image_processor(scheme), layout=layout_from_config(model.config))


def _processors(source: str, revision: str | None, layout: TokenLayout) -> tuple[Any, Any]:
    """(full processor or None, image processor or None): the full one only if it spells the model's ids."""
    from transformers import Qwen2VLImageProcessor

    return load_processors(source, revision, Qwen2VLImageProcessor, lambda p: _tokenizer_fits(p, layout))


def _tokenizer_fits(processor: Any, layout: TokenLayout) -> bool:
    """Whether the processor's tokenizer maps the vision start, image and vision end tokens to the model's ids."""
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is None or getattr(processor, "image_token_id", None) != layout.image:
        return False
    try:
        names = tokenizer.convert_ids_to_tokens(list(layout.special))
        return all(names) and list(tokenizer.convert_tokens_to_ids(names)) == list(layout.special)
    except (IndexError, KeyError, TypeError, ValueError):
        return False


def _scheme_from_processor(image_processor: Any, processor_class: str) -> PixelBudget:
    """The checkpoint's scheme, read from its image processor's settings (as the processor resolved them).

    Qwen2-VL and Qwen2.5-VL checkpoints ship the same numbers; the processor class, which the
    architecture knows, names the preset they equal.
    """
    return PixelBudget.from_preprocessor_config({**image_processor.to_dict(), "processor_class": processor_class})


def _loader(model_class: str, processor_class: str, default_profile: str) -> Any:
    def load(source: str, *, revision: str | None, device: torch.device, dtype: torch.dtype,
             model_kwargs: dict[str, Any], scheme: Scheme | None) -> Pretrained:
        import transformers

        cls = getattr(transformers, model_class)
        model = cls.from_pretrained(source, revision=revision, dtype=dtype, **model_kwargs)
        model = model.to(device).eval()
        layout = layout_from_config(model.config)
        processor, image_processor = _processors(source, revision, layout)
        if scheme is None:
            if image_processor is not None:
                scheme = _scheme_from_processor(image_processor, processor_class)
            else:
                logger.warning("%s has no preprocessor config; using the %r tiling profile", source, default_profile)
                scheme = PROFILES[default_profile]
        check_scheme_fits(model.config, scheme)
        inputs = QwenInputs(
            image_processor=image_processor if image_processor is not None else qwen_image_processor(scheme),
            layout=layout,
            processor=processor,
        )
        return Pretrained(model=model, scheme=scheme, inputs=inputs)

    return load


ARCHITECTURES: dict[str, Architecture] = {
    # Qwen3-VL first: detection tries maps in this order (see MAPS).
    "qwen3-vl": Architecture(
        name="qwen3-vl", title="Qwen3-VL", model_class="Qwen3VLForConditionalGeneration", model_types=("qwen3_vl",),
        module_map=MAPS["qwen3-vl"], default_profile="qwen3-vl", inputs=_inputs, check_fits=check_scheme_fits,
        load_pretrained=_loader("Qwen3VLForConditionalGeneration", "Qwen3VLProcessor", "qwen3-vl"),
    ),
    "qwen2.5-vl": Architecture(
        name="qwen2.5-vl", title="Qwen2.5-VL", model_class="Qwen2_5_VLForConditionalGeneration",
        model_types=("qwen2_5_vl",), module_map=MAPS["qwen2.5-vl"], default_profile="qwen2.5-vl", inputs=_inputs,
        check_fits=check_scheme_fits,
        load_pretrained=_loader("Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor", "qwen2.5-vl"),
    ),
}

MODELS: dict[str, ModelSpec] = {
    "tiny-qwen2.5-vl": ModelSpec(
        name="tiny-qwen2.5-vl",
        description="Qwen2.5-VL architecture at toy size (64 hidden, patch 14, windowed ViT), random weights; "
                    "tens of ms per forward on a CPU",
        architecture="qwen2.5-vl", profile="qwen2.5-vl", config=_tiny_qwen25_config,
    ),
    "tiny-qwen3-vl": ModelSpec(
        name="tiny-qwen3-vl",
        description="Qwen3-VL architecture at toy size (64 hidden, patch 16, DeepStack), random weights; "
                    "tens of ms per forward on a CPU",
        architecture="qwen3-vl", profile="qwen3-vl", config=_tiny_qwen3_config,
    ),
    "qwen2.5-vl-7b-arch": ModelSpec(
        name="qwen2.5-vl-7b-arch",
        description="Qwen2.5-VL-7B-Instruct shapes (Qwen/Qwen2.5-VL-7B-Instruct config.json), random weights, "
                    "no download",
        architecture="qwen2.5-vl", profile="qwen2.5-vl", weights="meta", config=_qwen25_vl_7b_config,
    ),
    "qwen3-vl-8b-arch": ModelSpec(
        name="qwen3-vl-8b-arch",
        description="Qwen3-VL-8B-Instruct shapes (Qwen/Qwen3-VL-8B-Instruct config.json), random weights, "
                    "no download",
        architecture="qwen3-vl", profile="qwen3-vl", weights="meta", config=_qwen3_vl_8b_config,
    ),
}
