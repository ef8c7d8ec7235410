"""Inputs: a seeded synthetic image at an exact size, what a processor produced, and the check against tilings.

Each architecture has an input builder (`InputBuilder`, defined in its family's
module) that turns an image into the model's keyword arguments through the
model's own processor, and knows how to run the vision path alone (for the
subtraction baseline) and one decode step. Where no tokenizer can be loaded
(random-weight architectures, offline), a builder uses the image processor and
lays out the image tokens itself, from the processor's own output.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from tilesweep.errors import GeometryMismatchError, UsageError
from tilings import Geometry

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
    image_tokens: int  # placeholder tokens the vision features fill (Molmo: pooled patch tokens)
    sequence_tokens: int  # tokens the image adds to input_ids: placeholders, separators, starts and ends
    seq_len: int  # len(input_ids)
    grids: Any = None  # the processor's own grid(s), where it reports them
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


def with_processor_overrides(builder: InputBuilder, overrides: Mapping[str, Any] | None) -> InputBuilder:
    """`builder` with its processor configured with `overrides` (`tilings.overrides`) at call time (none: itself).

    A builder whose scheme needs overrides defines ``with_processor_overrides``; the others need not.

    Raises:
        UsageError: overrides for a builder that takes none.
    """
    if not overrides:
        return builder
    method = getattr(builder, "with_processor_overrides", None)
    if method is None:
        raise UsageError(
            f"the input builder {type(builder).__name__} takes no processor overrides, got {dict(overrides)!r}; "
            "drop them (only profiles whose targets need a processor setting, such as idefics3's, have any)"
        )
    return method(overrides)


class InputBuilder(Protocol):
    """What an architecture's input builder does (`workers.arch.Architecture.inputs`)."""

    def process(self, image: Image.Image) -> Prepared:
        """The image through the model's own processor: forward kwargs, vision kwargs and what it produced."""

    def prefill_kwargs(self, use_cache: bool) -> dict[str, Any]:
        """Extra kwargs of a prefill forward (e.g. ``logits_to_keep=1``, as generation computes)."""

    def vision_only(self, model: torch.nn.Module, vision: dict[str, torch.Tensor]) -> Any:
        """The vision path alone (encoder and projector), as the forward runs it: the subtraction baseline."""

    def decode_step(self, model: torch.nn.Module, output: Any, step: int, prefix_len: int) -> Any:
        """One forced decode step through the KV cache after `output`."""
