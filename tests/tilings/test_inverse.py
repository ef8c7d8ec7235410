"""Inverse: tiling -> exact resolution (round trip through select_tiling), crop count -> tilings."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tilings import (
    PROFILES,
    Profile,
    Tiling,
    candidate_tilings,
    geometry,
    resolution_for,
    select_tiling,
    tilings_for_crops,
)
from tilings.profiles import PRESETS as MOLMO_PRESETS

# The Molmo scheme's presets (other schemes have their own tests).
MOLMO = list(MOLMO_PRESETS)

# Deterministic: the same examples on every run and in CI.
DETERMINISTIC = settings(derandomize=True, max_examples=300, deadline=None, database=None)


def test_molmo_v1_row_of_k_is_336_by_224k_plus_112():
    v1 = PROFILES["molmo-v1"]
    assert [resolution_for((1, k), v1) for k in range(1, 13)] == [(336, 224 * k + 112) for k in range(1, 13)]
    assert resolution_for(Tiling(2, 4), v1) == (560, 1008)
    assert resolution_for((1, 1), "molmo2") == (378, 378)  # a 1x1 canvas is one crop


@pytest.mark.parametrize("name", MOLMO)
def test_every_tiling_round_trips_exhaustively(name):
    p = PROFILES[name]
    for tiling in candidate_tilings(p.max_crops):
        h, w = resolution_for(tiling, p)
        g = geometry(h, w, p)
        assert (g.tiling, g.canvas, g.crops) == (tiling, (h, w), tiling.rows * tiling.cols + 1), (name, tiling)


@st.composite
def profile_and_tiling(draw) -> tuple[Profile, Tiling]:
    base = draw(st.sampled_from([PROFILES[n] for n in MOLMO]))
    tiling = draw(st.sampled_from(candidate_tilings(base.max_crops)))
    return base, tiling


@DETERMINISTIC
@given(profile_and_tiling())
def test_round_trip_property_on_the_presets(pt):
    profile, tiling = pt
    assert select_tiling(*resolution_for(tiling, profile), profile) == tiling


@st.composite
def any_profile_and_tiling(draw) -> tuple[Profile, Tiling]:
    """Profiles beyond the presets: other patch and crop sizes, margins, crop limits and pooling."""
    patch = draw(st.integers(1, 32))
    crop_patches = draw(st.integers(2, 64))
    left = draw(st.integers(0, (crop_patches - 1) // 2))
    right = draw(st.integers(0, crop_patches - 1 - left))
    profile = Profile(
        name="drawn", crop_size=crop_patches * patch + draw(st.integers(0, patch - 1)), patch_size=patch,
        overlap_margins=(left, right), max_crops=draw(st.integers(1, 40)),
        pooling=(draw(st.integers(1, 4)), draw(st.integers(1, 4))),
        high_res_col_tokens=True, low_res_col_tokens=False, low_res_start_token=True,
    )
    return profile, draw(st.sampled_from(candidate_tilings(profile.max_crops)))


@DETERMINISTIC
@given(any_profile_and_tiling())
def test_round_trip_property_on_any_profile(pt):
    profile, tiling = pt
    h, w = resolution_for(tiling, profile)
    assert select_tiling(h, w, profile) == tiling
    assert geometry(h, w, profile).canvas == (h, w)


@DETERMINISTIC
@given(st.sampled_from(MOLMO), st.integers(1, 20_000), st.integers(1, 20_000))
def test_any_image_lands_on_the_canvas_of_its_tiling(name, h, w):
    g = geometry(h, w, name)
    assert resolution_for(g.tiling, name) == g.canvas
    assert select_tiling(*g.canvas, name) == g.tiling


@pytest.mark.parametrize(
    ("tiling", "needle"),
    [
        ((1, 13), r"1x13 has 14 crops \(13 tiles \+ the global crop\), over the 13 of profile 'molmo-v1' "
                  r"\(max_crops 12 tiles \+ the global crop\); pick rows\*cols in 1\.\.12"),
        ((4, 4), "4x4 has 17 crops"),
        ((0, 2), "tiling rows must be a positive integer, got 0"),
        ((2, -1), "tiling cols must be a positive integer, got -1"),
        ((1.0, 2), "tiling rows must be a positive integer, got 1.0"),
        ("1x2", "pair"),
        ((1, 2, 3), "pair"),
        (3, "pair"),
    ],
)
def test_bad_tilings_are_refused(tiling, needle):
    with pytest.raises(ValueError, match=needle):
        resolution_for(tiling, "molmo-v1")


def test_a_tiling_valid_for_one_profile_can_be_over_anothers_limit():
    assert resolution_for((1, 12), "molmo-v1") == (336, 2800)
    with pytest.raises(ValueError, match="max_crops 8"):
        resolution_for((1, 12), "molmo2")


@pytest.mark.parametrize("name", MOLMO)
def test_tilings_for_crops_lists_every_factorisation(name):
    p = PROFILES[name]
    for n in range(2, p.max_crops + 2):
        tiles = n - 1
        want = [Tiling(r, tiles // r) for r in range(1, tiles + 1) if tiles % r == 0]
        assert tilings_for_crops(n, p) == want, n
        assert all(geometry(*resolution_for(t, p), p).crops == n for t in want)


def test_crops_and_tokens_are_different_axes():
    v1 = PROFILES["molmo-v1"]
    tokens = {t: geometry(*resolution_for(t, v1), v1).image_tokens for t in tilings_for_crops(9, v1)}
    assert set(tokens) == {(1, 8), (2, 4), (4, 2), (8, 1)}
    assert tokens[(1, 8)] == 960 and tokens[(2, 4)] == 864


@pytest.mark.parametrize(("n", "name", "needle"), [
    (1, "molmo-v1", "crop count 1 is unreachable.*from 2 to 13"),
    (14, "molmo-v1", "crop count 14 is unreachable.*from 2 to 13"),
    (10, "molmo2", "crop count 10 is unreachable with profile 'molmo2'.*from 2 to 9"),
    (0, "molmo2", "crop count 0 is unreachable with profile 'molmo2'.*from 2 to 9"),
    (3.0, "molmo2", "crop count must be an integer from 2 to 9 with profile 'molmo2', got 3.0"),
    ("3", "molmo2", "crop count must be an integer from 2 to 9.*got '3'"),
])
def test_unreachable_crop_counts_are_refused(n, name, needle):
    with pytest.raises(ValueError, match=needle):
        tilings_for_crops(n, name)


def test_custom_profile_limits_apply():
    small = dataclasses.replace(PROFILES["molmo2"], max_crops=3, name="small")
    assert tilings_for_crops(4, small) == [(1, 3), (3, 1)]
    with pytest.raises(ValueError, match="from 2 to 4"):
        tilings_for_crops(5, small)
