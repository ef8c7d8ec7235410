"""Fixtures for the tilings tests: the real transformers image processor, configured per profile.

Helpers are handed out as fixtures because test modules are imported in
importlib mode and cannot import this file.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tilings import Geometry
from tilings.profiles import PRESETS as MOLMO_PRESETS

# The Molmo scheme's presets (other schemes have their own tests).
MOLMO = list(MOLMO_PRESETS)

Counts = tuple[int, tuple[int, int, int, int], int]


@pytest.fixture(scope="session")
def processors() -> dict[str, object]:
    """`Molmo2ImageProcessor` configured to each preset (for molmo-v1: 336 px, 12 crops)."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("torchvision")  # the processor's backend
    return {name: transformers.Molmo2ImageProcessor(**p.processor_kwargs()) for name, p in MOLMO_PRESETS.items()}


def _processor_counts(processor: object, height: int, width: int) -> Counts:
    grid, crops = processor.get_image_grid_and_crops(height, width)
    return crops, tuple(int(g) for g in grid), processor.get_number_of_image_patches(height, width)


def _predicted_counts(geo: Geometry) -> Counts:
    return geo.crops, (*geo.low_res_grid, *geo.high_res_grid), geo.image_tokens


@pytest.fixture(scope="session")
def processor_counts() -> Callable[[object, int, int], Counts]:
    """(crops, image_grids row, pooled token count) from the processor's own size arithmetic."""
    return _processor_counts


@pytest.fixture(scope="session")
def predicted_counts() -> Callable[[Geometry], Counts]:
    """The same triple as `processor_counts`, from a `tilings.Geometry`."""
    return _predicted_counts
