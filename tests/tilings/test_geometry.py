"""geometry: crops, canvas, pooled image tokens and the processor's full token layout."""

from __future__ import annotations

import dataclasses
import re
from types import SimpleNamespace

import pytest

from tilings import PROFILES, Geometry, Tiling, enumerate_tilings, geometry, resolution_for, tiling_geometry
from tilings.profiles import PRESETS as MOLMO_PRESETS

# The Molmo scheme's presets (other schemes have their own tests).
MOLMO = list(MOLMO_PRESETS)

TOKEN = re.compile(r"<[a-z_]+>")


def processor_token_string(profile, grid) -> str:
    """The image's token string from transformers' own Molmo2Processor.replace_image_token.

    The method reads only the three layout flags from the processor, so it runs on a
    namespace carrying them; building a full processor would need a tokenizer from a
    model hub. Molmo v1's layout is the same method with column tokens on both views
    and ``<im_start>`` opening the low-res view.
    """
    module = pytest.importorskip("transformers.models.molmo2.processing_molmo2")
    flags = SimpleNamespace(
        image_use_col_tokens=profile.high_res_col_tokens,
        use_single_crop_col_tokens=profile.low_res_col_tokens,
        use_single_crop_start_token=profile.low_res_start_token,
    )
    return module.Molmo2Processor.replace_image_token(flags, {"image_grids": [list(grid)]}, 0)


def test_design_figures_same_crops_different_tokens():
    v1 = PROFILES["molmo-v1"]
    a, b = geometry(336, 1904, v1), geometry(560, 1008, v1)
    assert (a.tiling, a.crops, a.canvas, a.image_tokens) == ((1, 8), 9, (336, 1904), 960)
    assert (b.tiling, b.crops, b.canvas, b.image_tokens) == ((2, 4), 9, (560, 1008), 864)


def test_geometry_is_a_record_of_the_agreed_fields():
    g = geometry(378, 378, "molmo2")
    assert isinstance(g, Geometry) and isinstance(g.tiling, Tiling)
    assert Geometry._fields == ("tiling", "crops", "canvas", "image_tokens", "sequence_tokens",
                                "low_res_grid", "high_res_grid", "encoder_patches")
    # 378 px = 27 patches, pooled 2x2 with padding: 14x14 on both views of a 1x1 tiling; the
    # encoder sees 27x27 patches in each of the two crops.
    assert g == (Tiling(1, 1), 2, (378, 378), 392, g.sequence_tokens, (14, 14), (14, 14), 2 * 27 * 27)


def test_canvas_is_the_tiling_window_plus_margin():
    v1 = PROFILES["molmo-v1"]
    for rows, cols in [(1, 1), (3, 4), (12, 1)]:
        g = tiling_geometry(Tiling(rows, cols), v1)
        assert g.canvas == (rows * 224 + 112, cols * 224 + 112)
        # The high-res grid pools the canvas's patches 2x2, rounding up.
        assert g.high_res_grid == (-(-(g.canvas[0] // 14) // 2), -(-(g.canvas[1] // 14) // 2))


def test_a_resized_image_takes_the_geometry_of_its_tiling():
    v1 = PROFILES["molmo-v1"]
    g = geometry(1000, 3000, v1)
    assert g == tiling_geometry(g.tiling, v1)
    assert g.canvas == resolution_for(g.tiling, v1) != (1000, 3000)


@pytest.mark.parametrize("name", MOLMO)
def test_sequence_tokens_count_the_processors_token_string(name):
    p = PROFILES[name]
    for tiling, _ in enumerate_tilings(p, ["all"]):
        g = tiling_geometry(tiling, p)
        tokens = TOKEN.findall(processor_token_string(p, (*g.low_res_grid, *g.high_res_grid)))
        assert g.sequence_tokens == len(tokens), (name, tiling)
        assert g.image_tokens == tokens.count("<im_patch>"), (name, tiling)


@pytest.mark.parametrize("name", MOLMO)
def test_the_low_res_view_opens_with_the_profiles_start_token(name):
    p = PROFILES[name]
    g = tiling_geometry(Tiling(1, 2), p)
    tokens = TOKEN.findall(processor_token_string(p, (*g.low_res_grid, *g.high_res_grid)))
    assert tokens[0] == ("<low_res_im_start>" if p.low_res_start_token else "<im_start>")
    low_cols = tokens[: tokens.index("<im_end>")].count("<im_col>")
    assert low_cols == (g.low_res_grid[0] if p.low_res_col_tokens else 0)


def test_column_tokens_make_the_layouts_differ():
    """Same grid, the v1 layout adds one column token per low-res row (12 of them)."""
    v1 = PROFILES["molmo-v1"]
    no_low_cols = tiling_geometry(Tiling(1, 4), dataclasses.replace(v1, low_res_col_tokens=False))
    assert tiling_geometry(Tiling(1, 4), v1).sequence_tokens - no_low_cols.sequence_tokens == 12


@pytest.mark.parametrize("name", MOLMO)
def test_tokens_grow_with_crops_along_a_row(name):
    p = PROFILES[name]
    row = [tiling_geometry(Tiling(1, k), p) for k in range(1, p.max_crops + 1)]
    assert all(a.image_tokens < b.image_tokens for a, b in zip(row, row[1:]))
    assert all(a.sequence_tokens < b.sequence_tokens for a, b in zip(row, row[1:]))
    assert [g.crops for g in row] == list(range(2, p.max_crops + 2))


@pytest.mark.parametrize("bad", [(0, 10), (10, -3), (2.0, 10)])
def test_bad_sizes_are_refused(bad):
    with pytest.raises(ValueError, match="must be a positive integer"):
        geometry(*bad, "molmo2")
