"""Idefics3 and SmolVLM: ``Idefics3ForConditionalGeneration`` and ``SmolVLMForConditionalGeneration``.

Both are a SigLIP vision tower, a pixel-shuffle connector and a Llama text model
(SmolVLM is Idefics3 with SmolLM2 and its own classes; transformers builds them from
the same code). Their processors resize the image's longest edge to
``size["longest_edge"]``, cut it into M x M tiles and add the whole image at M x M
(`tilings.longestedge`); a target grid needs its own longest edge, so every config
carries it as a processor override (`tilings.overrides`) that the input builder
passes to the processor at call time.

The registered models are built from configs with random weights (latency depends
on shapes, not weights): tiny ones for CPU tests, the full-size Idefics3-8B and
SmolVLM2-2.2B architectures for GPU runs without downloads. A hub id or local path
loads real weights and, where it loads, the checkpoint's tokenizer.

Tokens. Each tile is ``<fake_token_around_image><row_i_col_j>`` + ``<image>`` x T,
each row of tiles ends with ``\\n``, then ``\\n<fake_token_around_image><global-img>``
+ ``<image>`` x T + ``<fake_token_around_image>`` (an unsplit image: that last part
only). The image-token count (``<image>``: T per crop) is exact whatever the
tokenizer. The sequence-token count (every token of that span) is exact with the
checkpoint's tokenizer, which the processor then uses (counted from its own
``mm_token_type_ids``); without one (random-weight models, offline), the builder
writes the processor's own layout string (``Idefics3Processor.replace_image_token``,
``processing_smolvlm.get_image_prompt_string``) with one stand-in id per tag, per
``\\n`` and per ``\\n\\n`` (the scheme's ``newline_pair_tokens``): the count a
tokenizer gives that holds the tags as single tokens and merges ``\\n\\n``, as the
released ones do (Llama 3's; SmolLM2's is assumed alike).

Module map (the same paths in both classes). ``vision`` = ``model.vision_model``:
patch embedding, position embeddings, the encoder layers and the post-layernorm,
run on every crop. ``projector`` = ``model.connector``: the pixel shuffle
(space-to-depth: ``scale_factor``^2 neighbouring patches become one token) and the
modality projection (one linear layer to the text width). ``llm_prefill`` = the
first to the last block of ``model.text_model.layers`` (the embedding lookup and
the merge of image features into the sequence, ``masked_scatter``, run before it,
untimed); ``lm_head`` = ``lm_head``. Between the stages, untimed: the check that
drops all-zero (padding) crops, a full pass over the pixels, and the patch mask.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torch import nn

from tilesweep.errors import UsageError
from tilings.longestedge import PRESETS as LONGEST_EDGE_PRESETS
from tilings.longestedge import LongestEdge
from workers.arch import Architecture, ModelSpec, Pretrained
from workers.checkpoints import config_value, load_processors
from workers.inputs import FORCED_TOKEN_IDS, PROMPT, PROMPT_IDS, Prepared
from workers.modulemap import ModuleMap

logger = logging.getLogger(__name__)

# The tiny models' image token: inside their 1024-token vocabulary, above every id of PROMPT_IDS / FORCED_TOKEN_IDS.
TINY_VOCAB = 1024
TINY_IMAGE_TOKEN_ID = 1000
# Stand-ins for what a tokenizer spells, where none is loaded: ordinary ids inside every registered vocabulary, apart
# from the prompt's and the image token; only their number reaches the model (198 and 271 are Llama 3's "\n", "\n\n").
NEWLINE_ID = 198
NEWLINE_PAIR_IDS = {1: (271,), 2: (NEWLINE_ID, NEWLINE_ID)}
FAKE_ID = 900
GLOBAL_ID = 901
ROW_COL_BASE = 902  # <row_i_col_j> -> ROW_COL_BASE + 6*(i-1) + (j-1), i, j in 1..6
FAKE_TOKEN, IMAGE_TOKEN, GLOBAL_TOKEN = "<fake_token_around_image>", "<image>", "<global-img>"
_TAG = re.compile(r"<fake_token_around_image>|<global-img>|<image>|<row_(\d+)_col_(\d+)>|\n\n|\n")


# ----- configs ---------------------------------------------------------------------------------
def _tiny_text() -> dict[str, Any]:
    return {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": TINY_VOCAB,
            "max_position_embeddings": 8192, "pad_token_id": None}


def _tiny_idefics3_config() -> Any:
    """Toy widths and depths (4 vision layers: the untimed glue between the stages, a full pass over the pixels,
    stays under 10% of the forward); the released geometry: SigLIP at 364/14 (26 x 26 patches a crop), scale factor 2,
    169 tokens a crop."""
    from transformers import Idefics3Config

    return Idefics3Config(
        vision_config={"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
                       "image_size": 364, "patch_size": 14},
        text_config=_tiny_text(), image_token_id=TINY_IMAGE_TOKEN_ID, scale_factor=2, tie_word_embeddings=False,
    )


def _tiny_smolvlm_config() -> Any:
    """Toy widths and depths; SmolVLM2-2.2B's geometry: SigLIP at 384/14 (27 x 27 patches a crop), scale factor 3,
    81 tokens a crop."""
    from transformers import SmolVLMConfig

    return SmolVLMConfig(
        vision_config={"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
                       "image_size": 384, "patch_size": 14},
        text_config=_tiny_text(), image_token_id=TINY_IMAGE_TOKEN_ID, scale_factor=3, tie_word_embeddings=False,
    )


def _idefics3_8b_config() -> Any:
    """HuggingFaceM4/Idefics3-8B-Llama3 (config.json): SigLIP-so400m at 364/14 (1152 wide, MLP 4304, 27 layers,
    16 heads), scale factor 2, Llama 3.1 8B (4096 wide, MLP 14336, 32 layers, 32 heads, 8 KV heads, rope_theta 5e5)
    with the 128256-token vocabulary grown by ``<fake_token_around_image>``, ``<image>`` (128257) and
    ``<end_of_utterance>`` to 128259, untied head. Llama 3.1's rope scaling is left out: it changes no shape. About
    8.46e9 parameters."""
    from transformers import Idefics3Config

    return Idefics3Config(
        vision_config={"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27,
                       "num_attention_heads": 16, "image_size": 364, "patch_size": 14},
        text_config={"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                     "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128259,
                     "max_position_embeddings": 131072, "rms_norm_eps": 1e-5,
                     "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0},
                     "bos_token_id": 128000, "eos_token_id": 128001, "pad_token_id": 128002},
        image_token_id=128257, scale_factor=2, tie_word_embeddings=False,
    )


def _smolvlm2_2b_config() -> Any:
    """HuggingFaceTB/SmolVLM2-2.2B-Instruct (config.json): SigLIP-so400m at 384/14 (1152 wide, MLP 4304, 27 layers,
    16 heads), scale factor 3, SmolLM2-1.7B (2048 wide, MLP 8192, 24 layers, 32 heads, 32 KV heads, head_dim 64)
    with its context stretched to 16384 positions (rope_theta 273768), the 49280-token vocabulary, ``<image>`` =
    49190, untied head. About 2.25e9 parameters."""
    from transformers import SmolVLMConfig

    return SmolVLMConfig(
        vision_config={"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27,
                       "num_attention_heads": 16, "image_size": 384, "patch_size": 14},
        text_config={"model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 24,
                     "num_attention_heads": 32, "num_key_value_heads": 32, "head_dim": 64, "vocab_size": 49280,
                     "max_position_embeddings": 16384, "rms_norm_eps": 1e-5,
                     "rope_parameters": {"rope_type": "default", "rope_theta": 273768.0},
                     "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2},
        image_token_id=49190, scale_factor=3, tie_word_embeddings=False,
    )


# See the module docstring for what each stage covers.
MODULE_MAP = ModuleMap(
    vision=("model.vision_model",),
    projector=("model.connector",),
    llm_blocks="model.text_model.layers",
    lm_head=("lm_head",),
    vision_blocks="model.vision_model.encoder.layers",
    required=("vision", "projector", "llm_blocks", "lm_head", "vision_blocks"),
)


# ----- does a scheme fit a model? ---------------------------------------------------------------
def model_numbers(config: Any) -> dict[str, Any]:
    """The geometry a config states: tile (vision ``image_size``), patch, scale factor, tokens per crop, image id."""
    size = config_value(config, "vision_config", "image_size")
    patch = config_value(config, "vision_config", "patch_size")
    scale = config_value(config, "scale_factor", default=2)
    tokens = None
    if size is not None and patch is not None and scale:
        tokens = int(((size // patch) ** 2) / (scale**2))  # Idefics3Model.image_seq_len
    return {"image_size": size, "patch_size": patch, "scale_factor": scale, "tokens_per_tile": tokens,
            "image_token_id": config_value(config, "image_token_id")}


def check_scheme_fits(config: Any, scheme: Any) -> None:
    """The scheme's tiles must be the vision tower's images and its tokens per crop the connector's output.

    Args:
        config: a transformers config object, a raw ``config.json`` dict or a model.

    Raises:
        UsageError: a scheme of another kind, or a tile, patch or token count unlike the model's.
    """
    if not isinstance(scheme, LongestEdge):
        raise UsageError(
            f"profile {getattr(scheme, 'name', scheme)!r} is not a longest-edge scheme; Idefics3 and SmolVLM models "
            f"take {', '.join(LONGEST_EDGE_PRESETS)} or an Idefics3/SmolVLM preprocessor_config.json"
        )
    got = model_numbers(config)
    size, patch, scale = got["image_size"], got["patch_size"], got["scale_factor"]
    if size is not None and size != scheme.tile_size:
        raise UsageError(
            f"profile {scheme.name!r} cuts {scheme.tile_size} px tiles but the model's vision tower takes "
            f"{size}x{size}; pick a profile with tile_size {size} (e.g. one built from the checkpoint's "
            "preprocessor config)"
        )
    if patch is not None and patch != scheme.patch_size:
        raise UsageError(
            f"profile {scheme.name!r} has patch_size {scheme.patch_size} but the model's vision tower uses {patch} px "
            f"patches; pick a profile with patch_size {patch}"
        )
    if size is not None and patch is not None and (size // patch) % scale:
        raise UsageError(
            f"the model's vision tower gives {size // patch} x {size // patch} patches, which its pixel shuffle "
            f"(scale_factor {scale}) cannot fold; fix the model config"
        )
    if got["tokens_per_tile"] is not None and got["tokens_per_tile"] != scheme.tokens_per_tile:
        raise UsageError(
            f"profile {scheme.name!r} writes {scheme.tokens_per_tile} <image> tokens a crop but the model makes "
            f"{got['tokens_per_tile']} features a crop ((image_size // patch)^2 / scale_factor^2); pick a profile "
            f"with tokens_per_tile {got['tokens_per_tile']}"
        )


# ----- inputs ------------------------------------------------------------------------------------
def image_processor_for(architecture: str, scheme: LongestEdge) -> Any:
    """The architecture's own image processor class (transformers' torchvision backend) configured to `scheme`."""
    import transformers

    return getattr(transformers, _IMAGE_PROCESSOR[architecture])(**scheme.processor_kwargs())


def layout_text(architecture: str, rows: int, cols: int, tokens_per_tile: int) -> str:
    """The image's text as the architecture's processor writes it for a grid (0 x 0: not split), by its own code."""
    if architecture == "smolvlm":
        from transformers.models.smolvlm.processing_smolvlm import get_image_prompt_string

        return get_image_prompt_string(rows, cols, tokens_per_tile, fake_token_around_image=FAKE_TOKEN,
                                       image_token=IMAGE_TOKEN, global_image_token=GLOBAL_TOKEN)
    from transformers import Idefics3Processor

    # replace_image_token reads these four attributes only (its __init__ needs a tokenizer).
    writer = Idefics3Processor.__new__(Idefics3Processor)
    writer.fake_image_token, writer.image_token, writer.global_image_tag = FAKE_TOKEN, IMAGE_TOKEN, GLOBAL_TOKEN
    writer.image_seq_len = tokens_per_tile
    return writer.replace_image_token({"rows": [[rows]], "cols": [[cols]]}, 0)


def layout_ids(text: str, image_token_id: int, newline_pair_tokens: int) -> list[int]:
    """`text` (a `layout_text`) as ids: one per tag and per ``\\n``, `newline_pair_tokens` for ``\\n\\n``.

    Raises:
        ValueError: text that is not only those tags and newlines (a changed processor layout).
    """
    ids: list[int] = []
    at = 0
    for match in _TAG.finditer(text):
        if match.start() != at:
            raise ValueError(f"unexpected text {text[at:match.start()]!r} in the processor's image layout")
        tag = match.group(0)
        if tag == IMAGE_TOKEN:
            ids.append(image_token_id)
        elif tag == FAKE_TOKEN:
            ids.append(FAKE_ID)
        elif tag == GLOBAL_TOKEN:
            ids.append(GLOBAL_ID)
        elif tag == "\n\n":
            ids.extend(NEWLINE_PAIR_IDS[newline_pair_tokens])
        elif tag == "\n":
            ids.append(NEWLINE_ID)
        else:
            ids.append(ROW_COL_BASE + 6 * (int(match.group(1)) - 1) + int(match.group(2)) - 1)
        at = match.end()
    if at != len(text):
        raise ValueError(f"unexpected text {text[at:]!r} in the processor's image layout")
    return ids


@dataclass(slots=True)
class Idefics3Inputs:
    """The architecture's image processor plus its token layout, or its full processor when a tokenizer loads.

    Without a tokenizer, ``input_ids`` is ``PROMPT_IDS[0]`` (standing for the chat template's ``User:``), the
    image's span (`layout_ids`), then the rest of ``PROMPT_IDS`` (the prompt): the template puts the image first.
    `overrides` (`tilings.overrides`) go to the processor at every call.
    """

    architecture: str
    image_processor: Any
    image_token_id: int
    tokens_per_tile: int
    newline_pair_tokens: int = 1
    processor: Any = None  # Idefics3Processor / SmolVLMProcessor with a tokenizer, or None
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    prompt_ids: tuple[int, ...] = PROMPT_IDS
    decode_ids: tuple[int, ...] = FORCED_TOKEN_IDS

    def with_processor_overrides(self, overrides: Mapping[str, Any]) -> Idefics3Inputs:
        """This builder calling its processor with `overrides` (e.g. ``{"size": {"longest_edge": 728}}``)."""
        return dataclasses.replace(self, overrides=dict(overrides))

    def process(self, image: Image.Image) -> Prepared:
        if self.processor is not None:
            return self._with_processor(image)
        out = self.image_processor(images=[image], return_tensors="pt", return_row_col_info=True, **self.overrides)
        rows, cols = int(out["rows"][0][0]), int(out["cols"][0][0])
        span = layout_ids(layout_text(self.architecture, rows, cols, self.tokens_per_tile), self.image_token_id,
                          self.newline_pair_tokens)
        input_ids = torch.tensor([[*self.prompt_ids[:1], *span, *self.prompt_ids[1:]]], dtype=torch.long)
        return self._prepared(out, input_ids, len(span), (rows, cols), "image-processor+layout")

    def _with_processor(self, image: Image.Image) -> Prepared:
        proc = self.processor
        text = f"User:{IMAGE_TOKEN}{PROMPT}"
        if getattr(proc, "chat_template", None):
            conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}]
            text = proc.apply_chat_template(conversation, add_generation_prompt=True)
        out = proc(images=[image], text=text, return_tensors="pt", return_mm_token_type_ids=True, **self.overrides)
        # mm_token_type_ids marks the image's whole span, from its first <fake_token_around_image> to its last.
        return self._prepared(out, out["input_ids"], int(out["mm_token_type_ids"].sum()), None, "processor")

    def _prepared(self, out: Any, input_ids: torch.Tensor, span: int, grid: tuple[int, int] | None,
                  source: str) -> Prepared:
        vision = {"pixel_values": out["pixel_values"], "pixel_attention_mask": out["pixel_attention_mask"]}
        return Prepared(
            forward={**vision, "input_ids": input_ids},
            vision=vision,
            crops=int(out["pixel_values"].shape[1]),  # (images, crops, 3, M, M): the global image last
            image_tokens=int((input_ids[0] == self.image_token_id).sum()),
            sequence_tokens=span,
            seq_len=int(input_ids.shape[1]),
            grids=None if grid is None else (grid if grid != (0, 0) else (1, 1)),
            source=source,
        )

    @staticmethod
    def prefill_kwargs(use_cache: bool) -> dict[str, Any]:
        # Generation's prefill computes the logits of the last position only.
        return {"use_cache": use_cache, "logits_to_keep": 1}

    @staticmethod
    def vision_only(model: nn.Module, vision: dict[str, torch.Tensor]) -> Any:
        """The vision tower and the connector (padding-crop check included), as the forward runs them."""
        return model.model.get_image_features(**vision)

    def decode_step(self, model: nn.Module, output: Any, step: int, prefix_len: int) -> Any:
        # Llama's 1-D RoPE: positions continue from the cache's length when none are given.
        token = torch.tensor([[self.decode_ids[step % len(self.decode_ids)]]], device=output.logits.device)
        return model(input_ids=token, cache=output.cache, use_cache=True, logits_to_keep=1)


def inputs_for(architecture: str, config: Any, scheme: LongestEdge, *, image_processor: Any = None,
               processor: Any = None) -> Idefics3Inputs:
    """The input builder of a model with `config`, its image processor configured by `scheme` unless given."""
    return Idefics3Inputs(
        architecture=architecture,
        image_processor=image_processor if image_processor is not None else image_processor_for(architecture, scheme),
        image_token_id=int(config_value(config, "image_token_id")),
        tokens_per_tile=scheme.tokens_per_tile,
        newline_pair_tokens=scheme.newline_pair_tokens,
        processor=processor,
    )


# ----- checkpoints -------------------------------------------------------------------------------
def newline_pair_tokens(tokenizer: Any) -> int:
    """How many tokens `tokenizer` spells ``"\\n\\n"`` with (the processor's own count uses the same)."""
    return len(tokenizer("\n\n", add_special_tokens=False)["input_ids"])


def scheme_from_checkpoint(config: Any, processor: Any, image_processor: Any) -> LongestEdge:
    """The checkpoint's scheme: its image processor's settings, the processor's ``image_seq_len`` and tokenizer
    where a full processor loaded, and the model config's patch size."""
    settings = image_processor.to_dict()
    overrides: dict[str, Any] = {}
    if processor is not None:
        settings["image_seq_len"] = processor.image_seq_len
        pair = newline_pair_tokens(processor.tokenizer)
        if pair in (1, 2):
            overrides["newline_pair_tokens"] = pair
    elif model_numbers(config)["tokens_per_tile"] is not None:
        settings.setdefault("image_seq_len", model_numbers(config)["tokens_per_tile"])
    patch = model_numbers(config)["patch_size"]
    if patch is not None:
        overrides["patch_size"] = patch
    return LongestEdge.from_preprocessor_config(settings, **overrides)


def _tokenizer_fits(processor: Any, config: Any) -> bool:
    """Whether the processor's ``<image>`` is the model's image token id."""
    try:
        return int(processor.image_token_id) == int(config_value(config, "image_token_id"))
    except (AttributeError, TypeError, ValueError):
        return False


def _loader(architecture: str) -> Any:
    def load(source: str, *, revision: str | None, device: torch.device, dtype: torch.dtype,
             model_kwargs: dict[str, Any], scheme: LongestEdge | None) -> Pretrained:
        import transformers

        model_cls = getattr(transformers, ARCHITECTURES[architecture].model_class)
        model = model_cls.from_pretrained(source, revision=revision, dtype=dtype, **model_kwargs).to(device).eval()
        image_cls = getattr(transformers, _IMAGE_PROCESSOR[architecture])
        processor, image_processor = load_processors(source, revision, image_cls,
                                                     lambda p: _tokenizer_fits(p, model.config))
        if scheme is None:
            if image_processor is not None:
                scheme = scheme_from_checkpoint(model.config, processor, image_processor)
            else:
                logger.warning("%s has no preprocessor config; using the %r tiling profile", source, architecture)
                scheme = LONGEST_EDGE_PRESETS[architecture]
        check_scheme_fits(model.config, scheme)
        inputs = inputs_for(architecture, model.config, scheme, image_processor=image_processor, processor=processor)
        return Pretrained(model=model, scheme=scheme, inputs=inputs)

    return load


def _idefics3_inputs(model: nn.Module, scheme: LongestEdge) -> Idefics3Inputs:
    return inputs_for("idefics3", model.config, scheme)


def _smolvlm_inputs(model: nn.Module, scheme: LongestEdge) -> Idefics3Inputs:
    return inputs_for("smolvlm", model.config, scheme)


_IMAGE_PROCESSOR = {"idefics3": "Idefics3ImageProcessor", "smolvlm": "SmolVLMImageProcessor"}

ARCHITECTURES: dict[str, Architecture] = {
    # One module map for both: the same paths in both classes (detection tells them apart by the model_type).
    "idefics3": Architecture(
        name="idefics3", title="Idefics3", model_class="Idefics3ForConditionalGeneration", model_types=("idefics3",),
        module_map=MODULE_MAP, default_profile="idefics3", inputs=_idefics3_inputs,
        check_fits=check_scheme_fits, load_pretrained=_loader("idefics3"),
    ),
    "smolvlm": Architecture(
        name="smolvlm", title="SmolVLM", model_class="SmolVLMForConditionalGeneration", model_types=("smolvlm",),
        module_map=MODULE_MAP, default_profile="smolvlm", inputs=_smolvlm_inputs,
        check_fits=check_scheme_fits, load_pretrained=_loader("smolvlm"),
    ),
}

MODELS: dict[str, ModelSpec] = {
    "tiny-idefics3": ModelSpec(
        name="tiny-idefics3",
        description="Idefics3 architecture at toy size (64 hidden, 4+2 layers), SigLIP 364/14 geometry, scale factor "
                    "2, random weights",
        architecture="idefics3", profile="idefics3", config=_tiny_idefics3_config,
    ),
    "tiny-smolvlm": ModelSpec(
        name="tiny-smolvlm",
        description="SmolVLM architecture at toy size (64 hidden, 4+2 layers), SigLIP 384/14 geometry, scale factor "
                    "3, random weights",
        architecture="smolvlm", profile="smolvlm", config=_tiny_smolvlm_config,
    ),
    "idefics3-8b-arch": ModelSpec(
        name="idefics3-8b-arch",
        description="Idefics3-8B-Llama3 shapes (SigLIP-so400m 364 px + Llama 3.1 8B), random weights, no download",
        architecture="idefics3", profile="idefics3", weights="meta", config=_idefics3_8b_config,
    ),
    "smolvlm2-2.2b-arch": ModelSpec(
        name="smolvlm2-2.2b-arch",
        description="SmolVLM2-2.2B-Instruct shapes (SigLIP-so400m 384 px + SmolLM2-1.7B), random weights, no download",
        architecture="smolvlm", profile="smolvlm", weights="meta", config=_smolvlm2_2b_config,
    ),
}
