"""Profiles: the presets, their derived sizes, validation and reading preprocessor configs."""

from __future__ import annotations

import dataclasses
import json

import pytest

from tilings import PROFILES, Profile, get_profile
from tilings.profiles import PRESETS as MOLMO_PRESETS

# The Molmo scheme's presets (other schemes have their own tests).
MOLMO = list(MOLMO_PRESETS)

# Key names and values of Molmo-7B-D-0924's remote-code preprocessor_config.json.
MOLMO_V1_CONFIG = {
    "auto_map": {"AutoImageProcessor": "image_preprocessing_molmo.MolmoImageProcessor"},
    "base_image_input_size": [336, 336],
    "do_normalize": True,
    "image_padding_mask": True,
    "image_patch_size": 14,
    "image_processor_type": "MolmoImageProcessor",
    "image_token_length_h": 12,
    "image_token_length_w": 12,
    "max_crops": 12,
    "overlap_margins": [4, 4],
}

# Molmo2's processor config: the image processor's keys plus the token-layout flags of Molmo2-8B.
MOLMO2_CONFIG = {
    "image_processor_type": "Molmo2ImageProcessor",
    "size": {"height": 378, "width": 378},
    "max_crops": 8,
    "overlap_margins": [4, 4],
    "patch_size": 14,
    "pooling_size": [2, 2],
    "image_use_col_tokens": True,
    "use_single_crop_col_tokens": False,
    "use_single_crop_start_token": True,
}


def test_presets_hold_the_published_numbers():
    v1, m2 = PROFILES["molmo-v1"], PROFILES["molmo2"]
    assert (v1.crop_size, v1.patch_size, v1.overlap_margins, v1.max_crops, v1.pooling) == (336, 14, (4, 4), 12, (2, 2))
    assert (v1.high_res_col_tokens, v1.low_res_col_tokens, v1.low_res_start_token) == (True, True, False)
    assert (m2.crop_size, m2.patch_size, m2.overlap_margins, m2.max_crops, m2.pooling) == (378, 14, (4, 4), 8, (2, 2))
    assert (m2.high_res_col_tokens, m2.low_res_col_tokens, m2.low_res_start_token) == (True, False, True)
    assert all(name == p.name for name, p in ((n, PROFILES[n]) for n in MOLMO))


def test_derived_sizes_match_the_design_figures():
    v1 = PROFILES["molmo-v1"]
    # Molmo v1: 24 patches a crop, 16 of them not overlapped: W = 224 px, M = 112 px.
    assert (v1.crop_patches, v1.window_patches, v1.window_size, v1.margin_size) == (24, 16, 224, 112)
    assert v1.low_res_grid == (12, 12)
    m2 = PROFILES["molmo2"]
    assert (m2.crop_patches, m2.window_size, m2.margin_size, m2.low_res_grid) == (27, 266, 112, (14, 14))


def test_profiles_are_frozen_and_hashable():
    p = PROFILES["molmo2"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.max_crops = 3  # type: ignore[misc]
    assert {p: 1}[dataclasses.replace(p)] == 1


def test_lists_become_tuples():
    p = dataclasses.replace(PROFILES["molmo2"], overlap_margins=[2, 2], pooling=[3, 3])
    assert p.overlap_margins == (2, 2) and p.pooling == (3, 3)
    hash(p)


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"crop_size": 0}, "crop_size"),
        ({"patch_size": -14}, "patch_size"),
        ({"max_crops": 2.5}, "max_crops"),
        ({"overlap_margins": (4,)}, "overlap_margins"),
        ({"overlap_margins": (-1, 4)}, "overlap_margins"),
        ({"overlap_margins": (12, 12)}, "margins"),
        ({"pooling": (2, 0)}, "pooling"),
        ({"pooling": (2, 2, 2)}, "pooling"),
    ],
)
def test_bad_profiles_are_refused(change, needle):
    with pytest.raises(ValueError, match=needle):
        dataclasses.replace(PROFILES["molmo-v1"], **change)


def test_get_profile_by_name_and_unknown_name():
    assert get_profile("molmo-v1") is PROFILES["molmo-v1"]
    assert get_profile(PROFILES["molmo2"]) is PROFILES["molmo2"]
    with pytest.raises(ValueError, match=r"'molmo3'.*molmo-v1, molmo2"):
        get_profile("molmo3")


def test_processor_default_is_the_molmo2_preset():
    """transformers' Molmo2ImageProcessor defaults are Molmo2-8B's numbers, so they must equal the preset's."""
    transformers = pytest.importorskip("transformers")
    default = transformers.Molmo2ImageProcessor()
    got = {
        "size": {"height": default.size["height"], "width": default.size["width"]},
        "max_crops": default.max_crops,
        "overlap_margins": list(default.overlap_margins),
        "patch_size": default.patch_size,
        "pooling_size": list(default.pooling_size),
    }
    assert got == PROFILES["molmo2"].processor_kwargs()


@pytest.mark.parametrize("name", MOLMO)
def test_processor_kwargs_configure_the_real_processor(name, processors):
    proc, p = processors[name], PROFILES[name]
    assert (proc.size["height"], proc.size["width"]) == (p.crop_size, p.crop_size)
    assert (proc.max_crops, tuple(proc.overlap_margins), proc.patch_size, tuple(proc.pooling_size)) == (
        p.max_crops, p.overlap_margins, p.patch_size, p.pooling)


def test_from_molmo_v1_config_dict_and_file(tmp_path):
    assert Profile.from_preprocessor_config(MOLMO_V1_CONFIG) == PROFILES["molmo-v1"]
    path = tmp_path / "preprocessor_config.json"
    path.write_text(json.dumps(MOLMO_V1_CONFIG))
    assert Profile.from_preprocessor_config(path) == PROFILES["molmo-v1"]
    assert Profile.from_preprocessor_config(str(path)) == PROFILES["molmo-v1"]


def test_from_molmo2_config_dict_and_file(tmp_path):
    assert Profile.from_preprocessor_config(MOLMO2_CONFIG) == PROFILES["molmo2"]
    path = tmp_path / "preprocessor_config.json"
    path.write_text(json.dumps(MOLMO2_CONFIG))
    assert Profile.from_preprocessor_config(path) == PROFILES["molmo2"]


def test_config_values_differ_from_presets():
    v1 = Profile.from_preprocessor_config({**MOLMO_V1_CONFIG, "max_crops": 6, "overlap_margins": [2, 2]})
    assert (v1.max_crops, v1.overlap_margins, v1.crop_size, v1.low_res_col_tokens) == (6, (2, 2), 336, True)
    assert v1.name == "molmo-v1-custom"
    m2 = Profile.from_preprocessor_config({**MOLMO2_CONFIG, "size": {"height": 224, "width": 224},
                                          "pooling_size": [3, 3], "use_single_crop_col_tokens": True,
                                          "use_single_crop_start_token": False})
    assert (m2.crop_size, m2.pooling, m2.low_res_col_tokens, m2.low_res_start_token) == (224, (3, 3), True, False)
    assert m2.name == "molmo2-custom"


def test_low_res_col_tokens_fall_back_to_the_high_res_setting():
    """The processor reads use_single_crop_col_tokens=None as 'same as image_use_col_tokens'."""
    on = Profile.from_preprocessor_config({**MOLMO2_CONFIG, "use_single_crop_col_tokens": None})
    off = Profile.from_preprocessor_config({**MOLMO2_CONFIG, "image_use_col_tokens": False,
                                            "use_single_crop_col_tokens": None})
    assert (on.high_res_col_tokens, on.low_res_col_tokens) == (True, True)
    assert (off.high_res_col_tokens, off.low_res_col_tokens) == (False, False)


def test_nested_processor_config_is_read():
    nested = {"image_processor": {k: MOLMO2_CONFIG[k] for k in ("size", "max_crops", "patch_size", "pooling_size")},
              "image_use_col_tokens": True, "use_single_crop_col_tokens": True}
    p = Profile.from_preprocessor_config({**nested, "image_processor": {**nested["image_processor"], "max_crops": 5}})
    assert (p.max_crops, p.crop_size, p.low_res_col_tokens) == (5, 378, True)


def test_overrides_win_and_unknown_overrides_are_refused():
    p = Profile.from_preprocessor_config(MOLMO2_CONFIG, max_crops=4, name="mine")
    assert (p.name, p.max_crops, p.crop_size) == ("mine", 4, 378)
    assert Profile.from_preprocessor_config(MOLMO2_CONFIG, max_crops=4).name == "molmo2-custom"
    with pytest.raises(ValueError, match=r"max_crop\b.*allowed: name, crop_size"):
        Profile.from_preprocessor_config(MOLMO2_CONFIG, max_crop=4)


@pytest.mark.parametrize("name", MOLMO)
@pytest.mark.parametrize("change", [{}, {"max_crops": 5}, {"overlap_margins": (2, 2)}])
def test_round_trip_through_the_real_processors_saved_config(name, change, tmp_path):
    """A config written by transformers' own save_pretrained reads back as the profile that wrote it."""
    transformers = pytest.importorskip("transformers")
    profile = dataclasses.replace(PROFILES[name], **change)
    transformers.Molmo2ImageProcessor(**profile.processor_kwargs()).save_pretrained(tmp_path)
    # The image processor's file has no token-layout flags; those come from the family's preset.
    back = Profile.from_preprocessor_config(tmp_path / "preprocessor_config.json",
                                            high_res_col_tokens=profile.high_res_col_tokens,
                                            low_res_col_tokens=profile.low_res_col_tokens,
                                            low_res_start_token=profile.low_res_start_token)
    assert dataclasses.replace(back, name=profile.name) == profile


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ({"do_normalize": True}, "none of the Molmo v1 keys"),
        ({**MOLMO2_CONFIG, "image_patch_size": 14}, "mixes"),
        ({**MOLMO2_CONFIG, "size": {"height": 378, "width": 336}}, "square"),
        ({**MOLMO2_CONFIG, "size": "big"}, "'size'"),
        ({**MOLMO2_CONFIG, "pooling_size": [2]}, "pooling_size"),
        ({**MOLMO_V1_CONFIG, "image_token_length_w": 13}, "image_token_length_w=13"),
        ({**MOLMO_V1_CONFIG, "base_image_input_size": [336, 378]}, "square"),
        ({**MOLMO_V1_CONFIG, "max_crops": 0}, "max_crops"),
    ],
)
def test_bad_configs_are_refused(config, needle):
    with pytest.raises(ValueError, match=needle):
        Profile.from_preprocessor_config(config)


def test_unreadable_config_files_are_refused(tmp_path):
    with pytest.raises(ValueError, match="cannot read"):
        Profile.from_preprocessor_config(tmp_path / "missing.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a JSON object"):
        Profile.from_preprocessor_config(tmp_path / "list.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="cannot read"):
        Profile.from_preprocessor_config(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="dict or a JSON path"):
        Profile.from_preprocessor_config(42)  # type: ignore[arg-type]
