"""Pixel-budget scheme (Qwen2-VL's smart_resize): agreement with the real processor, the inverse, the
families, the presets, configs and errors.

The processor is the judge: canvases come from transformers' own ``smart_resize`` (called with the
numbers the configured ``Qwen2VLImageProcessor`` holds), patches from its
``get_number_of_image_patches``, grids and patches from running it on real PIL images, tokens from
the Qwen2-VL, Qwen2.5-VL and Qwen3-VL processors with a word-level tokenizer. Numbers written in the
tests were worked out by hand from the processor's rule (the arithmetic is in the comments) or read
off the real processor.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import itertools
import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tilesweep.errors import UsageError
from tilings import BUDGET, FAMILIES, PROFILES, Scheme, Tiling, enumerate_tilings, scheme_from_dict, tilings_for_tokens
from tilings.budget import PRESETS, PixelBudget

SEED = 20250611
DETERMINISTIC = settings(derandomize=True, max_examples=300, deadline=None, database=None)
QWEN2, QWEN25, QWEN3 = PRESETS["qwen2-vl"], PRESETS["qwen2.5-vl"], PRESETS["qwen3-vl"]
GRID_FAMILY_NAMES = ("1xk", "2xk", "kx1", "all")

# Checkpoint configs as the hub ships them (Qwen2-VL / Qwen2.5-VL: min/max_pixels; Qwen3-VL: size).
QWEN2_CONFIG = {
    "do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
    "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2VLProcessor",
    "min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2,
    "resample": 3, "rescale_factor": 0.00392156862745098,
}
QWEN25_CONFIG = {**QWEN2_CONFIG, "processor_class": "Qwen2_5_VLProcessor"}
QWEN3_CONFIG = {
    "size": {"longest_edge": 16777216, "shortest_edge": 65536}, "patch_size": 16, "temporal_patch_size": 2,
    "merge_size": 2, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
    "processor_class": "Qwen3VLProcessor", "image_processor_type": "Qwen2VLImageProcessorFast",
}

# Other settings of the same kernel, checked against the processor too.
VARIANTS = {
    "class-default": PixelBudget(name="class-default"),  # 4 to 1,280 tokens
    "narrow": PixelBudget(name="narrow", patch_size=14, merge_size=2, min_pixels=200_000, max_pixels=400_000),
    "patch8-merge3": PixelBudget(name="p8m3", patch_size=8, merge_size=3, temporal_patch_size=1, min_pixels=1000,
                                 max_pixels=2_000_000),
    "tiny-max": PixelBudget(name="tiny-max", patch_size=14, merge_size=2, min_pixels=784, max_pixels=784 * 50),
}


# ----- the real processor -----
def qwen2_vl_module():
    pytest.importorskip("torchvision")  # the processor's backend
    return pytest.importorskip("transformers.models.qwen2_vl.image_processing_qwen2_vl")


@functools.cache
def image_processor(scheme: PixelBudget):
    return qwen2_vl_module().Qwen2VLImageProcessor(**scheme.processor_kwargs())


def processor_counts(scheme: PixelBudget, h: int, w: int) -> tuple:
    """(canvas, image_grid_thw, image tokens, encoder patches, crops) by the processor's own arithmetic, or the
    error it raises. The numbers are the configured processor's, not the scheme's."""
    proc = image_processor(scheme)
    factor = proc.patch_size * proc.merge_size
    try:
        canvas = qwen2_vl_module().smart_resize(h, w, factor=factor, min_pixels=proc.size.shortest_edge,
                                                max_pixels=proc.size.longest_edge)
    except ValueError:
        return ("refused",)
    patches = proc.get_number_of_image_patches(h, w)
    grid = (1, canvas[0] // proc.patch_size, canvas[1] // proc.patch_size)
    return (tuple(canvas), grid, math.prod(grid) // proc.merge_size**2, patches, 1)


def predicted_counts(scheme: PixelBudget, h: int, w: int) -> tuple:
    try:
        g = scheme.geometry(h, w)
    except UsageError:
        return ("refused",)
    grid = (1, g.canvas[0] // scheme.patch_size, g.canvas[1] // scheme.patch_size)
    return (g.canvas, grid, g.image_tokens, g.encoder_patches, g.crops)


def disagreements(scheme: PixelBudget, sizes) -> list[str]:
    wrong = []
    for h, w in sizes:
        got, want = processor_counts(scheme, h, w), predicted_counts(scheme, h, w)
        if got != want:
            wrong.append(f"{h}x{w}: processor (canvas, grid_thw, tokens, patches, crops) {got}, tilings {want}")
    return wrong


def sample_sizes(scheme: PixelBudget, seed: int, n_random: int) -> list[tuple[int, int]]:
    """Seeded sizes where the arithmetic has edges, plus every target's size and the sizes 1..3 px around it."""
    rng = random.Random(seed)
    f = scheme.factor
    limit = scheme.max_aspect_ratio
    side_min, side_max = math.isqrt(scheme.min_pixels), math.isqrt(scheme.max_pixels)

    def log_side(lo: int, hi: int) -> int:
        return round(math.exp(rng.uniform(math.log(lo), math.log(hi))))

    sizes = [(log_side(1, 60_000), log_side(1, 60_000)) for _ in range(n_random)]  # anything
    sizes += [(rng.randint(1, 2 * f), rng.randint(1, 4 * f)) for _ in range(n_random // 4)]  # tiny: under min
    sizes += [(log_side(side_max, 40 * side_max), log_side(side_max, 40 * side_max))  # huge: over max
              for _ in range(n_random // 4)]
    for _ in range(n_random // 4):  # aspect ratios at the limit: exactly, just under and just over
        short = log_side(1, 3 * side_max // limit + 2)
        long = short * limit + rng.choice((-2, -1, 0, 0, 1, 2))
        sizes += [(short, long), (long, short)]
    halves = [(2 * k + 1) * f // 2 for k in range(12)]  # 14, 42, 70, 98, ... at F = 28: round half to even
    sizes += [(a, b) for a in halves for b in halves]
    sizes += [(a, rng.randint(1, 3000)) for a in halves for _ in range(4)]
    for side in (side_min, side_max):  # the budget's edges, square and 1:3
        sizes += [(side + d, side + e) for d in range(-3, 4) for e in range(-3, 4)]
        third = math.isqrt(side * side // 3)
        sizes += [(third + d, 3 * third + e) for d in range(-3, 4) for e in range(-3, 4)]
    for t in scheme.targets():  # every inverse and the sizes 1..3 px around it
        h, w = scheme.resolution_for(t)
        sizes += [(h + dh, w + dw) for dh in range(-3, 4) for dw in range(-3, 4)]
    return [(h, w) for h, w in sizes if h >= 1 and w >= 1]


@contextlib.contextmanager
def one_torch_thread():
    """Run torch on one thread: on a shared 2-core machine two threads contend and an image takes longer."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def run_on_image(scheme: PixelBudget, h: int, w: int) -> tuple:
    """(image_grid_thw, pixel_values shape, crops) from the processor run on a PIL image, or its refusal."""
    image_module = pytest.importorskip("PIL.Image")
    try:
        out = image_processor(scheme)(images=[image_module.new("RGB", (w, h), (120, 60, 30))], return_tensors="pt")
    except ValueError:
        return ("refused",)
    grids = [tuple(int(v) for v in row) for row in out["image_grid_thw"].tolist()]
    return (grids[0], tuple(out["pixel_values"].shape), len(grids))


def predicted_run(scheme: PixelBudget, h: int, w: int) -> tuple:
    try:
        g = scheme.geometry(h, w)
    except UsageError:
        return ("refused",)
    p = scheme.patch_size
    return ((1, g.canvas[0] // p, g.canvas[1] // p), (g.encoder_patches, 3 * scheme.temporal_patch_size * p * p),
            g.crops)


def word_level_processor(scheme: PixelBudget, processor_class: str):
    """A real Qwen processor whose tokenizer knows the special tokens as one token each, plus the word 'hi'."""
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {"[UNK]": 0, "<|vision_start|>": 1, "<|vision_end|>": 2, "<|image_pad|>": 3, "<|video_pad|>": 4, "hi": 5}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]",
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                              "vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>"},
    )
    video = transformers.Qwen3VLVideoProcessor() if processor_class == "Qwen3VLProcessor" else \
        transformers.Qwen2VLVideoProcessor()
    return getattr(transformers, processor_class)(image_processor=image_processor(scheme), tokenizer=tokenizer,
                                                  video_processor=video)


def fixed_point_by_the_processor(scheme: PixelBudget, rows: int, cols: int) -> bool:
    """Whether transformers' smart_resize keeps (rows*F, cols*F) as it is (its refusal: no)."""
    f = scheme.factor
    try:
        out = qwen2_vl_module().smart_resize(rows * f, cols * f, factor=f, min_pixels=scheme.min_pixels,
                                             max_pixels=scheme.max_pixels)
    except ValueError:
        return False
    return tuple(out) == (rows * f, cols * f)


# ----- agreement with the processor -----
@pytest.mark.parametrize("name", list(PRESETS))
def test_counts_agree_with_the_processor_on_every_target_and_thousands_of_sizes(name):
    scheme = PRESETS[name]
    sizes = sample_sizes(scheme, SEED, n_random=1200)
    assert len(set(sizes)) >= 3500
    refused = [s for s in sizes if processor_counts(scheme, *s) == ("refused",)]
    assert len(refused) >= 100  # the aspect limit is exercised from both sides
    wrong = disagreements(scheme, sizes)
    assert not wrong, f"{len(wrong)} of {len(sizes)} sizes disagree ({name}):\n" + "\n".join(wrong[:20])


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_counts_agree_with_the_processor_for_other_settings(variant):
    scheme = VARIANTS[variant]
    sizes = sample_sizes(scheme, SEED + 1, n_random=300)
    wrong = disagreements(scheme, sizes)
    assert not wrong, f"{len(wrong)} of {len(sizes)} sizes disagree ({variant}):\n" + "\n".join(wrong[:20])


def test_the_pil_backend_does_the_same_arithmetic():
    """``Qwen2VLImageProcessorPil`` (no torchvision) carries its own copy of smart_resize."""
    pil = pytest.importorskip("transformers.models.qwen2_vl.image_processing_pil_qwen2_vl")
    wrong = []
    for name, scheme in PRESETS.items():
        proc = pil.Qwen2VLImageProcessorPil(**scheme.processor_kwargs())
        for h, w in sample_sizes(scheme, SEED + 2, n_random=200):
            try:
                got = proc.get_number_of_image_patches(h, w)
            except ValueError:
                got = "refused"
            want = predicted_counts(scheme, h, w)
            want = "refused" if want == ("refused",) else want[3]
            if got != want:
                wrong.append(f"{name} {h}x{w}: PIL processor patches {got}, tilings {want}")
    assert not wrong, "\n".join(wrong[:20])


@pytest.mark.parametrize("name", list(PRESETS))
def test_the_processor_run_on_real_images_makes_the_predicted_grid_and_patches(name):
    """The whole preprocessing on PIL images: every planned target at its size and off by a pixel or two,
    tiny and thin images, half-way sizes, refusals, and random sizes."""
    scheme = PRESETS[name]
    f = scheme.factor
    rng = random.Random(SEED + 3)
    sizes = [scheme.resolution_for(t) for t in scheme.targets()]
    sizes += [(h + rng.choice((-3, -1, 1, 2)), w + rng.choice((-2, 1, 3))) for h, w in sizes[:24]]
    sizes += [(rng.randint(1, 900), rng.randint(1, 900)) for _ in range(60)]
    sizes += [(rng.randint(1, 3 * f), rng.randint(1, 3 * f)) for _ in range(25)]  # under the budget
    sizes += [(s, 200 * s + d) for s in (1, 2, 5, 9) for d in (-1, 0, 1)]  # at the aspect limit
    sizes += [(200 * s + d, s) for s in (1, 3) for d in (0, 1)]
    sizes += [((2 * k + 1) * f // 2, (2 * j + 1) * f // 2) for k in range(4) for j in range(0, 8, 3)]  # halves
    sizes += [(4100, 3900), (3000, 6000)]  # over the budget's top
    assert len(sizes) >= 150
    wrong = []
    with one_torch_thread():
        for h, w in sizes:
            got, want = run_on_image(scheme, h, w), predicted_run(scheme, h, w)
            if got != want:
                wrong.append(f"{h}x{w}: processor (grid_thw, pixel_values shape, crops) {got}, tilings {want}")
    assert not wrong, f"{len(wrong)} of {len(sizes)} images disagree ({name}):\n" + "\n".join(wrong[:20])


@pytest.mark.parametrize("processor_class, name", [("Qwen2VLProcessor", "qwen2-vl"),
                                                   ("Qwen2_5_VLProcessor", "qwen2.5-vl"),
                                                   ("Qwen3VLProcessor", "qwen3-vl")])
def test_the_qwen_processors_write_the_predicted_tokens(processor_class, name):
    """The chat template's image span: the processor expands the pad to image_tokens and marks exactly those
    (mm_token_type_ids 1); the start/end pair makes sequence_tokens."""
    image_module = pytest.importorskip("PIL.Image")
    scheme = PRESETS[name]
    proc = word_level_processor(scheme, processor_class)
    sizes = [scheme.resolution_for(t) for t in scheme.family_tilings("square")[:5] + scheme.family_tilings("wide")[:3]]
    sizes += [(1, 1), (97, 333), (41, 8200)]
    wrong = []
    for h, w in sizes:
        with one_torch_thread():
            out = proc(text=["hi <|vision_start|><|image_pad|><|vision_end|> hi"],
                       images=[image_module.new("RGB", (w, h))], return_tensors="pt")
        ids = out["input_ids"][0].tolist()
        types = out["mm_token_type_ids"][0].tolist()
        g = scheme.geometry(h, w)
        got = (len(ids) - 2, ids.count(3), sum(types), [i for i, t in zip(ids, types) if t], ids[1], ids[-2])
        want = (g.sequence_tokens, g.image_tokens, g.image_tokens, [3] * g.image_tokens, 1, 2)
        if got != want:
            wrong.append(f"{h}x{w}: processor (sequence, pads, marked, marked ids, first, last) {got[:3]}..., "
                         f"tilings {want[:3]}")
    assert not wrong, "\n".join(wrong)


# ----- hand-worked numbers (the processor's rule, by hand) -----
def test_round_half_to_even_at_the_surveys_sizes():
    # 42/28 = 1.5 -> 2; 70/28 = 2.5 -> 2; 98/28 = 3.5 -> 4; 126/28 = 4.5 -> 4 (width 1008 = 36*28 stays).
    assert [QWEN2.geometry(h, 1008).canvas for h in (42, 70, 98, 126)] == [(56, 1008), (56, 1008), (112, 1008),
                                                                           (112, 1008)]
    # Qwen3-VL, F = 32: 48/32 = 1.5 -> 2 and 80/32 = 2.5 -> 2 (each times 32 wide = 64 tokens, the minimum).
    assert QWEN3.geometry(48, 2048).canvas == (64, 2048)
    assert QWEN3.geometry(80, 2048).canvas == (64, 2048)


def test_geometry_by_hand():
    g = QWEN2.geometry(112, 224)  # 4 x 8 tokens, 8 x 16 patches
    assert g.tiling == (4, 8) and g.canvas == (112, 224)
    assert (g.crops, g.image_tokens, g.sequence_tokens, g.encoder_patches) == (1, 32, 34, 128)
    assert (g.low_res_grid, g.high_res_grid) == (None, None)
    # 1x1 px: both round to 0; beta = sqrt(3136) = 56 -> ceil(56/28) = 2 each side: the 2x2 minimum.
    assert QWEN2.geometry(1, 1).canvas == (56, 56)
    # Qwen3-VL: beta = sqrt(65536) = 256 -> 8 x 8 tokens of 32 px.
    assert QWEN3.geometry(1, 1).tiling == (8, 8)
    # 4000x4000: beta = sqrt(16e6 / 12845056) = 1.11604; 4000/beta/28 = 128.003 -> 128 (the processor: [1, 256, 256]).
    assert QWEN2.geometry(4000, 4000).tiling == (128, 128)
    # 41 x 8200 (ratio 200): 41/28 = 1.46 -> 1, 8200/28 = 292.9 -> 293: a grid beyond the aspect limit
    # (the processor: [1, 2, 586]); it is not its own size, so it is no target.
    assert QWEN2.geometry(41, 8200).tiling == (1, 293)
    assert not QWEN2.is_reachable(Tiling(1, 293))


def test_encoder_patches_are_four_per_token_and_tokens_the_grid():
    for scheme in PRESETS.values():
        for t in scheme.targets():
            g = scheme.target_geometry(t)
            assert g.image_tokens == t.rows * t.cols and g.encoder_patches == 4 * g.image_tokens
            assert g.sequence_tokens == g.image_tokens + 2 and g.crops == 1


# ----- the inverse -----
@pytest.mark.parametrize("name", list(PRESETS))
def test_every_target_round_trips_and_is_the_processors_fixed_point(name):
    scheme = PRESETS[name]
    f = {"qwen2-vl": 28, "qwen2.5-vl": 28, "qwen3-vl": 32}[name]
    for t in scheme.targets():
        h, w = scheme.resolution_for(t)
        assert (h, w) == (t.rows * f, t.cols * f)
        g = scheme.geometry(h, w)
        assert (g.tiling, g.canvas) == (t, (h, w)) and g == scheme.target_geometry(t)
        assert processor_counts(scheme, h, w)[:2] == ((h, w), (1, 2 * t.rows, 2 * t.cols))


@st.composite
def scheme_and_grid(draw) -> tuple[PixelBudget, Tiling]:
    """Settings beyond the presets: any patch and merge, any budget holding a whole token; any grid near it."""
    patch, merge = draw(st.integers(1, 32)), draw(st.integers(1, 4))
    f2 = (patch * merge) ** 2
    min_pixels = draw(st.integers(1, 300 * f2))
    max_pixels = draw(st.integers(-(-min_pixels // f2) * f2, -(-min_pixels // f2) * f2 + draw(st.sampled_from(
        [0, f2, 50 * f2, 5000 * f2, 40000 * f2]))))
    scheme = PixelBudget(name="drawn", patch_size=patch, merge_size=merge, temporal_patch_size=draw(st.integers(1, 3)),
                         min_pixels=min_pixels, max_pixels=max_pixels)
    rows = draw(st.integers(1, 260))
    cols = draw(st.one_of(st.integers(1, 260), st.integers(195, 205).map(lambda r: r * rows)))
    return scheme, Tiling(rows, cols)


@DETERMINISTIC
@given(scheme_and_grid())
def test_round_trip_property_and_reachability_agree_with_the_processor(pair):
    scheme, t = pair
    assert scheme.is_reachable(t) == fixed_point_by_the_processor(scheme, *t), (scheme, t)
    if scheme.is_reachable(t):
        size = scheme.resolution_for(t)
        assert scheme.geometry(*size).tiling == t and scheme.geometry(*size).canvas == size
    else:
        with pytest.raises(UsageError, match=f"token grid {t.rows}x{t.cols} is unreachable"):
            scheme.resolution_for(t)
        with pytest.raises(UsageError):
            scheme.target_geometry(t)


@DETERMINISTIC
@given(scheme_and_grid(), st.integers(1, 20_000), st.integers(1, 20_000))
def test_geometry_agrees_with_the_processor_on_any_setting(pair, h, w):
    scheme, _ = pair
    assert predicted_counts(scheme, h, w)[:3] == processor_counts(scheme, h, w)[:3], (scheme, h, w)


@DETERMINISTIC
@given(st.sampled_from(list(PRESETS.values())), st.integers(1, 300), st.integers(1, 300))
def test_round_trip_property_on_the_presets(scheme, rows, cols):
    t = Tiling(rows, cols)
    # Reachable exactly when 4 (64 for Qwen3-VL) <= rows*cols <= 16384 and the ratio is at most 200.
    expected = {28: 4, 32: 64}[scheme.factor] <= rows * cols <= 16384 and max(rows, cols) <= 200 * min(rows, cols)
    assert scheme.is_reachable(t) == expected
    if expected:
        assert scheme.geometry(*scheme.resolution_for(t)).tiling == t
    else:
        with pytest.raises(UsageError):
            scheme.resolution_for(t)


@pytest.mark.parametrize("target, needle", [
    ((1, 2), "2 tokens is under the budget's 4 (min_pixels 3136)"),
    ((1, 3), "3 tokens is under"),
    ((200, 200), "40000 tokens is over the budget's 16384 (max_pixels 12845056)"),
    ((128, 129), "16512 tokens is over"),
    ((1, 201), "aspect ratio 201 is over 200"),
    ((300, 1), "aspect ratio 300 is over 200"),
    ((0, 4), "token grid rows must be a positive integer"),
    ((4, -1), "token grid cols must be a positive integer"),
    ((2.0, 4), "must be a positive integer"),
    ("2x2", "a token grid is a pair"),
    ((1, 2, 3), "a token grid is a pair"),
])
def test_unreachable_targets_are_refused_in_one_line(target, needle):
    with pytest.raises(UsageError) as err:
        QWEN2.resolution_for(target)
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert not QWEN2.is_reachable(target)


def test_the_refusal_says_what_is_reachable():
    with pytest.raises(UsageError, match=r"rows\*cols from 64 to 16384 tokens and max\(rows, cols\) / min\(rows, cols\) "
                                         r"<= 200 \(each token is 32x32 px\)"):
        QWEN3.resolution_for((7, 9))  # 63 tokens, one under Qwen3-VL's 65536 px = 64 tokens of 32x32


def test_token_counts_give_every_reachable_factor_pair():
    assert tilings_for_tokens(16, "qwen2.5-vl") == [(1, 16), (2, 8), (4, 4), (8, 2), (16, 1)]
    assert tilings_for_tokens(64, "qwen3-vl") == [(1, 64), (2, 32), (4, 16), (8, 8), (16, 4), (32, 2), (64, 1)]
    # 401 is prime: only 1x401 and 401x1, both over the aspect limit.
    with pytest.raises(UsageError, match="gives exactly 401 image tokens"):
        tilings_for_tokens(401, "qwen2-vl")


# ----- families -----
SQUARE_SIDES = [2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64]


def test_families_of_qwen2_by_hand():
    assert QWEN2.family_tilings("square") == [(n, n) for n in SQUARE_SIDES]
    assert QWEN2.family_tilings("wide") == [(n, 2 * n) for n in [2, 3, 4, 6, 8, 12, 16, 24, 32, 48]]
    assert QWEN2.family_tilings("tall") == [(2 * n, n) for n in [2, 3, 4, 6, 8, 12, 16, 24, 32, 48]]
    assert QWEN2.family_tilings("equal") == [(32, 32), (16, 64), (64, 16), (8, 128), (128, 8)]
    assert QWEN2.points("square")[:3] == [((2, 2), (56, 56)), ((3, 3), (84, 84)), ((4, 4), (112, 112))]
    assert QWEN2.points("wide")[-1] == ((48, 96), (1344, 2688))


def test_families_of_qwen3_start_at_its_64_token_floor():
    assert QWEN3.family_tilings("square") == [(n, n) for n in [8, 12, 16, 24, 32, 48, 64]]
    assert QWEN3.family_tilings("wide") == [(n, 2 * n) for n in [6, 8, 12, 16, 24, 32, 48]]  # 6x12 = 72 >= 64 > 5x10
    assert QWEN3.family_tilings("tall")[0] == (12, 6)
    assert QWEN3.family_tilings("equal") == [(32, 32), (16, 64), (64, 16), (8, 128), (128, 8)]
    assert QWEN3.points("equal")[-1] == ((128, 8), (4096, 256))


@pytest.mark.parametrize("scheme", [*PRESETS.values(), *VARIANTS.values()], ids=lambda s: s.name)
def test_ladders_span_the_budget_from_its_floor(scheme):
    for family, (r, c) in {"square": (1, 1), "wide": (1, 2), "tall": (2, 1)}.items():
        ladder = scheme.family_tilings(family)
        assert ladder and len(ladder) <= 12, (family, ladder)
        assert all(t.rows * c == t.cols * r for t in ladder), (family, ladder)  # the family's shape
        tokens = [t.cells for t in ladder]
        assert tokens == sorted(set(tokens)), (family, tokens)
        first = ladder[0].rows // r
        assert first == 1 or not fixed_point_by_the_processor(scheme, (first - 1) * r, (first - 1) * c)
        last = ladder[-1].rows // r
        assert tokens[-1] >= 4096 or not fixed_point_by_the_processor(scheme, (last + 1) * r, (last + 1) * c)
        assert all(a[0] * 2 >= b[0] for a, b in itertools.pairwise(ladder)), ladder  # geometric, no gap over 2x


def test_a_narrow_budget_keeps_its_families_inside():
    narrow = VARIANTS["narrow"]  # 200,000 to 400,000 px at F = 28: 256 to 510 tokens
    assert narrow.family_tilings("square") == [(16, 16), (22, 22)]  # 22^2 = 484 <= 510 < 529
    assert narrow.family_tilings("equal") == [(16, 16), (8, 32), (32, 8), (4, 64), (64, 4)]  # 256, a power of 4
    tiny = VARIANTS["tiny-max"]  # 1 to 50 tokens: equal takes 16 (as near 1024 as it gets); 4x4 is the top square
    assert tiny.family_tilings("equal") == [(4, 4), (2, 8), (8, 2), (1, 16), (16, 1)]
    assert tiny.family_tilings("square") == [(1, 1), (2, 2), (3, 3), (4, 4), (6, 6), (7, 7)]


def test_family_names_and_defaults():
    for scheme in PRESETS.values():
        assert scheme.families == ("square", "wide", "tall", "equal")
        assert scheme.default_families == ("square", "wide", "tall")
        assert not set(scheme.families) & set(GRID_FAMILY_NAMES)
        assert set(scheme.families) <= set(FAMILIES)


def test_targets_are_the_union_of_the_families_in_order():
    targets = QWEN2.targets()
    assert len(targets) == len(set(targets)) == 11 + 10 + 10 + 4  # 32x32 is both square and equal
    assert targets[:11] == tuple((n, n) for n in SQUARE_SIDES)
    assert targets[-4:] == ((16, 64), (64, 16), (8, 128), (128, 8))
    assert [t for t, _ in enumerate_tilings(QWEN2)] == list(targets[:31])  # the default families


def test_unknown_family_is_refused_in_one_line():
    for bad in ("1xk", "all", "SQUARE"):
        with pytest.raises(UsageError, match=rf"unknown tiling family '{bad}'; known families: square, wide, tall, "
                                             r"equal \(scheme 'qwen2-vl'\)"):
            QWEN2.family_tilings(bad)


# ----- the scheme interface, presets and the registry -----
def test_the_scheme_interface():
    for name, scheme in PRESETS.items():
        assert isinstance(scheme, Scheme) and isinstance(scheme, PixelBudget)
        assert PROFILES[name] is scheme
        assert (scheme.kind, scheme.max_crops, scheme.name) == (BUDGET, None, name)
    with pytest.raises(dataclasses.FrozenInstanceError):
        QWEN2.max_pixels = 1


def test_the_presets_hold_the_checkpoint_numbers():
    assert QWEN2.to_dict() == {"scheme": "pixel-budget", "name": "qwen2-vl", "patch_size": 14, "merge_size": 2,
                               "temporal_patch_size": 2, "min_pixels": 3136, "max_pixels": 12845056,
                               "max_aspect_ratio": 200}
    assert {**QWEN25.to_dict(), "name": "qwen2-vl"} == QWEN2.to_dict()
    assert QWEN3.to_dict() == {"scheme": "pixel-budget", "name": "qwen3-vl", "patch_size": 16, "merge_size": 2,
                               "temporal_patch_size": 2, "min_pixels": 65536, "max_pixels": 16777216,
                               "max_aspect_ratio": 200}


@pytest.mark.parametrize("name", list(PRESETS))
def test_processor_kwargs_configure_the_processor(name):
    scheme = PRESETS[name]
    proc = image_processor(scheme)
    got = (proc.size.shortest_edge, proc.size.longest_edge, proc.patch_size, proc.merge_size,
           proc.temporal_patch_size, proc.do_resize)
    assert got == (scheme.min_pixels, scheme.max_pixels, scheme.patch_size, scheme.merge_size,
                   scheme.temporal_patch_size, True)
    # The budget goes in `size`, so a caller can still replace it (min_pixels/max_pixels keywords would win).
    kwargs = {**scheme.processor_kwargs(), "size": {"shortest_edge": 3136, "longest_edge": 50176}}
    assert qwen2_vl_module().Qwen2VLImageProcessor(**kwargs).size.longest_edge == 50176


def test_a_scheme_with_another_aspect_limit_has_no_processor_setting():
    with pytest.raises(UsageError, match="max_aspect_ratio=100.*fixed at 200"):
        dataclasses.replace(QWEN2, max_aspect_ratio=100).processor_kwargs()
    assert dataclasses.replace(QWEN2, max_aspect_ratio=100).is_reachable((1, 150)) is False


@pytest.mark.parametrize("scheme", [*PRESETS.values(), *VARIANTS.values()], ids=lambda s: s.name)
def test_to_dict_round_trips_through_the_registry(scheme):
    data = json.loads(json.dumps(scheme.to_dict()))
    assert data["scheme"] == "pixel-budget"
    assert scheme_from_dict(data) == scheme and PixelBudget.from_dict(data) == scheme
    assert hash(scheme_from_dict(data)) == hash(scheme)


def test_a_foreign_dict_is_refused():
    with pytest.raises(UsageError, match="'closest-aspect' is not 'pixel-budget'"):
        PixelBudget.from_dict({**QWEN2.to_dict(), "scheme": "closest-aspect"})
    with pytest.raises(UsageError, match="unknown PixelBudget key"):
        scheme_from_dict({**QWEN2.to_dict(), "crop_size": 448})


# ----- preprocessor configs -----
def test_from_preprocessor_config_reads_the_checkpoints(tmp_path):
    assert PixelBudget.from_preprocessor_config(QWEN2_CONFIG) == QWEN2
    assert PixelBudget.from_preprocessor_config(QWEN25_CONFIG) == QWEN25
    path = tmp_path / "preprocessor_config.json"
    path.write_text(json.dumps(QWEN3_CONFIG))
    assert PixelBudget.from_preprocessor_config(path) == QWEN3
    assert PixelBudget.from_preprocessor_config(str(path)) == QWEN3
    assert PixelBudget.from_preprocessor_config({"image_processor": QWEN3_CONFIG}) == QWEN3  # processor_config.json


@pytest.mark.parametrize("config", [
    QWEN2_CONFIG, QWEN3_CONFIG,
    {"patch_size": 16},  # everything else the class defaults: 3136 to 1003520 px
    {"min_pixels": 1000},
    {"size": {"shortest_edge": 5000, "longest_edge": 600000}, "max_pixels": 700000},  # max_pixels wins over size
    {"size": {"shortest_edge": 5000}, "max_pixels": 700000},  # min_pixels/max_pixels fill a partial size in
    {"min_pixels": None, "max_pixels": 2_000_000, "merge_size": 3},
])
def test_configs_are_read_as_the_processor_reads_them(config):
    # A deep copy: the processor's __init__ writes min_pixels/max_pixels into the config's own `size` dict.
    proc = qwen2_vl_module().Qwen2VLImageProcessor.from_dict(copy.deepcopy(config))
    scheme = PixelBudget.from_preprocessor_config(config)
    assert (scheme.min_pixels, scheme.max_pixels, scheme.patch_size, scheme.merge_size, scheme.temporal_patch_size) \
        == (proc.size.shortest_edge, proc.size.longest_edge, proc.patch_size, proc.merge_size,
            proc.temporal_patch_size)
    for h, w in [(1, 1), (300, 500), (2000, 3000), (9000, 9000), (20, 3999)]:
        assert scheme.geometry(h, w).encoder_patches == proc.get_number_of_image_patches(h, w), (h, w)


def test_from_preprocessor_config_names_and_overrides():
    assert PixelBudget.from_preprocessor_config({"patch_size": 16}).name == "pixel-budget-custom"
    assert PixelBudget.from_preprocessor_config({**QWEN3_CONFIG, "merge_size": 4}).name == "qwen3-vl-custom"
    # Without a processor_class the first preset with the same numbers names it.
    assert PixelBudget.from_preprocessor_config({"min_pixels": 3136, "max_pixels": 12845056}).name == "qwen2-vl"
    custom = PixelBudget.from_preprocessor_config(QWEN3_CONFIG, max_pixels=1024 * 1024, name="q3-1k")
    assert (custom.name, custom.max_tokens, custom.min_tokens) == ("q3-1k", 1024, 64)
    assert PixelBudget.from_preprocessor_config(QWEN2_CONFIG, min_pixels=784).name == "qwen2-vl-custom"


@pytest.mark.parametrize("config, overrides, needle", [
    ({**QWEN2_CONFIG, "image_processor_type": "Glm4vImageProcessor"}, {}, "is for 'Glm4vImageProcessor'"),
    ({"image_mean": [0.5, 0.5, 0.5]}, {}, "none of the Qwen2VLImageProcessor keys"),
    ({**QWEN2_CONFIG, "do_resize": False}, {}, "do_resize false"),
    ({"size": {"shortest_edge": 3136}}, {}, "lacks shortest_edge or longest_edge"),
    ({"size": {"min_pixels": 3136, "max_pixels": 12845056}}, {}, "lacks shortest_edge or longest_edge"),
    ({"size": 3136}, {}, "'size' must be"),
    (QWEN2_CONFIG, {"crop_size": 448}, "unknown PixelBudget override(s) crop_size"),
    ({"min_pixels": 5000, "max_pixels": 5400}, {}, "holds no whole token of 28x28 px"),
    ({"patch_size": 0}, {}, "PixelBudget.patch_size must be a positive integer"),
])
def test_bad_configs_are_refused_in_one_line(config, overrides, needle):
    with pytest.raises(UsageError) as err:
        PixelBudget.from_preprocessor_config(config, **overrides)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_an_unreadable_config_file_is_refused(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(UsageError, match="cannot read preprocessor config"):
        PixelBudget.from_preprocessor_config(path)


def test_the_processor_refuses_the_configs_refused_here():
    """A size without both edges: the processor takes the config and fails on every image."""
    image_module = pytest.importorskip("PIL.Image")
    proc = qwen2_vl_module().Qwen2VLImageProcessor.from_dict({"size": {"shortest_edge": 3136}})
    with pytest.raises(ValueError, match="must contain 'shortest_edge' and 'longest_edge'"):
        proc(images=[image_module.new("RGB", (64, 64))])


# ----- bad input -----
@pytest.mark.parametrize("size, needle", [
    ((0, 10), "height must be a positive integer"),
    ((10, -3), "width must be a positive integer"),
    ((2.0, 10), "height must be a positive integer"),
    ((10, "5"), "width must be a positive integer"),
    ((True, 10), "height must be a positive integer"),
    ((2**63, 10), "below 9223372036854775808"),
    ((1, 201), "image 1x201 px has an aspect ratio of 201, over the 200"),
    ((9000, 44), "image 9000x44 px has an aspect ratio of 204.545"),
])
def test_bad_sizes_are_refused_in_one_line(size, needle):
    with pytest.raises(UsageError) as err:
        QWEN2.geometry(*size)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_sizes_at_the_aspect_limit_are_accepted():
    assert QWEN2.geometry(1, 200).canvas == (28, 812)  # beta = sqrt(3136/200) = 3.96: ceil(0.14) = 1, ceil(28.3) = 29
    assert QWEN2.geometry(8800, 44).canvas == (8792, 56)  # ratio 200: 8800/28 = 314.3 -> 314, 44/28 = 1.57 -> 2
