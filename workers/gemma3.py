"""Gemma 3: ``Gemma3ForConditionalGeneration`` (SigLIP tower, pooling projector, Gemma 3 text model).

Gemma 3's processor (``Gemma3Processor`` over ``Gemma3ImageProcessor``) sends the whole
image at 896 x 896 and, with pan and scan on, 2 to 4 crops along the longer side of an
elongated image, each resized to 896 x 896 (`tilings.panscan`; its scheme ``gemma3`` is
this family's). ``Gemma3Processor`` calls its image processor with pan and scan *off*
unless the call asks, whatever the image processor's own settings: the input builder
passes the scheme's ``processor_kwargs()`` at every call. The SigLIP tower embeds each
view as (896/14)^2 = 4096 patches; the projector average-pools them 4 x 4 to 16 x 16 =
256 features (``mm_tokens_per_image``) and maps them to the text width.

Tokens. Each view is ``"\\n\\n<start_of_image>" + "<image_soft_token>" x 256 +
"<end_of_image>\\n\\n"``; with crops the processor writes ``"Here is the original image "``,
the whole view, ``" and here are some crops to help you see better "`` and the crop views
joined by spaces (``Gemma3Processor.replace_image_token``). The image-token count (256 soft
tokens per view) is exact, and so is the sequence-token count (the 258 special tokens of each
view: one id each in any Gemma tokenizer): it assumes no tokenizer, and leaves out the
``"\\n\\n"`` and the sentence, ordinary text whose length depends on the tokenizer. With a
checkpoint's tokenizer loaded, the processor writes the whole text with it (and the chat
template around it): ``seq_len`` is then the real prompt length. Without one (random-weight
models, offline), the builder runs the same ``Gemma3Processor`` with a stand-in word-level
tokenizer (`stand_in_processor`): the three image tokens at the model's ids, each ``"\\n\\n"``
one token and each word one token, so the layout is the processor's own and only the
text-token split is assumed. Image tokens get token type 1, as the processor marks them:
the model attends bidirectionally within each view's soft tokens.

The registered models build the architecture from a config with random weights (latency
depends on shapes, not weights): a tiny one for CPU tests, the full-size Gemma 3 4B for
GPU runs without downloads. A hub id or local path loads real weights.

Module map. ``vision`` = ``model.vision_tower`` (SigLIP: patch embedding, position
embeddings, encoder layers, post-layernorm) on every view; ``projector`` =
``model.multi_modal_projector`` (4 x 4 average pooling, RMSNorm, one projection matrix);
``llm_prefill`` = the first to the last block of ``model.language_model.layers`` (the
embedding lookup, the scatter of image features into the sequence and the building of the
sliding-window and bidirectional-image masks run before it, untimed); ``lm_head`` =
``lm_head`` (tied to the embeddings, as released). The vision and projector spans are siblings.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torch import nn

from tilesweep.errors import GeometryMismatchError, UsageError
from tilings import PROFILES, Scheme
from tilings.panscan import PanScan
from workers.arch import Architecture, ModelSpec, Pretrained
from workers.checkpoints import config_value, load_processors
from workers.inputs import FORCED_TOKEN_IDS, PROMPT, Prepared
from workers.modulemap import ModuleMap

logger = logging.getLogger(__name__)

DEFAULT_PROFILE = "gemma3"
# Gemma3Config's defaults where a raw config.json leaves a key out (the released ones state the ids).
_DEFAULT_IDS = {"boi_token_index": 255_999, "eoi_token_index": 256_000, "image_token_index": 262_144}
_DEFAULT_TOKENS_PER_IMAGE = 256

# The tiny model's special ids, inside its 1024-token vocabulary and above every ordinary id the inputs use.
TINY_VOCAB = 1024
TINY_IDS = {"boi_token_index": 1000, "eoi_token_index": 1001, "image_token_index": 1002}
# Stand-in ids for the text without a tokenizer: ordinary ids inside every Gemma 3 vocabulary.
STAND_IN_BOS, STAND_IN_WORD, STAND_IN_NEWLINES = 2, 5, 7
STAND_IN_TOKENS = {"[bos]": STAND_IN_BOS, "[word]": STAND_IN_WORD, "\n\n": STAND_IN_NEWLINES}


# ----------------------------------------------------------------------------------------------
# Configs


def _tiny_config() -> Any:
    """Gemma 3 at toy size on the released view geometry: a 1-layer SigLIP of width 32 on 896 px views
    and 14 px patches (64 x 64 patches pooled 4 x 4 to 256 tokens, as released), a 2-layer Gemma 3 text
    model of width 64 with one sliding-window and one global layer.

    The tower is the cost: attention over 4096 patches a view, about 0.1 s a view on one CPU core. Half as
    wide, the masks the text model builds before its first block (untimed glue, 15-25 ms at 3 views) were
    over 10% of a forward; at this width the timed stages cover about 90% from 3 views on."""
    from transformers import Gemma3Config

    return Gemma3Config(
        vision_config={
            "model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 2, "image_size": 896, "patch_size": 14, "vision_use_head": False,
        },
        text_config={
            "model_type": "gemma3_text", "vocab_size": TINY_VOCAB, "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
            "query_pre_attn_scalar": 16, "sliding_window": 512, "layer_types": ["sliding_attention", "full_attention"],
            "max_position_embeddings": 8192,
        },
        mm_tokens_per_image=256, **TINY_IDS,
    )


def _gemma3_4b_config() -> Any:
    """google/gemma-3-4b-it's config.json (as mirrored in mlx-community/gemma-3-4b-it-bf16): SigLIP-so400m at
    896/14 (27 layers of width 1152, no pooling head), 256 tokens per view; text: 34 layers of width 2560,
    MLP 10240, sliding window 1024, linear RoPE scaling 8 on the global layers. The file states nothing else:
    the rest is Gemma3TextConfig's defaults, which are these checkpoints' (vocabulary 262208, 8 heads of 256,
    4 KV heads, query scale 256, one global layer in 6, RoPE bases 1e6 and 1e4, tied head). 4.30e9 parameters."""
    from transformers import Gemma3Config

    return Gemma3Config(
        vision_config={
            "model_type": "siglip_vision_model", "hidden_size": 1152, "intermediate_size": 4304,
            "num_hidden_layers": 27, "num_attention_heads": 16, "image_size": 896, "patch_size": 14,
            "vision_use_head": False,
        },
        text_config={
            "model_type": "gemma3_text", "hidden_size": 2560, "intermediate_size": 10240, "num_hidden_layers": 34,
            "sliding_window": 1024, "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
        },
        mm_tokens_per_image=256, boi_token_index=255_999, eoi_token_index=256_000, image_token_index=262_144,
        eos_token_id=[1, 106], initializer_range=0.02,
    )


# ----------------------------------------------------------------------------------------------
# Module map

MAP = ModuleMap(
    vision=("model.vision_tower",),
    projector=("model.multi_modal_projector",),
    llm_blocks="model.language_model.layers",
    lm_head=("lm_head",),
    vision_blocks="model.vision_tower.encoder.layers",
    required=("vision", "projector", "llm_blocks", "lm_head", "vision_blocks"),
)


# ----------------------------------------------------------------------------------------------
# Schemes: which views a model takes


@dataclass(frozen=True, slots=True)
class TowerGeometry:
    """What a model makes of one view, from its config."""

    view_size: int | None  # vision_config.image_size
    patch_size: int | None
    tokens_per_view: int  # mm_tokens_per_image

    def pooling_error(self) -> str | None:
        """Why the projector cannot pool a view into `tokens_per_view` features, or None."""
        if not self.view_size or not self.patch_size:
            return None
        side = math.isqrt(self.tokens_per_view)
        patches = self.view_size // self.patch_size
        if side * side != self.tokens_per_view or patches % side:
            return (f"the projector pools {patches}x{patches} patches into int(sqrt({self.tokens_per_view}))^2 "
                    f"features by an integer kernel, which needs mm_tokens_per_image a square whose side divides "
                    f"{patches}")
        return None


def tower_geometry(config: Any) -> TowerGeometry:
    """The view geometry of a config object, a model or a raw ``config.json`` dict."""
    vision = config_value(config, "vision_config")
    tokens = config_value(config, "mm_tokens_per_image", default=_DEFAULT_TOKENS_PER_IMAGE)
    size, patch = config_value(vision, "image_size"), config_value(vision, "patch_size")
    return TowerGeometry(view_size=int(size) if size is not None else None,
                         patch_size=int(patch) if patch is not None else None, tokens_per_view=int(tokens))


def _presets() -> list[str]:
    return [name for name, scheme in PROFILES.items() if isinstance(scheme, PanScan)]


def check_scheme_fits(config: Any, scheme: Scheme) -> None:
    """The SigLIP tower takes views of one size and the projector pools each into ``mm_tokens_per_image``
    features: the scheme's view size, patch size and tokens per view must be the model's.

    Args:
        config: the model's config object, a model (its ``config`` is read), or a raw ``config.json`` dict.

    Raises:
        UsageError: a scheme of another kind, a view, patch or token count the model does not take, or a model
            whose projector cannot pool a view into its own token count.
    """
    if not isinstance(scheme, PanScan):
        raise UsageError(
            f"profile {getattr(scheme, 'name', scheme)!r} is not a pan-and-scan scheme; Gemma 3 models take "
            f"{', '.join(_presets()) or 'a pan-and-scan scheme'} or a Gemma 3 preprocessor_config.json"
        )
    tower = tower_geometry(config)
    problem = tower.pooling_error()
    if problem:
        raise UsageError(f"the model config cannot run: {problem}; fix mm_tokens_per_image or the vision image_size")
    if tower.view_size is not None and scheme.view_size != tower.view_size:
        raise UsageError(
            f"profile {scheme.name!r} resizes views to {scheme.view_size} px but the model's vision tower takes "
            f"{tower.view_size}x{tower.view_size}; pick a profile with view_size {tower.view_size}"
        )
    if tower.patch_size is not None and scheme.patch_size != tower.patch_size:
        raise UsageError(
            f"profile {scheme.name!r} uses patch_size {scheme.patch_size} but the model's vision tower takes "
            f"patch_size {tower.patch_size}; pick a profile with patch_size {tower.patch_size}"
        )
    if scheme.tokens_per_view != tower.tokens_per_view:
        raise UsageError(
            f"profile {scheme.name!r} counts {scheme.tokens_per_view} tokens per view but the model pools each view "
            f"into {tower.tokens_per_view} (mm_tokens_per_image); pick a profile with tokens_per_view "
            f"{tower.tokens_per_view}"
        )


def gemma3_image_processor(scheme: PanScan) -> Any:
    """The model's own image processor class (the torchvision backend), configured to the scheme."""
    from transformers import Gemma3ImageProcessor

    return Gemma3ImageProcessor(**scheme.processor_kwargs())


# ----------------------------------------------------------------------------------------------
# Input builder


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenIds:
    """The image ids of one model (``<start_of_image>``, ``<end_of_image>``, ``<image_soft_token>``)."""

    boi: int
    eoi: int
    image: int

    @property
    def special(self) -> tuple[int, int, int]:
        return (self.boi, self.image, self.eoi)


def ids_from_config(config: Any) -> TokenIds:
    """The image ids a config names (Gemma3Config's defaults where a raw dict leaves them out)."""
    values = {key: int(config_value(config, key, default=default)) for key, default in _DEFAULT_IDS.items()}
    return TokenIds(boi=values["boi_token_index"], eoi=values["eoi_token_index"], image=values["image_token_index"])


def stand_in_processor(image_processor: Any, ids: TokenIds, tokens_per_view: int) -> Any:
    """transformers' own `Gemma3Processor` with a word-level tokenizer built here (no download).

    It knows the three image tokens at the model's ids; everything else is a stand-in: ``"\\n\\n"``
    one token, every other word one token (``STAND_IN_WORD``), a ``[bos]`` first. The processor
    writes its own text around each view, so the image ids and their order are exactly the real
    processor's; only how many tokens the ordinary text takes is assumed.
    """
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import Gemma3Processor, PreTrainedTokenizerFast

    names = {"<start_of_image>": ids.boi, "<end_of_image>": ids.eoi, "<image_soft_token>": ids.image}
    backend = Tokenizer(models.WordLevel(vocab={**STAND_IN_TOKENS, **names}, unk_token="[word]"))
    # The pieces are "\n\n" and runs of non-space characters; other whitespace goes.
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"\n\n|\S+"), behavior="removed", invert=True)
    backend.post_processor = processors.TemplateProcessing(single="[bos] $A", special_tokens=[("[bos]", STAND_IN_BOS)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[word]", bos_token="[bos]",
        extra_special_tokens={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                              "image_token": "<image_soft_token>"},
    )
    return Gemma3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_length=tokens_per_view)


@dataclass(slots=True)
class Gemma3Inputs:
    """Gemma 3: `Gemma3Processor` called with the scheme's pan-and-scan settings, with the checkpoint's tokenizer
    or a stand-in one (module docstring).

    Forward kwargs: ``input_ids``, ``pixel_values`` (``(views, 3, V, V)``: the whole image, then the crops)
    and ``token_type_ids`` (1 on soft tokens: the bidirectional image mask). No attention mask (one unpadded
    sequence) and no position ids (the text model counts them from the cache, as generation does).
    """

    processor: Any  # a Gemma3Processor: the checkpoint's (a real tokenizer) or stand_in_processor(...)
    ids: TokenIds
    tokens_per_view: int
    call_kwargs: dict[str, Any]  # the scheme's processor_kwargs(), passed at every call
    real_tokenizer: bool = False
    decode_ids: tuple[int, ...] = FORCED_TOKEN_IDS

    @property
    def image_processor(self) -> Any:
        return self.processor.image_processor

    def _text(self) -> str:
        proc = self.processor
        if self.real_tokenizer and getattr(proc, "chat_template", None):
            conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}]
            return proc.apply_chat_template(conversation, add_generation_prompt=True)
        return f"{proc.boi_token}{PROMPT}"  # the image first, then the prompt, as the chat template writes them

    def process(self, image: Image.Image) -> Prepared:
        out = self.processor(images=[image], text=self._text(), return_tensors="pt", **self.call_kwargs)
        input_ids = out["input_ids"]
        ids = input_ids[0]
        views = int(out["pixel_values"].shape[0])
        image_tokens = int((ids == self.ids.image).sum())
        if image_tokens != views * self.tokens_per_view:
            raise GeometryMismatchError(
                f"input_ids hold {image_tokens} image tokens but the model pools each of the processor's {views} "
                f"views into {self.tokens_per_view} features ({views * self.tokens_per_view}); the processor's "
                "image_seq_length differs from the model's mm_tokens_per_image"
            )
        types = out["token_type_ids"]
        if not torch.equal(types[0].bool(), ids == self.ids.image):
            raise GeometryMismatchError("the processor's token_type_ids do not mark exactly the image tokens; its "
                                        "version differs from the one this tool knows")
        vision = {"pixel_values": out["pixel_values"]}
        return Prepared(
            forward={**vision, "input_ids": input_ids, "token_type_ids": types},
            vision=vision,
            crops=views,
            image_tokens=image_tokens,
            sequence_tokens=int(torch.isin(ids, torch.tensor(self.ids.special)).sum()),
            seq_len=int(input_ids.shape[1]),
            grids=_grid(image, views - 1),
            source="processor" if self.real_tokenizer else "image-processor+layout",
        )

    @staticmethod
    def prefill_kwargs(use_cache: bool) -> dict[str, Any]:
        # Generation's prefill computes the logits of the last position only.
        return {"use_cache": use_cache, "logits_to_keep": 1}

    @staticmethod
    def vision_only(model: nn.Module, vision: dict[str, torch.Tensor]) -> Any:
        """The SigLIP tower and the pooling projector, as the forward runs them."""
        return model.model.get_image_features(pixel_values=vision["pixel_values"])

    def decode_step(self, model: nn.Module, output: Any, step: int, prefix_len: int) -> Any:
        """One forced token through the cache, without token types (as generation's decode steps run)."""
        token = torch.tensor([[self.decode_ids[step % len(self.decode_ids)]]], device=output.logits.device)
        return model(input_ids=token, cache=output.cache, use_cache=True, logits_to_keep=1)


def _grid(image: Image.Image, crops: int) -> tuple[int, int]:
    """The crops as (rows, cols): a row when the image is landscape (width >= height, the processor's branch)."""
    if crops == 0:
        return (1, 1)
    return (1, crops) if image.width >= image.height else (crops, 1)


def inputs_for(config: Any, scheme: PanScan, *, processor: Any = None, image_processor: Any = None) -> Gemma3Inputs:
    """The input builder of a model with `config`: the checkpoint's processor when given, else the stand-in
    processor over `image_processor` (by default the scheme's)."""
    ids = ids_from_config(config)
    tokens = tower_geometry(config).tokens_per_view
    if processor is None:
        image_processor = image_processor if image_processor is not None else gemma3_image_processor(scheme)
        processor = stand_in_processor(image_processor, ids, tokens)
        real = False
    else:
        real = True
    return Gemma3Inputs(processor=processor, ids=ids, tokens_per_view=tokens, call_kwargs=scheme.processor_kwargs(),
                        real_tokenizer=real)


def _inputs(model: nn.Module, scheme: PanScan) -> Gemma3Inputs:
    return inputs_for(model.config, scheme)


# ----------------------------------------------------------------------------------------------
# Loading


def _tokenizer_fits(processor: Any, ids: TokenIds) -> bool:
    """Whether the processor's tokenizer spells the three image tokens at the model's ids."""
    tokenizer = getattr(processor, "tokenizer", None)
    try:
        return (tokenizer is not None
                and (tokenizer.boi_token_id, tokenizer.eoi_token_id, tokenizer.image_token_id)
                == (ids.boi, ids.eoi, ids.image))
    except (AttributeError, KeyError, TypeError, ValueError):
        return False


def scheme_from_processor(image_processor: Any, processor: Any, model_config: Any) -> PanScan:
    """The checkpoint's scheme: its image processor's settings (null pan-and-scan settings: on, with
    Gemma3Processor's defaults), the tokens per view of its processor (else of the model) and the model's
    patch size."""
    settings = image_processor.to_dict()
    tower = tower_geometry(model_config)
    seq = getattr(processor, "image_seq_length", None) if processor is not None else None
    settings["image_seq_length"] = seq if seq is not None else settings.get("image_seq_length") or tower.tokens_per_view
    overrides = {"patch_size": tower.patch_size} if tower.patch_size is not None else {}
    return PanScan.from_preprocessor_config(settings, **overrides)


def _load(source: str, *, revision: str | None, device: torch.device, dtype: torch.dtype,
          model_kwargs: dict[str, Any], scheme: Scheme | None) -> Pretrained:
    from transformers import Gemma3ForConditionalGeneration, Gemma3ImageProcessor

    model = Gemma3ForConditionalGeneration.from_pretrained(source, revision=revision, dtype=dtype, **model_kwargs)
    model = model.to(device).eval()
    ids = ids_from_config(model.config)
    processor, image_processor = load_processors(source, revision, Gemma3ImageProcessor,
                                                 lambda p: _tokenizer_fits(p, ids))
    if scheme is None:
        if image_processor is not None:
            scheme = scheme_from_processor(image_processor, processor, model.config)
        else:
            logger.warning("%s has no preprocessor config; using the %r tiling profile", source, DEFAULT_PROFILE)
            scheme = PROFILES[DEFAULT_PROFILE]
    check_scheme_fits(model.config, scheme)
    inputs = inputs_for(model.config, scheme, processor=processor, image_processor=image_processor)
    return Pretrained(model=model, scheme=scheme, inputs=inputs)


ARCHITECTURES: dict[str, Architecture] = {
    "gemma3": Architecture(
        name="gemma3", title="Gemma 3", model_class="Gemma3ForConditionalGeneration", model_types=("gemma3",),
        module_map=MAP, default_profile=DEFAULT_PROFILE, inputs=_inputs, check_fits=check_scheme_fits,
        load_pretrained=_load,
    ),
}

MODELS: dict[str, ModelSpec] = {
    "tiny-gemma3": ModelSpec(
        name="tiny-gemma3",
        description="Gemma 3 architecture at toy size (32-wide SigLIP on 896 px views, 64-wide Gemma 3 text), "
                    "random weights; about 0.1 s per view per forward on a CPU",
        architecture="gemma3", profile=DEFAULT_PROFILE, config=_tiny_config,
    ),
    "gemma3-4b-arch": ModelSpec(
        name="gemma3-4b-arch",
        description="Gemma 3 4B shapes (google/gemma-3-4b-it config.json: SigLIP-so400m 896/14 + 34-layer Gemma 3 "
                    "text), random weights, no download",
        architecture="gemma3", profile=DEFAULT_PROFILE, weights="meta", config=_gemma3_4b_config,
    ),
}
