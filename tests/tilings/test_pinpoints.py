"""Best-fit pinpoint scheme (LLaVA-OneVision anyres): agreement with the real processor and model, the inverse,
the unpad family, the preset, configs and errors.

transformers is the judge. Grids come from its ``select_best_resolution`` (the canvas) and the
model's ``get_anyres_image_grid_shape``; crops from the model's ``image_size_to_num_patches`` and
from running ``LlavaOnevisionImageProcessor(**scheme.processor_kwargs())`` on real PIL images;
image tokens from a real ``LlavaOnevisionProcessor`` built here offline with a word-level
tokenizer that holds ``<image>``/``<video>``: its ``_get_num_multimodal_tokens`` (the count that
its ``replace_image_token`` writes, strategy rule included) for the bulk, the whole processor
call (``<image>`` tokens counted in ``input_ids``) on real images, and the model's
``pack_image_features`` (called on a stand-in holding only a real ``LlavaOnevisionConfig``) for
the features it really packs. Numbers written in the tests were worked out by hand from the
processor's rule (arithmetic in the comments) or come from the survey and are checked against
transformers in the same test.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import random
import time
import types

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tilesweep.errors import UsageError
from tilings import GRID, PROFILES, Scheme, Tiling, enumerate_tilings, scheme_from_dict
from tilings.pinpoints import PRESETS, Pinpoints

ONEVISION = PRESETS["llava-onevision"]
SEED = 20240806
DETERMINISTIC = settings(derandomize=True, max_examples=200, deadline=None, database=None)

# Other settings of the same kernel, checked against transformers too: the "default" feature strategy (one token
# less), a tighter cap, a short pinpoint list in a shuffled order (selection ties go to the earlier pinpoint), and
# 336 px tiles with LLaVA-NeXT's pinpoint list (no 1x1).
VARIANTS = {
    "strategy-default": dataclasses.replace(ONEVISION, name="default", vision_feature_select_strategy="default"),
    "anyres-max-4": dataclasses.replace(ONEVISION, name="max4", anyres_max=4),
    "shuffled-few": dataclasses.replace(
        ONEVISION, name="few", pinpoints=((1152, 1152), (768, 384), (384, 384), (384, 1152), (768, 768), (1536, 768))
    ),
    "t336-next-list": Pinpoints(
        name="t336", tile_size=336, base_tokens=576,
        pinpoints=((336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008)),
    ),
}

# Survey (/work/shared/VLM-SCHEMES.md, Appendix A): grid -> (crops, image tokens) at the exact pinpoint.
SURVEY_EXACT = (
    "1x1:2/1485 1x2:3/2214 1x3:4/2943 1x4:5/3672 1x5:6/4401 1x6:7/5130 2x1:3/2241 2x2:5/3699 2x3:7/5157 "
    "2x4:9/6615 2x5:11/8073 2x6:13/7215 3x1:4/2997 3x2:7/5184 3x3:10/7371 3x4:13/7309 3x5:16/7239 3x6:19/7284 "
    "4x1:5/3753 4x2:9/6669 4x3:13/7332 4x4:17/7371 4x5:21/7281 4x6:25/7329 5x1:6/4509 5x2:11/8154 5x3:16/7281 "
    "5x4:21/7299 5x5:26/7209 5x6:31/7226 6x1:7/5265 6x2:13/7309 6x3:19/7341 6x4:25/7362 6x5:31/7241 6x6:37/7371"
)
# Survey: (height, width) -> (grid, image tokens) off the pinpoints.
SURVEY_SIZES = {
    (768, 1152): ((2, 3), 5157), (768, 1104): ((2, 3), 4941), (768, 1056): ((2, 3), 4833),
    (768, 1008): ((2, 3), 4617), (768, 960): ((2, 3), 4401), (768, 912): ((2, 3), 4293),
    (768, 864): ((2, 3), 4077), (768, 816): ((2, 3), 3861), (384, 384): ((1, 1), 1485),
    (200, 384): ((1, 1), 1149), (384, 100): ((1, 1), 945), (100, 100): ((1, 1), 1485),
    (899, 1024): ((3, 3), 6551),  # the transformers integration test's image: 10 crops
}

# A LLaVA-OneVision -hf checkpoint's preprocessor_config.json (the keys the image processor saves).
ONEVISION_CONFIG = {
    "crop_size": None,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_pad": True,
    "do_rescale": True,
    "do_resize": True,
    "image_grid_pinpoints": [[r * 384, c * 384] for r in range(1, 7) for c in range(1, 7)],
    "image_mean": [0.5, 0.5, 0.5],
    "image_processor_type": "LlavaOnevisionImageProcessor",
    "image_std": [0.5, 0.5, 0.5],
    "processor_class": "LlavaOnevisionProcessor",
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"height": 384, "width": 384},
}


# ----- transformers, the judge -----
def transformers_module():
    pytest.importorskip("torchvision")  # the image processor's backend
    return pytest.importorskip("transformers")


def modeling():
    transformers_module()
    from transformers.models.llava_onevision import modeling_llava_onevision

    return modeling_llava_onevision


@functools.lru_cache(maxsize=None)
def tokenizer():
    """A word-level tokenizer built here (no download): words ``w0..w9`` and the special ``<image>``, ``<video>``."""
    transformers = transformers_module()
    from tokenizers import Tokenizer, models, pre_tokenizers

    specials = ["<image>", "<video>", "<|endoftext|>"]
    vocab = {f"w{i}": i for i in range(10)} | {s: 10 + i for i, s in enumerate(specials)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="w0", eos_token="<|endoftext|>",
                                                additional_special_tokens=specials)


@functools.lru_cache(maxsize=None)
def llava_processor(scheme: Pinpoints):
    """The real ``LlavaOnevisionProcessor``: image processor from `processor_kwargs`, counting settings from
    `llava_processor_kwargs`."""
    transformers = transformers_module()
    return transformers.LlavaOnevisionProcessor(
        image_processor=transformers.LlavaOnevisionImageProcessor(**scheme.processor_kwargs()),
        video_processor=transformers.LlavaOnevisionVideoProcessor(),
        tokenizer=tokenizer(),
        **scheme.llava_processor_kwargs(),
    )


def reference(scheme: Pinpoints, sizes) -> list[tuple[Tiling, int, tuple[int, int], int]]:
    """(grid, crops, canvas, image tokens) of each size, every number from transformers' own code."""
    utils = pytest.importorskip("transformers.image_processing_utils")
    model = modeling()
    proc = llava_processor(scheme)
    pins = proc.image_processor.image_grid_pinpoints
    tile = proc.image_processor.size.height
    tokens = proc._get_num_multimodal_tokens(image_sizes=list(sizes))["num_image_tokens"]
    out = []
    for (h, w), n in zip(sizes, tokens):
        grid = Tiling(*model.get_anyres_image_grid_shape((h, w), pins, tile))
        crops = model.image_size_to_num_patches((h, w), pins, tile)
        out.append((grid, crops, tuple(utils.select_best_resolution((h, w), pins)), n))
    return out


def predicted(scheme: Pinpoints, sizes) -> list[tuple[Tiling, int, tuple[int, int], int]]:
    return [(g.tiling, g.crops, g.canvas, g.image_tokens) for g in (scheme.geometry(h, w) for h, w in sizes)]


def disagreements(scheme: Pinpoints, sizes) -> list[str]:
    want, got = reference(scheme, sizes), predicted(scheme, sizes)
    return [f"{h}x{w}: transformers {a}, tilings {b}" for (h, w), a, b in zip(sizes, want, got) if a != b]


def sample_sizes(scheme: Pinpoints, seed: int, n_random: int = 600) -> list[tuple[int, int]]:
    """Seeded sizes: ordinary, extreme aspect ratios, tiny, huge, every pinpoint and 1-2 px around it, half-way
    between pinpoints (in size and in aspect ratio), exact multiples of a pinpoint's ratio (effective-area ties),
    sizes whose unpadded side is a whole number of features (the processor's ``round(x, 7)``) and one side
    shrunk within a pinpoint (unpadding)."""
    rng = random.Random(seed)
    tile = scheme.tile_size
    pins = list(scheme.pinpoints)
    top = max(max(p) for p in pins)
    sizes = [(rng.randint(1, top + tile), rng.randint(1, top + tile)) for _ in range(n_random)]
    for _ in range(n_random // 4):  # extreme aspect ratios, both ways
        thin, long = rng.randint(1, 60), rng.randint(500, 100_000)
        sizes += [(thin, long), (long, thin)]
    sizes += [(rng.randint(1, tile), rng.randint(1, tile)) for _ in range(n_random // 3)]  # tiny
    sizes += [(rng.randint(top, 10**7), rng.randint(top, 10**7)) for _ in range(n_random // 10)]  # huge
    for h, w in pins:
        sizes += [(h + dh, w + dw) for dh in (-2, -1, 0, 1, 2) for dw in (-2, -1, 0, 1, 2)]  # on and around
        half = tile // 2
        sizes += [(h + half + d, w) for d in (-1, 0, 1)] + [(h, w + half + d) for d in (-1, 0, 1)]
        sizes += [(h + half + d, w + half + d) for d in (-1, 0, 1)]  # half-way to the next pinpoints
        g = math.gcd(h, w)
        sizes += [(h // g * u, w // g * u) for u in rng.sample(range(1, 3 * tile), 3)]  # the pinpoint's exact ratio
    for _ in range(150):  # half-way between two pinpoints
        (h1, w1), (h2, w2) = rng.sample(pins, 2)
        sizes.append(((h1 + h2) // 2, (w1 + w2) // 2))
    side = math.isqrt(scheme.base_tokens)
    for h, w in pins:  # the unpadded side a whole number of features, where h*(cw/w) can fall just below it
        rows, cols = side * h // tile, side * w // tile
        for _ in range(4):
            k, m = rng.randint(1, max(1, rows - 1)), rng.randint(1, 300)
            sizes.append((k * m, cols * m))
            k, m = rng.randint(1, max(1, cols - 1)), rng.randint(1, 300)
            sizes.append((rows * m, k * m))
    for _ in range(200):  # one side shrunk within a pinpoint
        h, w = rng.choice(pins)
        sizes.append((h, rng.randint(max(1, w - tile + 1), w)) if rng.random() < 0.5
                     else (rng.randint(max(1, h - tile + 1), h), w))
    return [(h, w) for h, w in sizes if h >= 1 and w >= 1]


def unpad_sizes(scheme: Pinpoints) -> list[tuple[int, int]]:
    return [hw for _, hw in scheme.points("unpad")]


def target_sizes(scheme: Pinpoints) -> list[tuple[int, int]]:
    return [scheme.resolution_for(t) for t in scheme.targets()]


# ----- agreement with transformers -----
def test_counts_agree_with_transformers_on_every_target_unpad_point_and_thousands_of_sizes():
    sizes = target_sizes(ONEVISION) + unpad_sizes(ONEVISION) + sample_sizes(ONEVISION, SEED)
    assert len(set(sizes)) >= 2000
    wrong = disagreements(ONEVISION, sizes)
    assert not wrong, f"{len(wrong)} of {len(sizes)} sizes disagree:\n" + "\n".join(wrong[:20])


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_counts_agree_with_transformers_for_other_settings(variant):
    scheme = VARIANTS[variant]
    sizes = target_sizes(scheme) + unpad_sizes(scheme) + sample_sizes(scheme, SEED + 1, n_random=200)
    wrong = disagreements(scheme, sizes)
    assert not wrong, f"{variant}: {len(wrong)} of {len(sizes)} sizes disagree:\n" + "\n".join(wrong[:20])


def processor_run(scheme: Pinpoints, height: int, width: int) -> tuple[int, tuple[int, int], list[int], int, int]:
    """Run the whole processor on one real PIL image in a one-image sample: (crops, crop size, image_sizes,
    <image> tokens, every other token). Rescaling and normalising are switched off at call time: they change
    pixel values only, never shapes or counts, and halve the run time; lists, not tensors, save one more copy."""
    from PIL import Image

    proc = llava_processor(scheme)
    image = Image.new("RGB", (width, height), (200, 40, 90))
    out = proc(text="w1 <image> w2", images=image, do_rescale=False, do_normalize=False)
    assert list(out["batch_num_images"]) == [1] and len(out["pixel_values"]) == 1
    ids = list(out["input_ids"][0])
    image_tokens = ids.count(proc.image_token_id)
    crops = out["pixel_values"][0]  # (crops, 3, T, T)
    return (crops.shape[0], tuple(crops.shape[-2:]), [int(v) for v in out["image_sizes"][0]], image_tokens,
            len(ids) - image_tokens)


def test_the_processor_on_real_images_makes_the_predicted_crops_and_image_tokens():
    rng = random.Random(SEED + 2)
    # every target and unpad point, and 140 of the seeded sizes (up to 0.6 MP, which still reach 5x2 and 6x1:
    # the processor's cost grows with the crops, about 15 ms each here)
    bulk = [(h, w) for h, w in sample_sizes(ONEVISION, SEED + 2, n_random=100) if h * w <= 600_000]
    sizes = target_sizes(ONEVISION) + unpad_sizes(ONEVISION) + rng.sample(bulk, 140)
    started, wrong = time.monotonic(), []
    for h, w in sizes:
        g = ONEVISION.geometry(h, w)
        # the text "w1 <image> w2" keeps its two words and nothing else: no start, end or separator tokens
        want = (g.crops, (384, 384), [h, w], g.image_tokens, 2)
        got = processor_run(ONEVISION, h, w)
        if got != want or g.sequence_tokens != g.image_tokens:
            wrong.append(f"{h}x{w}: processor (crops, crop, image_sizes, <image>, other) {got}, tilings {want}")
    assert len(sizes) >= 200
    assert not wrong, f"{len(wrong)} of {len(sizes)} real images disagree:\n" + "\n".join(wrong[:20])
    assert time.monotonic() - started < 120  # a guard on the file's run time, not a benchmark


@pytest.mark.parametrize("variant", ["strategy-default", "t336-next-list"])
def test_the_processor_on_real_images_for_other_settings(variant):
    scheme = VARIANTS[variant]
    tile = scheme.tile_size
    for h, w in target_sizes(scheme)[:5] + [(37, 2000), (500, 500), (tile * 2 - 5, tile + 9), (tile * 2, tile * 2 - 50)]:
        g = scheme.geometry(h, w)
        assert processor_run(scheme, h, w) == (g.crops, (tile, tile), [h, w], g.image_tokens, 2), (variant, h, w)


def test_the_model_packs_as_many_features_as_the_processor_writes():
    """``LlavaOnevisionModel.pack_image_features`` (unpadding, anyres_max cap, newlines) on feature maps of the
    predicted shape, for every target, every unpad point and a few hundred sizes."""
    torch = pytest.importorskip("torch")
    model = modeling()
    config = pytest.importorskip("transformers").LlavaOnevisionConfig(**ONEVISION.model_config_kwargs())
    assert (config.vision_config.image_size, config.vision_config.patch_size) == (384, 14)
    stand_in = types.SimpleNamespace(config=config)
    rng = random.Random(SEED + 3)
    sizes = target_sizes(ONEVISION) + unpad_sizes(ONEVISION) + rng.sample(sample_sizes(ONEVISION, SEED + 3), 300)
    wrong = []
    for h, w in sizes:
        g = ONEVISION.geometry(h, w)
        crops = model.image_size_to_num_patches((h, w), config.image_grid_pinpoints, config.vision_config.image_size)
        features = [torch.zeros(crops, g.encoder_patches // g.crops, 1)]
        _, lengths = model.LlavaOnevisionModel.pack_image_features(
            stand_in, features, torch.tensor([[h, w]]), image_newline=torch.zeros(1),
            vision_aspect_ratio=config.vision_aspect_ratio,
        )
        if (crops, int(lengths[0])) != (g.crops, g.image_tokens):
            wrong.append(f"{h}x{w}: model (crops, features) {(crops, int(lengths[0]))}, tilings {(g.crops, g.image_tokens)}")
    assert not wrong, f"{len(wrong)} of {len(sizes)} sizes disagree:\n" + "\n".join(wrong[:20])


def test_a_sample_of_two_images_is_not_anyres():
    """What the scheme does not describe: two images in one sample get one pad-to-square crop and base + 1 tokens
    each, whatever their size (so an input builder must send one image per sample)."""
    from PIL import Image

    proc = llava_processor(ONEVISION)
    images = [[Image.new("RGB", (1152, 768)), Image.new("RGB", (2304, 2304))]]
    out = proc(text="<image> <image>", images=images, return_tensors="pt", do_rescale=False, do_normalize=False)
    assert out["batch_num_images"].tolist() == [2]
    assert out["pixel_values"].shape[:2] == (2, 1)
    assert out["input_ids"][0].tolist().count(proc.image_token_id) == 2 * (729 + 1)
    assert ONEVISION.geometry(768, 1152).crops == 7  # the single-image geometry of the first one


def test_the_survey_numbers_hold_where_transformers_agrees():
    exact = {}
    for item in SURVEY_EXACT.split():
        grid, counts = item.split(":")
        crops, tokens = counts.split("/")
        exact[Tiling(*map(int, grid.split("x")))] = (int(crops), int(tokens))
    assert list(exact) == list(ONEVISION.targets())
    sizes = [ONEVISION.resolution_for(t) for t in exact]
    transformers_counts = [(crops, n) for _, crops, _, n in reference(ONEVISION, sizes)]
    assert transformers_counts == list(exact.values())
    assert [(ONEVISION.target_geometry(t).crops, ONEVISION.target_geometry(t).image_tokens) for t in exact] == list(
        exact.values())
    off = list(SURVEY_SIZES)
    assert [(tuple(g), n) for g, _, _, n in reference(ONEVISION, off)] == list(SURVEY_SIZES.values())
    assert [(tuple(g.tiling), g.image_tokens) for g in (ONEVISION.geometry(*hw) for hw in off)] == list(
        SURVEY_SIZES.values())


# ----- counts by hand -----
def test_geometry_counts_by_hand():
    # 768x816: pinpoint 768x1152 (2x3); 816/768 < 81/54, so columns unpad: int(round(816*(54/768), 7)) = 57,
    # padding (81-57)//2 = 12, 81-24 = 57 columns; 54*57/(9*729) < 1.21, no cap: 729 + 54*57 + 54 = 3861.
    assert ONEVISION.geometry(768, 816) == (Tiling(2, 3), 7, (768, 1152), 3861, 3861, None, None, 7 * 729)
    # 2304x2304: 162x162 features, ratio sqrt(26244/6561) = 2 -> 81x81 + 81 newlines + 729 = 7371.
    assert ONEVISION.geometry(2304, 2304)[:5] == (Tiling(6, 6), 37, (2304, 2304), 7371, 7371)
    # 800x800: 1152x1152 keeps all 640000 px (768x768 keeps 589824), the larger square ones waste more;
    # 81x81 features, ratio exactly 1: 729 + 6561 + 81 = 7371.
    assert ONEVISION.geometry(800, 800)[:4] == (Tiling(3, 3), 10, (1152, 1152), 7371)
    # 1x100000: every pinpoint keeps int(1*scale) = 0 rows, so the least waste wins: 384x384. Rows unpad to
    # int(round(27/100000, 7)) = 0, padding 13, 27-26 = 1 row of 27: 729 + 27 + 1 = 757.
    assert ONEVISION.geometry(1, 100_000)[:4] == (Tiling(1, 1), 2, (384, 384), 757)
    # 98x7938: pinpoint 384x2304 (1x6); 7938/98 = 81 > 162/27, so rows unpad: 98*(162/7938) is exactly 2 but the
    # float product is 1.9999999999999998, which round(., 7) makes 2; padding (27-2)//2 = 12, 27-24 = 3 rows of 162:
    # 729 + 486 + 3 = 1218 (int() without the rounding would give 1 row: 892).
    assert ONEVISION.geometry(98, 7938)[:4] == (Tiling(1, 6), 7, (384, 2304), 1218)
    # 1536x1537: one column over 1536x1536; 1536x1920 keeps it all (4x5, capped), 1536x1536 loses a few pixels.
    assert ONEVISION.geometry(1536, 1537).tiling == Tiling(4, 5)
    # the "default" strategy writes one token less
    assert VARIANTS["strategy-default"].geometry(768, 816).image_tokens == 3860


@pytest.mark.parametrize("size, needle", [
    ((0, 5), "height must be a positive integer"),
    ((5, -1), "width must be a positive integer"),
    ((1.5, 5), "height must be a positive integer"),
    ((True, 5), "height must be a positive integer"),
    ((5, 2**63), "below"),
])
def test_bad_sizes_are_refused_in_one_line(size, needle):
    with pytest.raises(UsageError, match=needle) as info:
        ONEVISION.geometry(*size)
    assert "\n" not in str(info.value)


# ----- the inverse -----
@DETERMINISTIC
@given(st.integers(1, 9), st.integers(1, 9))
def test_round_trip_property_on_the_preset(rows, cols):
    target = Tiling(rows, cols)
    if rows <= 6 and cols <= 6:  # the 36 pinpoints are 1..6 x 1..6 tiles of 384
        assert ONEVISION.is_reachable(target)
        size = ONEVISION.resolution_for(target)
        assert size == (rows * 384, cols * 384)
        geo = ONEVISION.geometry(*size)
        assert geo.tiling == target and geo.canvas == size and geo.crops == rows * cols + 1
        assert ONEVISION.target_geometry(target) == geo
    else:
        assert not ONEVISION.is_reachable(target)
        with pytest.raises(UsageError, match=f"tiling {rows}x{cols} is unreachable") as info:
            ONEVISION.resolution_for(target)
        assert "\n" not in str(info.value)


@st.composite
def any_scheme(draw) -> Pinpoints:
    """Pinpoint lists beyond the preset: any subset of 1..6 x 1..6 grids in any order, other tile sizes."""
    tile = draw(st.sampled_from([14, 28, 336, 384, 448]))
    grids = draw(st.lists(st.tuples(st.integers(1, 6), st.integers(1, 6)), min_size=1, max_size=12, unique=True))
    return Pinpoints(name="drawn", tile_size=tile, patch_size=14, base_tokens=(tile // 14) ** 2,
                     pinpoints=tuple((r * tile, c * tile) for r, c in grids),
                     anyres_max=draw(st.integers(1, 12)))


@DETERMINISTIC
@given(any_scheme(), st.integers(1, 7), st.integers(1, 7))
def test_round_trip_property_on_any_pinpoint_list_agrees_with_transformers(scheme, rows, cols):
    utils = pytest.importorskip("transformers.image_processing_utils")
    pins = [list(p) for p in scheme.pinpoints]
    target = Tiling(rows, cols)
    if (rows * scheme.tile_size, cols * scheme.tile_size) in scheme.pinpoints:
        size = scheme.resolution_for(target)
        assert scheme.geometry(*size).tiling == target
        assert tuple(utils.select_best_resolution(size, pins)) == size
    else:
        with pytest.raises(UsageError, match="unreachable"):
            scheme.resolution_for(target)
    for family in scheme.families:
        for t, size in scheme.points(family):
            assert scheme.geometry(*size).tiling == t, (family, t, size)
            assert tuple(utils.select_best_resolution(size, pins)) == (t.rows * scheme.tile_size,
                                                                       t.cols * scheme.tile_size)


@DETERMINISTIC
@given(st.sampled_from(ONEVISION.families))
def test_every_point_of_every_family_gives_its_target(family):
    points = ONEVISION.points(family)
    assert points
    for target, size in points:
        assert ONEVISION.is_reachable(target)
        assert ONEVISION.geometry(*size).tiling == target, (family, target, size)
    assert list(dict.fromkeys(t for t, _ in points)) == ONEVISION.family_tilings(family)


# ----- families -----
def test_families_list_the_pinpoint_grids_in_list_order():
    def grids(text):
        return [Tiling(*map(int, g.split("x"))) for g in text.split()]

    assert ONEVISION.families == ("1xk", "2xk", "kx1", "all", "unpad")
    assert ONEVISION.default_families == ("1xk", "2xk", "kx1")
    assert ONEVISION.family_tilings("1xk") == grids("1x1 1x2 1x3 1x4 1x5 1x6")
    assert ONEVISION.family_tilings("2xk") == grids("2x1 2x2 2x3 2x4 2x5 2x6")
    assert ONEVISION.family_tilings("kx1") == grids("1x1 2x1 3x1 4x1 5x1 6x1")
    assert ONEVISION.family_tilings("all") == [Tiling(r, c) for r in range(1, 7) for c in range(1, 7)]
    assert ONEVISION.family_tilings("unpad") == grids("1x1 2x2 2x3 3x2 3x3")
    few = VARIANTS["shuffled-few"]
    assert few.family_tilings("all") == grids("3x3 2x1 1x1 1x3 2x2 4x2")
    assert few.family_tilings("1xk") == grids("1x1 1x3")
    assert few.family_tilings("2xk") == grids("2x1 2x2")
    assert few.family_tilings("unpad") == grids("1x1 2x2 3x3")
    with pytest.raises(UsageError, match="unknown tiling family 'nope'.*unpad") as info:
        ONEVISION.family_tilings("nope")
    assert "\n" not in str(info.value)


def test_the_unpad_family_keeps_crops_and_lowers_tokens():
    points = ONEVISION.points("unpad")
    by_grid: dict[Tiling, list[tuple[int, int]]] = {}
    for target, size in points:
        by_grid.setdefault(target, []).append(size)
    assert len(by_grid) >= 3
    for target, sizes in by_grid.items():
        assert 4 <= len(sizes) <= 6
        assert sizes[0] == ONEVISION.resolution_for(target)  # starts at the pinpoint itself
        counts = reference(ONEVISION, sizes)  # transformers' own numbers
        assert {c[0] for c in counts} == {target} and {c[1] for c in counts} == {target.cells + 1}
        tokens = [c[3] for c in counts]
        assert all(a > b for a, b in zip(tokens, tokens[1:])), (target, sizes, tokens)
        assert [ONEVISION.geometry(*s).image_tokens for s in sizes] == tokens
        # one side shrinks, the other stays the pinpoint's
        assert len({s[0] for s in sizes}) == 1 or len({s[1] for s in sizes}) == 1
    # the survey's 2x3 ladder: 768 x 1152 .. 960 in steps of 48 px
    assert [(s, ONEVISION.geometry(*s).image_tokens) for s in by_grid[Tiling(2, 3)]] == [
        ((768, 1152), 5157), ((768, 1104), 4941), ((768, 1056), 4833), ((768, 1008), 4617), ((768, 960), 4401)]
    # 3x2 shrinks the height: the other branch of unpadding (rows removed)
    assert by_grid[Tiling(3, 2)] == [(1152, 768), (1104, 768), (1056, 768), (1008, 768), (960, 768)]
    assert enumerate_tilings("llava-onevision", ["unpad"]) == [(t, "unpad") for t in by_grid]


# ----- the scheme, the preset and processor settings -----
def test_the_scheme_interface():
    assert isinstance(ONEVISION, Scheme)
    assert ONEVISION.kind == GRID
    assert PROFILES["llava-onevision"] is ONEVISION
    assert ONEVISION.max_crops == 36
    assert VARIANTS["shuffled-few"].max_crops == 9
    assert VARIANTS["t336-next-list"].targets() == (Tiling(1, 2), Tiling(2, 1), Tiling(2, 2), Tiling(3, 1),
                                                    Tiling(1, 3))


def test_the_preset_holds_transformers_onevision_defaults():
    transformers = transformers_module()
    default_processor = transformers.LlavaOnevisionImageProcessor()
    config = transformers.LlavaOnevisionConfig()
    assert [list(p) for p in ONEVISION.pinpoints] == default_processor.image_grid_pinpoints == config.image_grid_pinpoints
    assert ONEVISION.targets() == tuple(Tiling(h // 384, w // 384) for h, w in config.image_grid_pinpoints)
    assert (ONEVISION.tile_size, ONEVISION.tile_size) == (default_processor.size.height, default_processor.size.width)
    assert (ONEVISION.tile_size, ONEVISION.patch_size) == (config.vision_config.image_size,
                                                           config.vision_config.patch_size)
    assert ONEVISION.vision_feature_select_strategy == config.vision_feature_select_strategy == "full"
    assert ONEVISION.vision_aspect_ratio == config.vision_aspect_ratio == "anyres_max_9"
    assert ONEVISION.base_tokens == 27 * 27
    assert ONEVISION.target_geometry(Tiling(2, 2)).encoder_patches == 5 * 729


def test_processor_kwargs_configure_the_processor():
    transformers = transformers_module()
    for scheme in (ONEVISION, *VARIANTS.values()):
        proc = transformers.LlavaOnevisionImageProcessor(**scheme.processor_kwargs())
        tile = scheme.tile_size
        assert (proc.size.height, proc.size.width, proc.crop_size.height) == (tile, tile, tile)
        assert proc.image_grid_pinpoints == [list(p) for p in scheme.pinpoints]
        full = llava_processor(scheme)
        assert (full.num_image_tokens, full.vision_feature_select_strategy, full.vision_aspect_ratio) == (
            scheme.base_tokens, scheme.vision_feature_select_strategy, f"anyres_max_{scheme.anyres_max}")
        config = transformers.LlavaOnevisionConfig(**scheme.model_config_kwargs())
        assert config.image_grid_pinpoints == [list(p) for p in scheme.pinpoints]


@pytest.mark.parametrize("scheme", [ONEVISION, *VARIANTS.values()], ids=["preset", *VARIANTS])
def test_to_dict_round_trips_through_the_registry(scheme):
    data = scheme.to_dict()
    assert data["scheme"] == "pinpoints"
    restored = scheme_from_dict(json.loads(json.dumps(data)))
    assert restored == scheme and type(restored) is Pinpoints
    assert restored.geometry(1000, 3000) == scheme.geometry(1000, 3000)
    assert data["pinpoints"][0] == list(scheme.pinpoints[0])


def test_to_dict_holds_every_number():
    assert ONEVISION.to_dict() == {
        "scheme": "pinpoints", "name": "llava-onevision", "tile_size": 384, "patch_size": 14,
        "pinpoints": [[r * 384, c * 384] for r in range(1, 7) for c in range(1, 7)],
        "vision_feature_select_strategy": "full", "anyres_max": 9, "base_tokens": 729,
    }


def test_a_foreign_dict_is_refused():
    with pytest.raises(UsageError, match="'closest-aspect' is not 'pinpoints'"):
        Pinpoints.from_dict({**ONEVISION.to_dict(), "scheme": "closest-aspect"})
    with pytest.raises(UsageError, match="unknown Pinpoints key"):
        Pinpoints.from_dict({**ONEVISION.to_dict(), "max_crops": 9})


def test_from_preprocessor_config_reads_a_onevision_checkpoint(tmp_path):
    assert Pinpoints.from_preprocessor_config(ONEVISION_CONFIG) == ONEVISION
    path = tmp_path / "preprocessor_config.json"
    path.write_text(json.dumps(ONEVISION_CONFIG))
    assert Pinpoints.from_preprocessor_config(path) == ONEVISION
    assert Pinpoints.from_preprocessor_config(str(path)).name == "llava-onevision"
    # a combined processor_config.json: the image processor nested, the counting settings at the top
    combined = {"image_processor": ONEVISION_CONFIG, "num_image_tokens": 729,
                "vision_feature_select_strategy": "full", "vision_aspect_ratio": "anyres_max_9"}
    assert Pinpoints.from_preprocessor_config(combined) == ONEVISION
    other = {**combined, "vision_feature_select_strategy": "default", "vision_aspect_ratio": "anyres_max_4"}
    assert Pinpoints.from_preprocessor_config(other) == dataclasses.replace(
        ONEVISION, name="llava-onevision-custom", vision_feature_select_strategy="default", anyres_max=4)


def test_from_preprocessor_config_other_checkpoints_and_overrides():
    capped = Pinpoints.from_preprocessor_config(ONEVISION_CONFIG, anyres_max=4)
    assert (capped.anyres_max, capped.name) == (4, "llava-onevision-custom")
    assert capped.geometry(768, 1152).image_tokens == VARIANTS["anyres-max-4"].geometry(768, 1152).image_tokens
    named = Pinpoints.from_preprocessor_config(ONEVISION_CONFIG, name="mine", vision_feature_select_strategy="default")
    assert named == dataclasses.replace(VARIANTS["strategy-default"], name="mine")
    # 336 px tiles: base tokens follow the tile, (336 // 14)^2 = 576
    small = Pinpoints.from_preprocessor_config({"size": {"shortest_edge": 336}, "crop_size": {"height": 336,
                                                "width": 336}, "image_grid_pinpoints": [[336, 672], [672, 336]]})
    assert (small.tile_size, small.base_tokens, small.targets()) == (336, 576, (Tiling(1, 2), Tiling(2, 1)))
    assert small.name == "llava-onevision-custom"
    stated = Pinpoints.from_preprocessor_config({**ONEVISION_CONFIG, "vision_aspect_ratio": "anyres_max_16"})
    assert stated.anyres_max == 16


@pytest.mark.parametrize("config, overrides, needle", [
    ({**ONEVISION_CONFIG, "image_processor_type": "LlavaNextImageProcessor"}, {}, "not LlavaOnevisionImageProcessor"),
    ({"do_resize": True}, {}, "none of the LlavaOnevisionImageProcessor keys"),
    ({"size": {"height": 384, "width": 768}}, {}, "must be square"),
    ({"size": {"longest_edge": 384}}, {}, "'size' must be"),
    ({"size": {"height": 384, "width": 384}, "crop_size": {"height": 336, "width": 336}}, {}, "disagrees with size"),
    ({"image_grid_pinpoints": [[384, 500]]}, {}, r"not a multiple of tile_size 384"),
    ({"image_grid_pinpoints": [[384, 384], [384, 384]]}, {}, "listed twice"),
    ({"image_grid_pinpoints": []}, {}, "non-empty list"),
    ({**ONEVISION_CONFIG, "vision_aspect_ratio": "anyres"}, {}, "anyres_max_N"),
    (ONEVISION_CONFIG, {"max_patches": 9}, "unknown Pinpoints override"),
    (ONEVISION_CONFIG, {"base_tokens": 730}, r"not \(tile_size // patch_size\)\^2 = 729"),
    ("/nonexistent/preprocessor_config.json", {}, "cannot read preprocessor config"),
    ([1, 2], {}, "must be a dict or a JSON path"),
])
def test_bad_configs_are_refused_in_one_line(config, overrides, needle):
    with pytest.raises(UsageError, match=needle) as info:
        Pinpoints.from_preprocessor_config(config, **overrides)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("change, needle", [
    ({"name": ""}, "name must be a non-empty string"),
    ({"tile_size": 0}, "tile_size must be a positive integer"),
    ({"patch_size": 400}, "patch_size 400 is over tile_size 384"),
    ({"base_tokens": 576}, r"base_tokens 576 is not \(tile_size // patch_size\)\^2 = 729"),
    ({"vision_feature_select_strategy": "cls"}, "must be one of full, default"),
    ({"anyres_max": 0}, "anyres_max must be a positive integer"),
    ({"pinpoints": ((384, 384), (384, 1000))}, r"\(384, 1000\) is not a multiple of tile_size 384"),
    ({"pinpoints": ((384,),)}, "a pinpoint is a pair"),
    ({"pinpoints": "384x384"}, "non-empty list"),
    ({"pinpoints": ((384, -384),)}, "pinpoint width must be a positive integer"),
])
def test_bad_settings_are_refused_in_one_line(change, needle):
    with pytest.raises(UsageError, match=needle) as info:
        dataclasses.replace(ONEVISION, **change)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("target", [(7, 1), (1, 7), (0, 1), "2x2", (1, 2, 3)])
def test_unreachable_or_malformed_targets_are_refused_in_one_line(target):
    with pytest.raises(UsageError) as info:
        ONEVISION.resolution_for(target)
    assert "\n" not in str(info.value)
    assert not ONEVISION.is_reachable(target)
