"""Every registered scheme keeps the one contract (`tilings.scheme.Scheme`), whatever its kernel.

Each scheme's own file checks it against its real transformers processor; this
file checks what everything above `tilings` relies on, for all of them alike:
the inverse round trip on every target, family points that give their target,
stored dicts that read back, and one-line errors for what cannot be reached.
"""

from __future__ import annotations

import pytest

from tilesweep.errors import UsageError
from tilings import (
    BUDGET,
    GRID,
    PROFILES,
    Scheme,
    Tiling,
    crop_counts,
    enumerate_tilings,
    get_profile,
    resolution_for,
    scheme_from_dict,
    tiling_geometry,
    tilings_for_crops,
    tilings_for_tokens,
)
from tilings.overrides import configured, overrides_text, parse_overrides, point_geometry, processor_overrides

NAMES = list(PROFILES)


def test_the_registry_holds_every_family_of_schemes():
    assert {"molmo-v1", "molmo2", "internvl3", "llava-onevision"} <= set(NAMES)
    assert all(isinstance(s, Scheme) and s.name == n for n, s in PROFILES.items())


@pytest.mark.parametrize("name", NAMES)
def test_every_target_round_trips(name):
    scheme = PROFILES[name]
    targets = scheme.targets()
    assert targets and len(set(targets)) == len(targets)
    for t in targets:
        h, w = resolution_for(t, scheme)
        g = point_geometry(scheme, t, h, w)  # scheme.geometry(h, w) with the target's processor overrides, if any
        assert g.tiling == t, f"{name}: {t} -> {h}x{w} -> {g.tiling}"
        assert g == scheme.target_geometry(t) == tiling_geometry(t, name)
        assert g.crops >= 1 and g.image_tokens >= 1 and g.sequence_tokens >= g.image_tokens
        assert g.encoder_patches >= g.crops  # at least one patch per image the encoder runs on
        if scheme.kind == BUDGET:
            assert g.crops == 1


@pytest.mark.parametrize("name", NAMES)
def test_family_points_give_their_targets(name):
    scheme = PROFILES[name]
    assert set(scheme.default_families) <= set(scheme.families)
    for family in scheme.families:
        tilings = scheme.family_tilings(family)
        points = scheme.points(family)
        assert tilings and {t for t, _ in points} == set(tilings)
        for t, (h, w) in points:
            assert point_geometry(scheme, t, h, w).tiling == t, f"{name} {family}: {h}x{w}"
    labelled = enumerate_tilings(name)
    assert {f for _, f in labelled} <= set(scheme.default_families)


@pytest.mark.parametrize("name", NAMES)
def test_processor_overrides_are_json_and_configure_the_scheme(name):
    """Most schemes need none (their geometry is the processor at its own settings); a scheme that does gives each
    target JSON settings that configure it to that target, and takes back what it gave."""
    scheme = PROFILES[name]
    for t in scheme.targets():
        overrides = processor_overrides(scheme, t)
        assert parse_overrides(overrides_text(overrides)) == overrides
        if not overrides:
            assert configured(scheme, overrides) is scheme
        else:
            assert configured(scheme, overrides).geometry(*resolution_for(t, scheme)).tiling == t


@pytest.mark.parametrize("name", NAMES)
def test_the_stored_dict_reads_back_as_the_same_scheme(name):
    scheme = PROFILES[name]
    data = scheme.to_dict()
    assert scheme_from_dict(data) == scheme
    assert ("scheme" in data) == (name not in ("molmo-v1", "molmo2"))  # Molmo's dicts predate schemes


@pytest.mark.parametrize("name", NAMES)
def test_crop_and_token_counts_invert(name):
    scheme = get_profile(name)
    if scheme.kind == GRID:
        for n in crop_counts(scheme):
            found = tilings_for_crops(n, scheme)
            assert found and all(scheme.target_geometry(t).crops == n for t in found)
    else:
        with pytest.raises(UsageError, match="has no crops to choose"):
            tilings_for_crops(2, scheme)
    tokens = scheme.target_geometry(scheme.targets()[0]).image_tokens
    assert all(scheme.target_geometry(t).image_tokens == tokens for t in tilings_for_tokens(tokens, scheme))


@pytest.mark.parametrize("name", NAMES)
def test_unreachable_targets_are_one_line_errors(name):
    scheme = PROFILES[name]
    far = Tiling(1, 100_000)
    assert not scheme.is_reachable(far)
    with pytest.raises(UsageError) as info:
        resolution_for(far, scheme)
    assert "\n" not in str(info.value) and "100000" in str(info.value)


@pytest.mark.parametrize("config, scheme_class", [
    ({"image_processor_type": "GotOcr2ImageProcessor", "size": {"height": 448, "width": 448}, "max_patches": 6,
      "processor_class": "InternVLProcessor"}, "ClosestAspect"),
    ({"image_processor_type": "LlavaOnevisionImageProcessor", "size": {"height": 384, "width": 384},
      "crop_size": {"height": 384, "width": 384}, "image_grid_pinpoints": [[384, 384], [384, 768], [768, 384]]},
     "Pinpoints"),
    ({"image_processor_type": "Qwen2VLImageProcessor", "patch_size": 16, "merge_size": 2, "temporal_patch_size": 2,
      "size": {"shortest_edge": 65536, "longest_edge": 16777216}}, "PixelBudget"),
    ({"size": {"height": 378, "width": 378}, "max_crops": 4, "patch_size": 14, "pooling_size": [2, 2],
      "overlap_margins": [4, 4]}, "Profile"),
])
def test_a_preprocessor_config_path_reads_into_its_own_scheme(tmp_path, config, scheme_class):
    import json

    import tilings

    path = tmp_path / "preprocessor_config.json"
    path.write_text(json.dumps(config))
    scheme = tilings.resolve_profile(str(path))
    assert type(scheme).__name__ == scheme_class
    if scheme_class == "ClosestAspect":
        assert scheme.max_crops == 6 and scheme.tile_size == 448
    elif scheme_class == "Pinpoints":
        assert set(scheme.targets()) == {(1, 1), (1, 2), (2, 1)}
    elif scheme_class == "PixelBudget":
        assert (scheme.patch_size, scheme.min_pixels, scheme.max_pixels) == (16, 65536, 16777216)
    else:
        assert scheme.max_crops == 4
