"""Inputs: a seeded synthetic image at an exact size, the model's own processor, and the checks.

Each model architecture has an input builder that turns an image into the model's
keyword arguments, and knows how to run the vision path alone (for the
subtraction baseline) and one decode step. Where no tokenizer can be loaded
(random-weight architectures, offline), the Molmo2 builder uses the image
processor and lays out the image tokens itself, from the processor's own grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from PIL import Image

from tilesweep.errors import GeometryMismatchError
from tilings import Geometry, Profile

PROMPT = "Describe this image in detail."
# Ordinary (non-special) token ids standing in for PROMPT where no tokenizer exists;
# every vocabulary of the supported models is far larger than these.
PROMPT_IDS = (1, 57, 210, 33, 418, 12, 96, 301, 7)
FORCED_TOKEN_IDS = (42, 137, 256, 73, 19, 604, 88, 5)


def synthetic_image(height: int, width: int, seed: int) -> Image.Image:
    """Uniform RGB noise of exactly `height` x `width` pixels; the same seed gives the same pixels."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8), mode="RGB")


@dataclass(slots=True)
class Prepared:
    """One processed image: the model's kwargs and what the processor actually produced."""

    forward: dict[str, torch.Tensor]  # model(**forward) is one prefill step
    vision: dict[str, torch.Tensor]  # the vision path alone takes these
    crops: int
    image_tokens: int  # pooled patch tokens the vision path returns
    sequence_tokens: int  # image tokens in input_ids: patches, columns, starts and ends
    seq_len: int  # len(input_ids)
    grids: tuple[tuple[int, int], tuple[int, int]] | None = None  # (low, high) pooled grids where known
    source: str = ""  # "processor" or "image-processor+layout"

    def to(self, device: torch.device, dtype: torch.dtype) -> Prepared:
        """Tensors on `device`, floating ones in the model's `dtype` (as a serving stack would feed them)."""

        def move(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return {
                k: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype, non_blocking=False)
                for k, v in tensors.items()
            }

        return replace(self, forward=move(self.forward), vision=move(self.vision))


def check_geometry(prepared: Prepared, predicted: Geometry, *, what: str) -> None:
    """Raise if the processor's crops, image tokens or sequence tokens differ from the prediction.

    Raises:
        GeometryMismatchError: with both sets of numbers, so a wrong row is never written.
    """
    actual = (prepared.crops, prepared.image_tokens, prepared.sequence_tokens)
    expected = (predicted.crops, predicted.image_tokens, predicted.sequence_tokens)
    if actual != expected:
        raise GeometryMismatchError(
            f"{what}: the processor produced {actual[0]} crops, {actual[1]} image tokens and {actual[2]} "
            f"image sequence tokens; tilings predicts {expected[0]} crops, {expected[1]} image tokens and "
            f"{expected[2]} sequence tokens (tiling {predicted.tiling.rows}x{predicted.tiling.cols}); "
            "check that the tiling profile matches the model's preprocessor config"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenLayout:
    """Special token ids and the profile's layout flags: enough to build input_ids from a grid."""

    image_start: int
    low_res_start: int
    image_end: int
    patch: int
    col: int
    profile: Profile

    def image_span(self, low: tuple[int, int], high: tuple[int, int]) -> list[int]:
        """The processor's layout: the low-res view first, then the high-res view."""
        p = self.profile
        low_row = [self.patch] * low[1] + ([self.col] if p.low_res_col_tokens else [])
        high_row = [self.patch] * high[1] + ([self.col] if p.high_res_col_tokens else [])
        low_open = self.low_res_start if p.low_res_start_token else self.image_start
        return (
            [low_open] + low_row * low[0] + [self.image_end]
            + [self.image_start] + high_row * high[0] + [self.image_end]
        )


@dataclass(slots=True)
class Molmo2Inputs:
    """Molmo2 (native transformers): `Molmo2ImageProcessor`, plus the full processor when a tokenizer loads."""

    image_processor: Any
    layout: TokenLayout
    processor: Any = None  # a Molmo2Processor with a tokenizer, or None
    prompt_ids: tuple[int, ...] = PROMPT_IDS
    decode_ids: tuple[int, ...] = FORCED_TOKEN_IDS
    _special: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        lay = self.layout
        self._special = {lay.image_start, lay.low_res_start, lay.image_end, lay.patch, lay.col}

    def process(self, image: Image.Image) -> Prepared:
        if self.processor is not None:
            return self._with_processor(image)
        out = self.image_processor(images=[image], return_tensors="pt")
        low_h, low_w, high_h, high_w = (int(v) for v in out["image_grids"][0].tolist())
        span = self.layout.image_span((low_h, low_w), (high_h, high_w))
        patches = sum(1 for t in span if t == self.layout.patch)
        if patches != out["image_token_pooling"].shape[0]:
            # The model adds one pooled feature per patch token: the counts must agree.
            raise GeometryMismatchError(
                f"the token layout has {patches} patch tokens for grid {[low_h, low_w, high_h, high_w]} but the "
                f"processor pools {out['image_token_pooling'].shape[0]} image tokens; the image processor's "
                "version differs from the layout this tool knows"
            )
        head, tail = list(self.prompt_ids[:1]), list(self.prompt_ids[1:])
        input_ids = torch.tensor([head + span + tail], dtype=torch.long)
        mm_token_type_ids = torch.zeros_like(input_ids)
        mm_token_type_ids[0, len(head) : len(head) + len(span)] = 1
        vision = {k: out[k] for k in ("pixel_values", "image_token_pooling", "image_grids")}
        forward = {**vision, "image_num_crops": out["image_num_crops"], "input_ids": input_ids,
                   "mm_token_type_ids": mm_token_type_ids}
        return Prepared(
            forward=forward,
            vision=vision,
            crops=int(out["pixel_values"].shape[0]),
            image_tokens=int(out["image_token_pooling"].shape[0]),
            sequence_tokens=len(span),
            seq_len=int(input_ids.shape[1]),
            grids=((low_h, low_w), (high_h, high_w)),
            source="image-processor+layout",
        )

    def _with_processor(self, image: Image.Image) -> Prepared:
        proc = self.processor
        out = proc(images=[image], text=f"{proc.image_token}{PROMPT}", return_tensors="pt")
        low_h, low_w, high_h, high_w = (int(v) for v in out["image_grids"][0].tolist())
        input_ids = out["input_ids"]
        vision = {k: out[k] for k in ("pixel_values", "image_token_pooling", "image_grids")}
        forward = {k: v for k, v in out.items() if isinstance(v, torch.Tensor) and k != "attention_mask"}
        if "mm_token_type_ids" in out:  # the processor's own marking of image tokens
            sequence_tokens = int(out["mm_token_type_ids"].sum())
        else:
            sequence_tokens = int(torch.isin(input_ids[0], torch.tensor(sorted(self._special))).sum())
        return Prepared(
            forward=forward,
            vision=vision,
            crops=int(out["pixel_values"].shape[0]),
            image_tokens=int(out["image_token_pooling"].shape[0]),
            sequence_tokens=sequence_tokens,
            seq_len=int(input_ids.shape[1]),
            grids=((low_h, low_w), (high_h, high_w)),
            source="processor",
        )

    @staticmethod
    def prefill_kwargs(use_cache: bool) -> dict[str, Any]:
        # Generation's prefill computes the logits of the last position only.
        return {"use_cache": use_cache, "logits_to_keep": 1}

    @staticmethod
    def vision_only(model: torch.nn.Module, vision: dict[str, torch.Tensor]) -> Any:
        """The vision tower and the adapter, as the forward runs them."""
        return model.model.get_image_features(**vision)

    def decode_step(self, model: torch.nn.Module, output: Any, step: int, prefix_len: int) -> Any:
        token = torch.tensor([[self.decode_ids[step % len(self.decode_ids)]]], device=output.logits.device)
        return model(input_ids=token, cache=output.cache, use_cache=True, logits_to_keep=1)


@dataclass(slots=True)
class MolmoV1Inputs:
    """Molmo v1 remote code: its processor's ``process()`` and its vision backbone.

    Written against the published remote code (MolmoProcessor.process returns
    ``input_ids``, ``images``, ``image_input_idx``, ``image_masks`` unbatched).
    """

    processor: Any
    decode_ids: tuple[int, ...] = FORCED_TOKEN_IDS

    def process(self, image: Image.Image) -> Prepared:
        out = self.processor.process(images=[np.asarray(image)], text=PROMPT)
        batched = {k: v.unsqueeze(0) for k, v in out.items() if isinstance(v, torch.Tensor)}
        tok = self.processor.tokenizer
        special = torch.tensor(tok.convert_tokens_to_ids(["<im_patch>", "<im_col>", "<im_start>", "<im_end>"]))
        input_ids = batched["input_ids"]
        vision = {"images": batched["images"], "image_masks": batched.get("image_masks")}
        return Prepared(
            forward={k: batched[k] for k in ("input_ids", "images", "image_masks", "image_input_idx") if k in batched},
            vision={k: v for k, v in vision.items() if v is not None},
            crops=int(out["images"].shape[0]),
            image_tokens=int((out["image_input_idx"] >= 0).sum()),
            sequence_tokens=int(torch.isin(input_ids[0], special).sum()),
            seq_len=int(input_ids.shape[1]),
            source="processor",
        )

    @staticmethod
    def prefill_kwargs(use_cache: bool) -> dict[str, Any]:
        return {"use_cache": use_cache}

    @staticmethod
    def vision_only(model: torch.nn.Module, vision: dict[str, torch.Tensor]) -> Any:
        return model.model.vision_backbone(vision["images"], vision.get("image_masks"))

    def decode_step(self, model: torch.nn.Module, output: Any, step: int, prefix_len: int) -> Any:
        device = output.logits.device
        token = torch.tensor([[self.decode_ids[step % len(self.decode_ids)]]], device=device)
        mask = torch.ones((1, prefix_len + step + 1), dtype=torch.long, device=device)
        return model(input_ids=token, past_key_values=output.past_key_values, attention_mask=mask, use_cache=True)


InputBuilder = Molmo2Inputs | MolmoV1Inputs
