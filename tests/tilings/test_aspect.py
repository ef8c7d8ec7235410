"""Closest-aspect scheme (InternVL's GotOcr2ImageProcessor): agreement with the real processor, the inverse,
the token layout, the presets, configs and errors.

The processor is the judge: grids come from transformers' own ``get_optimal_tiled_canvas``,
crops from ``get_number_of_image_patches`` and from running it on real images, tokens
from ``InternVLProcessor`` (its ``replace_image_token`` for the bulk, the whole processor
with a word-level tokenizer on real images). Numbers written in the tests were worked
out by hand from the processor's rule (the arithmetic is in the comments).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import random
import types

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tilesweep.errors import UsageError
from tilings import GRID, PROFILES, Scheme, Tiling, enumerate_tilings, scheme_from_dict
from tilings.aspect import PRESETS, ClosestAspect

INTERNVL3 = PRESETS["internvl3"]
SEED = 20250417
DETERMINISTIC = settings(derandomize=True, max_examples=200, deadline=None, database=None)

# Other settings of the same kernel, checked against the processor too: tiles of T px fail from 16 tiles on
# (max 36), a floor of tiles (min 3), Aya Vision's 364 px tile, tiny tiles, and no cropping at all.
VARIANTS = {
    "max36": dataclasses.replace(INTERNVL3, name="max36", max_patches=36),
    "min3-max9-t28": dataclasses.replace(INTERNVL3, name="min3", tile_size=28, min_patches=3, max_patches=9),
    "aya-like": dataclasses.replace(INTERNVL3, name="aya", tile_size=364, patch_size=28, tokens_per_tile=169),
    "tiny-t2": dataclasses.replace(INTERNVL3, name="tiny", tile_size=2, patch_size=1, max_patches=20),
    "no-crop": dataclasses.replace(INTERNVL3, name="nocrop", crop_to_patches=False),
}

# An InternVL3 -hf checkpoint's preprocessor_config.json: it says crop_to_patches false, and
# InternVLProcessor forces it on at call time.
INTERNVL3_CONFIG = {
    "crop_to_patches": False,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_processor_type": "GotOcr2ImageProcessorFast",
    "image_std": [0.229, 0.224, 0.225],
    "max_patches": 12,
    "min_patches": 1,
    "processor_class": "InternVLProcessor",
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"height": 448, "width": 448},
}


# ----- the real processor -----
def got_ocr2():
    pytest.importorskip("torchvision")  # the processor's backend
    return pytest.importorskip("transformers.models.got_ocr2.image_processing_got_ocr2")


@functools.cache
def image_processor(scheme: ClosestAspect):
    return got_ocr2().GotOcr2ImageProcessor(**scheme.processor_kwargs())


@functools.cache
def internvl_layout(crops: int, image_seq_length: int) -> str:
    """The text InternVLProcessor puts in place of one image of `crops` crops (its own replace_image_token)."""
    transformers = pytest.importorskip("transformers")
    stand_in = types.SimpleNamespace(
        start_image_token="<img>", image_token="<IMG_CONTEXT>", end_image_token="</img>",
        image_seq_length=image_seq_length,
    )
    return transformers.InternVLProcessor.replace_image_token(stand_in, {"num_patches": [crops]}, 0)


def layout_counts(text: str) -> tuple[int, int]:
    """(image tokens, sequence tokens) of a layout: context tokens, and every special token."""
    context = text.count("<IMG_CONTEXT>")
    return context, context + text.count("<img>") + text.count("</img>")


def processor_counts(scheme: ClosestAspect, height: int, width: int) -> tuple[Tiling, int, int]:
    """(grid, crops, image tokens) from the processor's own size arithmetic and InternVL's layout."""
    proc = image_processor(scheme)
    if proc.crop_to_patches:
        cols, rows = got_ocr2().get_optimal_tiled_canvas(
            (height, width), (proc.size.height, proc.size.width), proc.min_patches, proc.max_patches
        )
    else:
        cols, rows = 1, 1
    crops = proc.get_number_of_image_patches(height, width)
    return Tiling(rows, cols), crops, layout_counts(internvl_layout(crops, scheme.tokens_per_tile))[0]


def predicted_counts(scheme: ClosestAspect, height: int, width: int) -> tuple[Tiling, int, int]:
    g = scheme.geometry(height, width)
    return g.tiling, g.crops, g.image_tokens


def disagreements(scheme: ClosestAspect, sizes) -> list[str]:
    wrong = []
    for h, w in sizes:
        want, got = processor_counts(scheme, h, w), predicted_counts(scheme, h, w)
        if got != want:
            wrong.append(f"{h}x{w}: processor {want}, tilings {got}")
    return wrong


def sample_sizes(scheme: ClosestAspect, seed: int, n_random: int = 500) -> list[tuple[int, int]]:
    """Seeded sizes: ordinary, extreme aspect ratios, tiny, huge, exact-ratio ties, the tie rule's area
    boundaries (near and exactly on them), aspect ratios halfway between two grids', and every inverse
    with its neighbours."""
    rng = random.Random(seed)
    tile = scheme.tile_size
    grids = [(c, r) for c in range(1, 41) for r in range(1, 41) if c * r <= 40]
    sizes = [(rng.randint(1, 4000), rng.randint(1, 4000)) for _ in range(n_random)]
    for _ in range(n_random // 4):  # extreme aspect ratios, both ways
        thin, long = rng.randint(1, 60), rng.randint(600, 100_000)
        sizes += [(thin, long), (long, thin)]
    sizes += [(rng.randint(1, 40), rng.randint(1, 40)) for _ in range(n_random // 3)]  # tiny
    sizes += [(rng.randint(4000, 10**9), rng.randint(4000, 10**9)) for _ in range(n_random // 10)]  # huge
    for c, r in rng.sample(grids, 60):  # exactly a grid's ratio: every grid of that ratio ties at 0
        sizes += [(r * s, c * s) for s in rng.sample(range(1, 3 * tile), 5)]
    for c, r in grids:  # the tie rule's boundaries: side u of the reduced ratio near k*T/sqrt(2)
        g = math.gcd(c, r)
        if g == 1:
            for k in range(1, 5):
                u = int(k * tile / math.sqrt(2))
                sizes += [(r * v, c * v) for v in range(max(1, u - 2), u + 3)]
    for c0, r0 in grids:  # areas exactly on the tie rule's boundary, 0.5*T^2*(k*c0)*(k*r0), near the ratio c0/r0
        for k in range(2, 7):
            area2 = tile * tile * k * k * c0 * r0
            if math.gcd(c0, r0) == 1 and k * k * c0 * r0 <= 40 and area2 % 2 == 0:
                area = area2 // 2
                sizes += [(h, area // h) for h in range(1, 2 * math.isqrt(area) + 1)
                          if area % h == 0 and abs(area / h / h * r0 / c0 - 1) < 0.2]
    for _ in range(150):  # aspect ratio halfway between two grids' ratios: a tie between different ratios
        (c1, r1), (c2, r2) = rng.sample(grids, 2)
        m = rng.randint(1, 200)
        sizes.append((2 * r1 * r2 * m, (c1 * r2 + c2 * r1) * m))
    for t in scheme.targets():  # every inverse and the sizes 1..3 px around it
        h, w = scheme.resolution_for(t)
        sizes += [(h + dh, w + dw) for dh in (-3, -1, 0, 1, 3) for dw in (-3, -2, 0, 2, 3)]
    return [(h, w) for h, w in sizes if h >= 1 and w >= 1]


# ----- agreement with the processor -----
def test_counts_agree_with_the_processor_on_every_target_and_thousands_of_sizes():
    sizes = sample_sizes(INTERNVL3, SEED, n_random=800)
    assert len(set(sizes)) >= 2000
    wrong = disagreements(INTERNVL3, sizes)
    assert not wrong, f"{len(wrong)} of {len(sizes)} sizes disagree (internvl3):\n" + "\n".join(wrong[:20])


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_counts_agree_with_the_processor_for_other_settings(variant):
    scheme = VARIANTS[variant]
    sizes = sample_sizes(scheme, SEED + 1, n_random=200)
    wrong = disagreements(scheme, sizes)
    assert not wrong, f"{len(wrong)} of {len(sizes)} sizes disagree ({variant}):\n" + "\n".join(wrong[:20])


@contextlib.contextmanager
def one_torch_thread():
    """Run torch on one thread: on a shared 2-core machine two threads contend and a crop takes 10x longer."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def recording(proc):
    """`proc` with its resize calls logged as (height, width): the first one of an image is its canvas."""
    calls: list[tuple[int, int]] = []
    resize = proc.resize

    def logged(*args, **kwargs):
        size = kwargs["size"] if "size" in kwargs else args[1]
        calls.append((size.height, size.width))
        return resize(*args, **kwargs)

    proc.resize = logged
    return proc, calls


def test_the_processor_run_on_real_images_makes_the_predicted_crops_and_canvas():
    """The whole preprocessing on PIL images: every target at its size and off by a pixel, plus random sizes."""
    image_module = pytest.importorskip("PIL.Image")
    got_ocr2()
    proc, calls = recording(got_ocr2().GotOcr2ImageProcessor(**INTERNVL3.processor_kwargs()))
    rng = random.Random(SEED)
    sizes = []
    for t in INTERNVL3.targets():
        h, w = INTERNVL3.resolution_for(t)
        sizes += [(h, w), (h - 1, w + 1), (h + 2, w - 3)]
    sizes += [(rng.randint(1, 700), rng.randint(1, 700)) for _ in range(150)]
    sizes += [(rng.randint(1, 12), rng.randint(300, 3000)) for _ in range(25)]
    sizes += [(rng.randint(300, 3000), rng.randint(1, 12)) for _ in range(25)]
    assert len(sizes) >= 300
    wrong = []
    with one_torch_thread():
        for h, w in sizes:
            calls.clear()
            out = proc(images=[image_module.new("RGB", (w, h), (120, 60, 30))], return_tensors="pt")
            pixels = out["pixel_values"]
            got = (int(out["num_patches"][0]), int(pixels.shape[0]), tuple(pixels.shape[-2:]), calls[0])
            g = INTERNVL3.geometry(h, w)
            want = (g.crops, g.crops, (448, 448), g.canvas)
            if got != want:
                wrong.append(f"{h}x{w}: processor (crops, images, tile, canvas) {got}, tilings {want}")
    assert not wrong, f"{len(wrong)} of {len(sizes)} images disagree:\n" + "\n".join(wrong[:20])


def word_level_internvl_processor(scheme: ClosestAspect):
    """A real InternVLProcessor whose tokenizer knows the special tokens as one token each, plus the word 'hi'."""
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {"[UNK]": 0, "<img>": 1, "</img>": 2, "<IMG_CONTEXT>": 3, "<video>": 4, "hi": 5}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]",
        extra_special_tokens={"start_image_token": "<img>", "end_image_token": "</img>",
                              "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"},
    )
    return transformers.InternVLProcessor(
        image_processor=image_processor(scheme), tokenizer=tokenizer,
        video_processor=transformers.InternVLVideoProcessor(), image_seq_length=scheme.tokens_per_tile,
    )


def test_internvl_processor_adds_the_predicted_tokens_for_every_target():
    image_module = pytest.importorskip("PIL.Image")
    proc = word_level_internvl_processor(INTERNVL3)
    wrong = []
    for t in INTERNVL3.targets():
        h, w = INTERNVL3.resolution_for(t)
        with one_torch_thread():
            out = proc(text=["hi <IMG_CONTEXT> hi"], images=[image_module.new("RGB", (w, h))], return_tensors="pt")
        ids = out["input_ids"][0].tolist()
        g = INTERNVL3.geometry(h, w)
        got = (len(ids) - 2, ids.count(3), ids[1], ids[-2], int(out["pixel_values"].shape[0]))
        want = (g.sequence_tokens, g.image_tokens, 1, 2, g.crops)
        if got != want:
            wrong.append(f"{t} at {h}x{w}: processor (sequence, image tokens, first, last, crops) {got}, tilings {want}")
    assert not wrong, "\n".join(wrong)


# ----- the inverse -----
def test_every_target_round_trips_and_the_processor_agrees():
    assert len(INTERNVL3.targets()) == 35  # sum of 12 // k for k = 1..12
    for t in INTERNVL3.targets():
        h, w = INTERNVL3.resolution_for(t)
        assert INTERNVL3.geometry(h, w).tiling == t, t
        assert processor_counts(INTERNVL3, h, w)[0] == t, t
        assert INTERNVL3.target_geometry(t) == INTERNVL3.geometry(h, w)


def test_internvl3_sizes_are_336_px_tiles():
    # ceil(0.75 * 448) = 336 px per tile, for every grid.
    assert [INTERNVL3.resolution_for(t) for t in INTERNVL3.targets()] == [
        (336 * t.rows, 336 * t.cols) for t in INTERNVL3.targets()
    ]


@DETERMINISTIC
@given(st.sampled_from(INTERNVL3.targets()))
def test_round_trip_property_on_the_preset(target):
    assert INTERNVL3.geometry(*INTERNVL3.resolution_for(target)).tiling == target


@st.composite
def any_scheme_and_target(draw) -> tuple[ClosestAspect, Tiling]:
    """Settings beyond the preset: tile and patch sizes, tile limits up to 48 (same-ratio grids up to 6x)."""
    patch = draw(st.sampled_from([1, 2, 14, 16, 28]))
    tile = patch * draw(st.integers(1 if patch > 1 else 2, 40))
    low = draw(st.integers(1, 6))
    scheme = ClosestAspect(name="drawn", tile_size=tile, patch_size=patch, min_patches=low,
                           max_patches=draw(st.integers(low, 48)))
    return scheme, draw(st.sampled_from(scheme.targets()))


@DETERMINISTIC
@given(any_scheme_and_target())
def test_round_trip_property_on_any_setting_agrees_with_the_processor(pair):
    scheme, target = pair
    h, w = scheme.resolution_for(target)
    assert scheme.geometry(h, w).tiling == target
    cols, rows = got_ocr2().get_optimal_tiled_canvas(
        (h, w), (scheme.tile_size, scheme.tile_size), scheme.min_patches, scheme.max_patches
    )
    assert (rows, cols) == target


def test_tiles_of_t_px_fail_from_16_tiles_on_and_the_inverse_avoids_it():
    """The survey's warning, checked: 3x3 at 3T x 3T (area 9T^2 > 0.5*T^2*16) becomes 4x4 once 4x4 is allowed."""
    sixteen = dataclasses.replace(INTERNVL3, max_patches=16)
    assert processor_counts(sixteen, 3 * 448, 3 * 448)[0] == (4, 4)
    assert sixteen.geometry(3 * 448, 3 * 448).tiling == (4, 4)
    assert processor_counts(INTERNVL3, 3 * 448, 3 * 448)[0] == (3, 3)  # with 12 tiles, 4x4 is no candidate
    assert sixteen.resolution_for((3, 3)) == (1008, 1008)
    assert processor_counts(sixteen, 1008, 1008)[0] == (3, 3)


def test_where_336_px_tiles_fail_the_inverse_takes_the_middle_of_the_interval():
    # 17x17 with 18x18 allowed: 336-px tiles give u = 5712 > 18*448/sqrt(2) = 5702.4, so 18x18; the valid u
    # are 17*448/sqrt(2) = 5385.6 < u <= 5702.4, i.e. 5386..5702, middle 5544.
    big = dataclasses.replace(INTERNVL3, max_patches=324)
    assert processor_counts(big, 17 * 336, 17 * 336)[0] == (18, 18)
    assert big.resolution_for((17, 17)) == (5544, 5544)
    assert processor_counts(big, 5544, 5544)[0] == (17, 17)
    assert big.resolution_for((16, 16)) == (16 * 336, 16 * 336)  # 16*336 = 5376 <= 17*448/sqrt(2)
    assert processor_counts(big, 5376, 5376)[0] == (16, 16)


def test_the_tie_rule_boundaries_by_hand():
    # Square images tie 1x1, 2x2 and 3x3 (12 tiles): k x k wins while side^2 > 0.5 * 448^2 * k^2,
    # i.e. side > 316.78 k: 2x2 from 634 (633 < 633.57), 3x3 from 951 (950 < 950.35).
    cases = {(633, 633): (1, 1), (634, 634): (2, 2), (950, 950): (2, 2), (951, 951): (3, 3), (5000, 5000): (3, 3)}
    for size, want in cases.items():
        assert INTERNVL3.geometry(*size).tiling == want, size
        assert processor_counts(INTERNVL3, *size)[0] == want, size
    # Exactly on the boundary the later grid loses (strict >): 896 * 1008 = 903168 = 0.5 * 448^2 * 9, aspect
    # 1.125 is closest to 1 (4/3 is further), so 1x1, 2x2 and 3x3 tie and 3x3 needs one pixel more.
    for size, want in {(896, 1008): (2, 2), (1008, 896): (2, 2), (897, 1008): (3, 3)}.items():
        assert INTERNVL3.geometry(*size).tiling == want, size
        assert processor_counts(INTERNVL3, *size)[0] == want, size
    # A different-ratio tie: aspect 1.5 is 0.5 from 1x1 and 1x2, but 2x3 (ratio 3/2) is exact.
    assert INTERNVL3.geometry(400, 600).tiling == (2, 3)


@pytest.mark.parametrize(
    ("target", "needle"),
    [
        ((1, 13), r"tiling 1x13 has 13 tiles, outside scheme 'internvl3'.s 1\.\.12 .*pick rows\*cols in 1\.\.12"),
        ((4, 4), "4x4 has 16 tiles"),
        ((0, 2), "tiling rows must be a positive integer, got 0"),
        ((2, -1), "tiling cols must be a positive integer, got -1"),
        ((1.0, 2), "tiling rows must be a positive integer, got 1.0"),
        ("1x2", "pair"),
        ((1, 2, 3), "pair"),
    ],
)
def test_unreachable_targets_are_refused_in_one_line(target, needle):
    for call in (INTERNVL3.resolution_for, INTERNVL3.target_geometry):
        with pytest.raises(UsageError, match=needle) as info:
            call(target)
        assert "\n" not in str(info.value)
    assert not INTERNVL3.is_reachable(target)


@DETERMINISTIC
@given(st.integers(1, 60), st.integers(1, 60))
def test_reachable_exactly_within_the_tile_limits(rows, cols):
    floor = dataclasses.replace(INTERNVL3, min_patches=4)
    for scheme in (INTERNVL3, floor):
        inside = scheme.min_patches <= rows * cols <= scheme.max_patches
        assert scheme.is_reachable(Tiling(rows, cols)) == inside
        if inside:
            assert scheme.geometry(*scheme.resolution_for(Tiling(rows, cols))).tiling == (rows, cols)
        else:
            with pytest.raises(UsageError, match=f"{rows}x{cols} has {rows * cols} tiles"):
                scheme.resolution_for(Tiling(rows, cols))


def test_without_cropping_only_1x1_is_reachable():
    nocrop = VARIANTS["no-crop"]
    assert nocrop.targets() == (Tiling(1, 1),)
    assert nocrop.max_crops == 1
    assert nocrop.geometry(100, 5000) == nocrop.target_geometry(Tiling(1, 1))
    with pytest.raises(UsageError, match="1x2 is unreachable.*crop_to_patches off"):
        nocrop.resolution_for((1, 2))


# ----- geometry, the interface, families -----
def test_geometry_counts_by_hand():
    g = INTERNVL3.target_geometry(Tiling(2, 4))
    # 8 tiles + thumbnail = 9 crops; 9 * 256 tokens; <img> and </img>; 9 * 32^2 patches.
    assert g == (Tiling(2, 4), 9, (896, 1792), 2304, 2306, None, None, 9216)
    one = INTERNVL3.target_geometry(Tiling(1, 1))
    assert (one.crops, one.canvas, one.image_tokens, one.sequence_tokens, one.encoder_patches) == (
        1, (448, 448), 256, 258, 1024)  # one tile, no thumbnail
    # Tokens are linear in crops: 1x8 and 2x4 cost the same.
    assert INTERNVL3.target_geometry(Tiling(1, 8)).image_tokens == g.image_tokens


def test_the_scheme_interface():
    assert isinstance(INTERNVL3, Scheme)
    assert PROFILES["internvl3"] is INTERNVL3
    assert (INTERNVL3.kind, INTERNVL3.max_crops, INTERNVL3.SCHEME) == (GRID, 12, "closest-aspect")
    assert INTERNVL3.families == ("1xk", "2xk", "kx1", "all")
    assert INTERNVL3.default_families == ("1xk", "2xk", "kx1")


def test_targets_follow_the_processor_candidate_order():
    # (cols, rows) cols-outer rows-inner, stably sorted by tiles: 2 tiles give (1,2) then (2,1), i.e. 2x1, 1x2.
    assert INTERNVL3.targets()[:8] == ((1, 1), (2, 1), (1, 2), (3, 1), (1, 3), (4, 1), (2, 2), (1, 4))
    ratios = got_ocr2().get_all_supported_aspect_ratios(1, 12)
    assert INTERNVL3.targets() == tuple(Tiling(rows, cols) for cols, rows in ratios)


def test_families_list_the_reachable_grids():
    assert INTERNVL3.family_tilings("1xk") == [Tiling(1, k) for k in range(1, 13)]
    assert INTERNVL3.family_tilings("2xk") == [Tiling(2, k) for k in range(1, 7)]
    assert INTERNVL3.family_tilings("kx1") == [Tiling(k, 1) for k in range(1, 13)]
    assert INTERNVL3.family_tilings("all") == list(INTERNVL3.targets())
    floor = dataclasses.replace(INTERNVL3, min_patches=3, max_patches=8)
    assert floor.family_tilings("2xk") == [Tiling(2, 2), Tiling(2, 3), Tiling(2, 4)]
    assert INTERNVL3.points("2xk") == [(Tiling(2, k), (672, 336 * k)) for k in range(1, 7)]
    assert [t for t, _ in enumerate_tilings("internvl3")] == (
        [Tiling(1, k) for k in range(1, 13)] + [Tiling(2, k) for k in range(1, 7)] + [Tiling(k, 1) for k in range(3, 13)]
    )
    with pytest.raises(UsageError, match="unknown tiling family '3xk'"):
        INTERNVL3.family_tilings("3xk")


@pytest.mark.parametrize(
    ("size", "needle"),
    [
        ((0, 5), "height must be a positive integer, got 0"),
        ((5, -1), "width must be a positive integer, got -1"),
        ((1.5, 3), r"height must be a positive integer, got 1\.5"),
        ((True, 3), "height must be a positive integer, got True"),
        ((3, 2**63), "width must be a positive integer below"),
    ],
)
def test_bad_sizes_are_refused_in_one_line(size, needle):
    with pytest.raises(UsageError, match=needle) as info:
        INTERNVL3.geometry(*size)
    assert "\n" not in str(info.value)


# ----- presets, processor settings, dicts, configs -----
def test_the_preset_holds_internvl3_numbers_and_matches_the_model_config():
    s = INTERNVL3
    assert (s.tile_size, s.patch_size, s.min_patches, s.max_patches) == (448, 14, 1, 12)
    assert (s.crop_to_patches, s.thumbnail, s.tokens_per_tile, s.tie_area_fraction) == (True, True, 256, 0.5)
    transformers = pytest.importorskip("transformers")
    config = transformers.InternVLConfig()
    side = config.vision_config.image_size[0] // config.vision_config.patch_size[0]
    assert config.image_seq_length == s.tokens_per_tile == side**2 * config.downsample_ratio**2
    assert (config.vision_config.image_size[0], config.vision_config.patch_size[0]) == (s.tile_size, s.patch_size)


def test_processor_kwargs_configure_the_processor():
    proc = image_processor(INTERNVL3)
    assert INTERNVL3.processor_kwargs() == {
        "size": {"height": 448, "width": 448}, "crop_to_patches": True, "min_patches": 1, "max_patches": 12}
    assert (proc.size.height, proc.size.width, proc.crop_to_patches, proc.min_patches, proc.max_patches) == (
        448, 448, True, 1, 12)
    for change in ({"thumbnail": False}, {"tie_area_fraction": 0.6}):
        with pytest.raises(UsageError, match="no GotOcr2ImageProcessor setting"):
            dataclasses.replace(INTERNVL3, **change).processor_kwargs()


def test_a_scheme_without_thumbnail_counts_tiles_only():
    bare = dataclasses.replace(INTERNVL3, thumbnail=False)
    assert (bare.target_geometry(Tiling(2, 4)).crops, bare.target_geometry(Tiling(1, 1)).crops) == (8, 1)


@pytest.mark.parametrize("scheme", [INTERNVL3, *VARIANTS.values()], ids=lambda s: s.name)
def test_to_dict_round_trips_through_the_registry(scheme):
    data = scheme.to_dict()
    assert data["scheme"] == "closest-aspect"
    assert json.loads(json.dumps(data)) == data
    assert scheme_from_dict(json.loads(json.dumps(data))) == scheme
    assert ClosestAspect.from_dict(data) == scheme
    assert {k: data[k] for k in ("tile_size", "min_patches", "max_patches", "tokens_per_tile")} == {
        "tile_size": scheme.tile_size, "min_patches": scheme.min_patches,
        "max_patches": scheme.max_patches, "tokens_per_tile": scheme.tokens_per_tile}


def test_a_foreign_dict_is_refused():
    with pytest.raises(UsageError, match="unknown ClosestAspect key"):
        ClosestAspect.from_dict({**INTERNVL3.to_dict(), "crop_size": 3})
    with pytest.raises(UsageError, match="'budget' is not 'closest-aspect'"):
        ClosestAspect.from_dict({**INTERNVL3.to_dict(), "scheme": "budget"})


def test_from_preprocessor_config_reads_an_internvl3_checkpoint(tmp_path):
    assert ClosestAspect.from_preprocessor_config(INTERNVL3_CONFIG) == INTERNVL3
    path = tmp_path / "preprocessor_config.json"
    path.write_text(json.dumps(INTERNVL3_CONFIG))
    assert ClosestAspect.from_preprocessor_config(path) == INTERNVL3
    assert ClosestAspect.from_preprocessor_config(str(path)).name == "internvl3"
    # The combined processor_config.json nests the image processor and states the tokens per tile.
    nested = {"image_processor": {**INTERNVL3_CONFIG, "max_patches": 6}, "image_seq_length": 64,
              "processor_class": "InternVLProcessor"}
    six = ClosestAspect.from_preprocessor_config(nested)
    assert (six.max_patches, six.tokens_per_tile, six.crop_to_patches, six.name) == (6, 64, True, "internvl3-custom")


def test_from_preprocessor_config_other_checkpoints_and_overrides():
    aya = {"crop_to_patches": False, "image_processor_type": "GotOcr2ImageProcessor", "max_patches": 12,
           "min_patches": 1, "processor_class": "AyaVisionProcessor", "size": {"height": 364, "width": 364}}
    s = ClosestAspect.from_preprocessor_config(aya, name="aya-vision", tokens_per_tile=169, patch_size=28)
    assert (s.name, s.tile_size, s.patch_size, s.crop_to_patches, s.tokens_per_tile) == ("aya-vision", 364, 28, True, 169)
    got = {**aya, "processor_class": "GotOcr2Processor", "size": {"height": 1024, "width": 1024}, "max_patches": 6}
    plain = ClosestAspect.from_preprocessor_config(got, patch_size=16)
    assert (plain.crop_to_patches, plain.tile_size, plain.targets()) == (False, 1024, (Tiling(1, 1),))
    assert ClosestAspect.from_preprocessor_config(got, patch_size=16, crop_to_patches=True).max_crops == 6


@pytest.mark.parametrize(
    ("config", "overrides", "needle"),
    [
        ({**INTERNVL3_CONFIG, "size": {"height": 448, "width": 224}}, {}, "'size' must be square, got 448x224"),
        ({**INTERNVL3_CONFIG, "size": {"shortest_edge": 448}}, {}, "'size' must be"),
        ({**INTERNVL3_CONFIG, "image_processor_type": "Molmo2ImageProcessor"}, {}, "not GotOcr2ImageProcessor"),
        ({"do_resize": True}, {}, "none of the GotOcr2ImageProcessor keys"),
        (INTERNVL3_CONFIG, {"crop_size": 3}, "unknown ClosestAspect override.*crop_size.*allowed: name, tile_size"),
        ({**INTERNVL3_CONFIG, "min_patches": 13}, {}, "min_patches 13 is over max_patches 12"),
        ("/nonexistent/preprocessor_config.json", {}, "cannot read preprocessor config"),
    ],
)
def test_bad_configs_are_refused_in_one_line(config, overrides, needle):
    with pytest.raises(UsageError, match=needle) as info:
        ClosestAspect.from_preprocessor_config(config, **overrides)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"tile_size": 450}, "tile_size 450 must be at least 2 and a multiple of patch_size 14"),
        ({"tile_size": 0}, "tile_size must be a positive integer, got 0"),
        ({"max_patches": 0}, "max_patches must be a positive integer, got 0"),
        ({"min_patches": 5, "max_patches": 4}, "min_patches 5 is over max_patches 4"),
        ({"crop_to_patches": "yes"}, "crop_to_patches must be true or false, got 'yes'"),
        ({"tie_area_fraction": 0}, "tie_area_fraction must be a positive number"),
        ({"tokens_per_tile": 2.5}, "tokens_per_tile must be a positive integer, got 2.5"),
        ({"name": ""}, "name must be a non-empty string"),
    ],
)
def test_bad_settings_are_refused_in_one_line(change, needle):
    with pytest.raises(UsageError, match=needle) as info:
        dataclasses.replace(INTERNVL3, **change)
    assert "\n" not in str(info.value)
