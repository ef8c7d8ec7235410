"""Tiled-canvas schemes (Llama 4, Cohere2-Vision) and their kernel: agreement with the real processors, the
inverse, float precision and tie rules, the token layouts, presets, configs and errors.

transformers is the judge. Grids come from its own selection functions (Llama 4's
``find_supported_resolutions`` + ``get_best_fit``, Cohere2-Vision's ``get_optimal_tiled_canvas``),
crops from Cohere2's ``get_number_of_image_patches`` and from running both image processors on
real PIL images, tokens from the processors' own layout methods (``Llama4Processor.replace_image_token``
/ ``_prompt_split_image``, ``Cohere2VisionProcessor.replace_image_token``) and from whole processor
calls with word-level tokenizers built here. Sizes written in the tests were found by searching
for a disagreement between two settings of the kernel and are checked against transformers in
the same test.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import random
import types

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tilesweep.errors import UsageError
from tilings import GRID, PROFILES, Scheme, Tiling, enumerate_tilings, resolve_profile, scheme_from_dict
from tilings.canvas import candidate_grids, int_to_float32, select_canvas
from tilings.tiled import PRESETS, TiledCanvas

LLAMA4 = PRESETS["llama4"]
COHERE2 = PRESETS["cohere2-vision"]
SEED = 20250405
DETERMINISTIC = settings(derandomize=True, max_examples=200, deadline=None, database=None)

# Other settings of the same processors, checked against them too: fewer tiles, tiny tiles, one tile only.
VARIANTS = {
    "llama4-max4": dataclasses.replace(LLAMA4, name="l4", max_tiles=4),
    "llama4-t28-max9": dataclasses.replace(LLAMA4, name="l9", tile_size=28, patch_size=14, max_tiles=9, tokens_per_tile=1),
    "llama4-max1": dataclasses.replace(LLAMA4, name="l1", max_tiles=1),
    "cohere2-max6": dataclasses.replace(COHERE2, name="c6", max_tiles=6),
    "cohere2-t32-max20": dataclasses.replace(COHERE2, name="c20", tile_size=32, max_tiles=20, tokens_per_tile=1),
    "cohere2-max1": dataclasses.replace(COHERE2, name="c1", max_tiles=1),
}


# ----- the real processors -----
def llama4_module():
    pytest.importorskip("torchvision")  # the processors' backend
    return pytest.importorskip("transformers.models.llama4.image_processing_llama4")


def cohere2_module():
    pytest.importorskip("torchvision")
    return pytest.importorskip("transformers.models.cohere2_vision.image_processing_cohere2_vision")


@functools.cache
def image_processor(scheme: TiledCanvas):
    import transformers

    return getattr(transformers, scheme.image_processor_class)(**scheme.processor_kwargs())


@functools.cache
def llama4_resolutions(max_tiles: int, tile: int):
    import torch
    from transformers.image_utils import SizeDict

    return torch.tensor(llama4_module().find_supported_resolutions(max_tiles, SizeDict(height=tile, width=tile)))


def llama4_grid(scheme: TiledCanvas, height: int, width: int) -> Tiling:
    """The canvas Llama4ImageProcessor picks (``get_best_fit`` over ``find_supported_resolutions``), in tiles."""
    proc = image_processor(scheme)
    canvas = llama4_module().get_best_fit((height, width), llama4_resolutions(proc.max_patches, proc.size.height))
    return Tiling(int(canvas[0]) // proc.size.height, int(canvas[1]) // proc.size.width)


@functools.cache
def llama4_layout(tiling: Tiling, tile: int) -> str:
    """The text Llama4Processor writes for one image of that grid: its own replace_image_token, which counts the
    tokens per tile from the pixel values' shape (patch 14, pixel shuffle 0.5) and calls _prompt_split_image."""
    import torch
    from transformers import Llama4Processor

    stand_in = types.SimpleNamespace(patch_size=14, downsample_ratio=int(round(1.0 / 0.5**2)))
    stand_in._prompt_split_image = lambda ratio, n: Llama4Processor._prompt_split_image(stand_in, ratio, n)
    inputs = {"pixel_values": torch.empty(1, 3, tile, tile), "aspect_ratios": [tuple(tiling)]}
    return Llama4Processor.replace_image_token(stand_in, inputs, 0)


LLAMA4_SPECIAL = ("<|image_start|>", "<|image|>", "<|image_end|>", "<|tile_x_separator|>", "<|tile_y_separator|>")


def llama4_counts(scheme: TiledCanvas, height: int, width: int) -> tuple[Tiling, int, int, int]:
    """(grid, crops, image tokens, sequence tokens): the tiles plus the global tile are the crops, 144 patch tokens
    each (the processor writes one run per image the encoder runs on)."""
    grid = llama4_grid(scheme, height, width)
    text = llama4_layout(grid, scheme.tile_size)
    patches = text.count("<|patch|>")
    per_tile = (scheme.tile_size // 14) ** 2 // 4
    return grid, patches // per_tile, patches, patches + sum(text.count(t) for t in LLAMA4_SPECIAL)


@functools.cache
def cohere2_layout(crops: int, patch_size: int) -> str:
    from transformers import Cohere2VisionProcessor

    stand_in = types.SimpleNamespace(patch_size=patch_size, boi_token="<|START_OF_IMG|>", eoi_token="<|END_OF_IMG|>",
                                     image_token="<|IMG_PATCH|>", img_line_break_token="<|IMG_LINE_BREAK|>")
    return Cohere2VisionProcessor.replace_image_token(stand_in, {"num_patches": [crops]}, 0)


def cohere2_counts(scheme: TiledCanvas, height: int, width: int) -> tuple[Tiling, int, int, int]:
    """(grid, crops, image tokens, sequence tokens) from get_optimal_tiled_canvas, get_number_of_image_patches
    and Cohere2VisionProcessor.replace_image_token (tokens per side: the image processor's patch_size 16)."""
    proc = image_processor(scheme)
    cols, rows = cohere2_module().get_optimal_tiled_canvas(
        (height, width), (proc.size.height, proc.size.width), proc.min_patches, proc.max_patches)
    crops = proc.get_number_of_image_patches(height, width)
    text = cohere2_layout(crops, int(scheme.tokens_per_tile**0.5))
    image = text.count("<|IMG_PATCH|>")
    return Tiling(rows, cols), crops, image, image + text.count("<|IMG_LINE_BREAK|>") + 2


def processor_counts(scheme: TiledCanvas, height: int, width: int) -> tuple[Tiling, int, int, int]:
    return (llama4_counts if scheme.order == "llama4" else cohere2_counts)(scheme, height, width)


def predicted_counts(scheme: TiledCanvas, height: int, width: int) -> tuple[Tiling, int, int, int]:
    g = scheme.geometry(height, width)
    return g.tiling, g.crops, g.image_tokens, g.sequence_tokens


def disagreements(scheme: TiledCanvas, sizes) -> list[str]:
    wrong = []
    for h, w in sizes:
        want, got = processor_counts(scheme, h, w), predicted_counts(scheme, h, w)
        if got != want:
            wrong.append(f"{h}x{w}: processor {want}, tilings {got}")
    return wrong


def sample_sizes(scheme: TiledCanvas, seed: int, n_random: int = 500) -> list[tuple[int, int]]:
    """Seeded sizes: ordinary, extreme aspect ratios, tiny, huge, exact ties of scales (images on a grid's ratio),
    float ties (two grids' scales closer than float32 can tell apart), sizes around each canvas side, and every
    inverse with its neighbours."""
    rng = random.Random(seed)
    tile, most = scheme.tile_size, scheme.max_tiles
    grids = [(r, c) for r in range(1, most + 1) for c in range(1, most + 1) if r * c <= most]
    sizes = [(rng.randint(1, 4000), rng.randint(1, 4000)) for _ in range(n_random)]
    for _ in range(n_random // 4):  # extreme aspect ratios, both ways
        thin, long = rng.randint(1, 60), rng.randint(600, 100_000)
        sizes += [(thin, long), (long, thin)]
    sizes += [(rng.randint(1, 40), rng.randint(1, 40)) for _ in range(n_random // 3)]  # tiny
    sizes += [(rng.randint(4000, 10**9), rng.randint(4000, 10**9)) for _ in range(n_random // 10)]  # huge
    for r, c in rng.sample(grids, min(len(grids), 30)):  # on a grid's ratio: several grids tie exactly
        sizes += [(r * s, c * s) for s in rng.sample(range(1, 3 * tile), 5)]
    for _ in range(n_random // 2):  # float ties: a*T/h and b*T/w within a float32 rounding of each other
        (a, _), (_, b) = rng.choice(grids), rng.choice(grids)
        h = rng.randint(10**5, 10**8)
        sizes += [(h, b * h // a + d) for d in (-1, 0, 1)] + [(b * h // a + 1, h)]
    for k in range(1, most + 1):  # around k whole tiles: scales just below, at and above 1
        for d in (-2, -1, 0, 1, 2):
            sizes += [(k * tile + d, rng.randint(1, most * tile)), (rng.randint(1, most * tile), k * tile + d)]
    for t in scheme.targets():  # every inverse and the sizes 1..3 px around it
        h, w = scheme.resolution_for(t)
        sizes += [(h + dh, w + dw) for dh in (-3, -1, 0, 1, 3) for dw in (-3, -2, 0, 2, 3)]
    return [(h, w) for h, w in sizes if 1 <= h < 2**63 and 1 <= w < 2**63]


# ----- agreement with the processors -----
@pytest.mark.parametrize("scheme", [LLAMA4, COHERE2], ids=lambda s: s.name)
def test_counts_agree_with_the_processor_on_every_target_and_thousands_of_sizes(scheme):
    sizes = sample_sizes(scheme, SEED, n_random=300)
    assert len(set(sizes)) >= 2000
    wrong = disagreements(scheme, sizes)
    assert not wrong, f"{len(wrong)} of {len(sizes)} sizes disagree ({scheme.name}):\n" + "\n".join(wrong[:20])


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_counts_agree_with_the_processor_for_other_settings(variant):
    scheme = VARIANTS[variant]
    sizes = sample_sizes(scheme, SEED + 1, n_random=150)
    wrong = disagreements(scheme, sizes)
    assert not wrong, f"{len(wrong)} of {len(sizes)} sizes disagree ({variant}):\n" + "\n".join(wrong[:20])


def test_float32_decides_llama4_and_float64_cohere2():
    """Sizes where two grids' scales differ below float32's precision: each processor follows its own dtype."""
    # Both images are too large for any grid (every scale < 1): the least down-scaling wins, and there 2x5's and
    # 2x6's scales differ by less than a float32 rounding, so the dtype decides.
    llama64 = dataclasses.replace(LLAMA4, arithmetic="float64")
    assert llama4_grid(LLAMA4, 2205611, 5514028) == LLAMA4.geometry(2205611, 5514028).tiling == (2, 5)
    assert llama64.geometry(2205611, 5514028).tiling == (2, 6)
    cohere32 = dataclasses.replace(COHERE2, arithmetic="float32")
    assert cohere2_counts(COHERE2, 1945821, 4864553)[0] == COHERE2.geometry(1945821, 4864553).tiling == (2, 6)
    assert cohere32.geometry(1945821, 4864553).tiling == (2, 5)


def test_llama4_converts_the_image_side_to_float32_once():
    """torch converts the int64 side straight to float32; rounding through a double first picks another grid."""
    h, w = 183622711036084230, 1652604399324758070  # both above 2**53
    assert llama4_grid(LLAMA4, h, w) == LLAMA4.geometry(h, w).tiling == (1, 9)
    # 2**53 + 2**29 + 1 is 2**53 + 2**30 in float32 (above the half-way point), but 2**53 through a double.
    assert int_to_float32(2**53 + 2**29 + 1) == 2**53 + 2**30
    assert int_to_float32(2**24 + 1) == 2**24 and int_to_float32(2**24 + 3) == 2**24 + 4  # ties to even


def test_llama4_breaks_ties_by_the_smallest_area_not_by_its_list_order():
    # A 500x500 image: every grid of at least 2x2 fits it at scale 672/500 = 1.344 (2x2, 2x3, ..., 2x8, 3x2, ...).
    # Llama 4's list puts 2x8 second; the smallest area, 2x2, wins. Taking the first in the list would give 2x8.
    assert candidate_grids("llama4", 16)[:2] == (Tiling(1, 16), Tiling(2, 8))
    assert llama4_grid(LLAMA4, 500, 500) == LLAMA4.geometry(500, 500).tiling == (2, 2)
    assert dataclasses.replace(LLAMA4, tie="first").geometry(500, 500).tiling == (2, 8)
    # Cohere2's list is sorted by area, so its first-on-a-tie rule lands on the smallest area as well.
    assert cohere2_counts(COHERE2, 700, 700)[0] == COHERE2.geometry(700, 700).tiling == (2, 2)


def test_least_up_scaling_and_least_down_scaling_by_hand():
    # 300x700 with 336 px tiles: 1x3 fits at min(336/300, 1008/700) = 1.12 >= 1 and nothing smaller fits (1x2
    # needs 672/700 < 1); with 512 px tiles 1x2 fits at min(512/300, 1024/700) = 1.46 and 1x1 does not.
    assert LLAMA4.geometry(300, 700).tiling == llama4_grid(LLAMA4, 300, 700) == (1, 3)
    assert COHERE2.geometry(300, 700).tiling == cohere2_counts(COHERE2, 300, 700)[0] == (1, 2)
    # 10000x10000: every grid needs down-scaling; the largest square grid needs the least (4x4 and 3x3).
    assert LLAMA4.geometry(10_000, 10_000).tiling == llama4_grid(LLAMA4, 10_000, 10_000) == (4, 4)
    assert COHERE2.geometry(10_000, 10_000).tiling == cohere2_counts(COHERE2, 10_000, 10_000)[0] == (3, 3)


@contextlib.contextmanager
def one_torch_thread():
    """Run torch on one thread: on a shared 2-core machine two threads contend and an image takes 10x longer."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def real_image_sizes(scheme: TiledCanvas) -> list[tuple[int, int]]:
    """Every target's canvas, its neighbours for grids of up to two tiles, and a few random sizes."""
    rng = random.Random(SEED)
    sizes = []
    for t in scheme.targets():
        h, w = scheme.resolution_for(t)
        sizes.append((h, w))
        if t.cells <= 2:
            sizes += [(h - 1, w + 1), (h + 2, w - 3)]
    sizes += [(rng.randint(1, 900), rng.randint(1, 900)) for _ in range(6)]
    return sizes


@pytest.mark.parametrize("scheme", [LLAMA4, COHERE2], ids=lambda s: s.name)
def test_the_processor_run_on_real_images_makes_the_predicted_crops_and_canvas(scheme):
    """The whole preprocessing on PIL images: every target at its size, neighbours of the small ones, random sizes."""
    image_module = pytest.importorskip("PIL.Image")
    proc = image_processor(scheme)
    wrong = []
    tile = (scheme.tile_size, scheme.tile_size)
    with one_torch_thread():
        for h, w in real_image_sizes(scheme):
            out = proc(images=[image_module.new("RGB", (w, h), (120, 60, 30))], return_tensors="pt")
            pixels = out["pixel_values"]
            if scheme.order == "llama4":
                rows, cols = (int(v) for v in out["aspect_ratios"][0])
                reported = pixels.shape[0]
            else:
                rows, cols = processor_counts(scheme, h, w)[0]
                reported = int(out["num_patches"][0])
            got = (reported, int(pixels.shape[0]), tuple(pixels.shape[-2:]), (rows * tile[0], cols * tile[1]))
            g = scheme.geometry(h, w)
            want = (g.crops, g.crops, tile, g.canvas)
            if got != want:
                wrong.append(f"{h}x{w}: processor (crops, images, tile, canvas) {got}, tilings {want}")
    assert not wrong, f"{len(wrong)} images disagree ({scheme.name}):\n" + "\n".join(wrong[:20])


def word_level_tokenizer(specials: dict[str, str]):
    """A tokenizer built here (no download) that knows each special token as one token, plus the word 'hi' (and a
    pad token: Cohere2VisionProcessor pads)."""
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {"[UNK]": 0, "[PAD]": 1, "hi": 2, **{token: i + 3 for i, token in enumerate(specials.values())}}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]",
                                                extra_special_tokens=specials)


LLAMA4_TOKENS = {"image_token": "<|image|>", "patch_token": "<|patch|>", "start": "<|image_start|>",
                 "end": "<|image_end|>", "x": "<|tile_x_separator|>", "y": "<|tile_y_separator|>"}
COHERE2_TOKENS = {"image_token": "<|IMG_PATCH|>", "boi_token": "<|START_OF_IMG|>", "eoi_token": "<|END_OF_IMG|>",
                  "img_line_break_token": "<|IMG_LINE_BREAK|>"}


def whole_processor(scheme: TiledCanvas):
    """The real Llama4Processor / Cohere2VisionProcessor over the scheme's image processor and a word-level
    tokenizer; (processor, the special tokens' ids, the id the model fills, the text marking one image)."""
    transformers = pytest.importorskip("transformers")
    if scheme.order == "llama4":
        tokenizer = word_level_tokenizer(LLAMA4_TOKENS)
        proc = transformers.Llama4Processor(image_processor=image_processor(scheme), tokenizer=tokenizer)
        names, image = LLAMA4_TOKENS.values(), "<|patch|>"
        marker = "<|image|>"
    else:
        tokenizer = word_level_tokenizer(COHERE2_TOKENS)
        proc = transformers.Cohere2VisionProcessor(image_processor=image_processor(scheme), tokenizer=tokenizer)
        names, image = COHERE2_TOKENS.values(), "<|IMG_PATCH|>"
        marker = "<|IMG_PATCH|>"
    ids = tokenizer.convert_tokens_to_ids(list(names))
    return proc, set(ids), tokenizer.convert_tokens_to_ids(image), marker


@pytest.mark.parametrize("scheme", [LLAMA4, COHERE2], ids=lambda s: s.name)
def test_the_whole_processor_adds_the_predicted_tokens(scheme):
    image_module = pytest.importorskip("PIL.Image")
    torch = pytest.importorskip("torch")
    proc, special, image_id, marker = whole_processor(scheme)
    wrong = []
    for t in [Tiling(1, 1), Tiling(1, 2), Tiling(2, 3), Tiling(3, 1)]:
        h, w = scheme.resolution_for(t)
        with one_torch_thread():
            out = proc(text=[f"hi {marker} hi"], images=[image_module.new("RGB", (w, h))], return_tensors="pt")
        ids = out["input_ids"][0]
        got = (int((ids == image_id).sum()), int(torch.isin(ids, torch.tensor(sorted(special))).sum()))
        g = scheme.target_geometry(t)
        if got != (g.image_tokens, g.sequence_tokens) or len(ids) != g.sequence_tokens + 2:
            wrong.append(f"{t}: processor (image, sequence, all) {(*got, len(ids))}, tilings "
                         f"{(g.image_tokens, g.sequence_tokens, g.sequence_tokens + 2)}")
    assert not wrong, "\n".join(wrong)


# ----- the inverse -----
@DETERMINISTIC
@given(st.integers(1, 20), st.integers(1, 20))
def test_reachable_exactly_within_the_tile_limit(rows, cols):
    for scheme in (LLAMA4, COHERE2, VARIANTS["llama4-max4"]):
        inside = rows * cols <= scheme.max_tiles
        assert scheme.is_reachable(Tiling(rows, cols)) == inside
        if inside:
            assert scheme.geometry(*scheme.resolution_for(Tiling(rows, cols))).tiling == (rows, cols)
        else:
            with pytest.raises(UsageError, match=f"{rows}x{cols} has {rows * cols} tiles"):
                scheme.resolution_for(Tiling(rows, cols))


@pytest.mark.parametrize("scheme", [LLAMA4, COHERE2], ids=lambda s: s.name)
def test_every_target_at_its_canvas_gives_itself_to_the_processor(scheme):
    assert len(scheme.targets()) == sum(1 for r in range(1, 17) for c in range(1, 17) if r * c <= scheme.max_tiles)
    for t in scheme.targets():
        h, w = scheme.resolution_for(t)
        assert (h, w) == (t.rows * scheme.tile_size, t.cols * scheme.tile_size)
        assert processor_counts(scheme, h, w)[0] == t


# ----- the layout, the interface, families -----
def test_geometry_counts_by_hand():
    # Llama 4, 2x3: 6 tiles + the global tile = 7 crops of 144 tokens = 1008; separators: 2 x-separators and one
    # y-separator per row = 6; start, <|image|>, end: 1008 + 6 + 3 = 1017 = 145*6 + 147. Patches (336/14)^2 = 576.
    assert LLAMA4.target_geometry(Tiling(2, 3)) == (Tiling(2, 3), 7, (672, 1008), 1008, 1017, None, None, 7 * 576)
    # One tile: no global tile, no separators: 144 + 3.
    assert LLAMA4.target_geometry(Tiling(1, 1))[1:5] == (1, (336, 336), 144, 147)
    # Cohere2, 2x3: 7 crops of 256 tokens and one line break each, plus begin and end: 7*257 + 2 = 1801.
    assert COHERE2.target_geometry(Tiling(2, 3)) == (Tiling(2, 3), 7, (1024, 1536), 1792, 1801, None, None, 7 * 1024)
    assert COHERE2.target_geometry(Tiling(1, 1))[1:5] == (1, (512, 512), 256, 259)
    # Tokens are linear in crops for both: 1x8 and 2x4 cost the same.
    for scheme in (LLAMA4, COHERE2):
        assert scheme.target_geometry(Tiling(1, 8)).image_tokens == scheme.target_geometry(Tiling(2, 4)).image_tokens


def test_the_scheme_interface_and_the_processor_candidate_order():
    for scheme in (LLAMA4, COHERE2):
        assert isinstance(scheme, Scheme) and PROFILES[scheme.name] is scheme
        assert (scheme.kind, scheme.SCHEME) == (GRID, "tiled-canvas")
        assert scheme.families == ("1xk", "2xk", "kx1", "all") and scheme.default_families == ("1xk", "2xk", "kx1")
    assert (LLAMA4.max_crops, COHERE2.max_crops) == (16, 12)
    # Llama 4's own list (canvases, height first), and Cohere2's own (width, height) list sorted by area.
    resolutions = llama4_resolutions(16, 336).tolist()
    assert LLAMA4.targets() == tuple(Tiling(h // 336, w // 336) for h, w in resolutions)
    ratios = sorted(cohere2_module().get_all_supported_aspect_ratios(12), key=lambda x: x[0] * x[1])
    assert COHERE2.targets() == tuple(Tiling(rows, cols) for cols, rows in ratios)
    assert COHERE2.targets()[:3] == ((1, 1), (2, 1), (1, 2))  # within an area: fewer columns first


def test_families_list_the_reachable_grids():
    assert LLAMA4.family_tilings("1xk") == [Tiling(1, k) for k in range(1, 17)]
    assert LLAMA4.family_tilings("2xk") == [Tiling(2, k) for k in range(1, 9)]
    assert COHERE2.family_tilings("kx1") == [Tiling(k, 1) for k in range(1, 13)]
    assert COHERE2.points("2xk") == [(Tiling(2, k), (1024, 512 * k)) for k in range(1, 7)]
    assert [t for t, _ in enumerate_tilings("cohere2-vision")] == (
        [Tiling(1, k) for k in range(1, 13)] + [Tiling(2, k) for k in range(1, 7)] + [Tiling(k, 1) for k in range(3, 13)]
    )
    with pytest.raises(UsageError, match="unknown tiling family '3xk'"):
        LLAMA4.family_tilings("3xk")


def test_the_kernel_is_the_processors_selection_function_for_its_settings():
    """select_canvas with Llama 4's and Cohere2's settings, called directly (what Mllama's scheme can reuse)."""
    sizes = [(300, 700), (500, 500), (2205611, 5514028), (1, 1), (10**6, 3)]
    for h, w in sizes:
        got = select_canvas(h, w, candidate_grids("llama4", 16), 336, arithmetic="float32", tie="min-area")
        assert got == llama4_grid(LLAMA4, h, w), (h, w)
        got = select_canvas(h, w, candidate_grids("cohere2", 12), 512, arithmetic="float64", tie="first")
        assert got == cohere2_counts(COHERE2, h, w)[0], (h, w)


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
    for scheme in (LLAMA4, COHERE2):
        with pytest.raises(UsageError, match=needle) as info:
            scheme.geometry(*size)
        assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("target", "needle"),
    [
        ((1, 17), r"tiling 1x17 has 17 tiles, over scheme 'llama4'.s 16 \(max_patches\); pick rows\*cols <= 16"),
        ((5, 4), "5x4 has 20 tiles"),
        ((0, 2), "tiling rows must be a positive integer, got 0"),
        ((1.0, 2), "tiling rows must be a positive integer, got 1.0"),
        ("1x2", "pair"),
    ],
)
def test_unreachable_targets_are_refused_in_one_line(target, needle):
    for call in (LLAMA4.resolution_for, LLAMA4.target_geometry):
        with pytest.raises(UsageError, match=needle) as info:
            call(target)
        assert "\n" not in str(info.value)
    assert not LLAMA4.is_reachable(target)


# ----- presets, processor settings, dicts, configs -----
def test_the_presets_hold_the_processors_and_models_numbers():
    transformers = pytest.importorskip("transformers")
    llama, cohere = transformers.Llama4ImageProcessor(), transformers.Cohere2VisionImageProcessor()
    assert (llama.size["height"], llama.max_patches, llama.resize_to_max_canvas) == (LLAMA4.tile_size, 16, False)
    assert (cohere.size["height"], cohere.max_patches, cohere.crop_to_patches) == (COHERE2.tile_size, 12, True)
    assert cohere.patch_size**2 == COHERE2.tokens_per_tile  # Cohere2VisionProcessor: patch_size ** 2 tokens a tile
    # Llama4Processor's defaults: patch 14, pixel shuffle 0.5 -> (336/14)^2 / 4.
    assert (LLAMA4.tile_size // 14) ** 2 // int(round(1 / 0.5**2)) == LLAMA4.tokens_per_tile == 144
    config = transformers.Cohere2VisionConfig()
    side = config.vision_config.image_size // config.vision_config.patch_size // config.downsample_factor
    assert (config.vision_config.image_size, side * side) == (COHERE2.tile_size, COHERE2.tokens_per_tile)


def test_processor_kwargs_configure_the_processors():
    for scheme in (LLAMA4, COHERE2, *VARIANTS.values()):
        proc = image_processor(scheme)
        assert (proc.size.height, proc.size.width, proc.max_patches) == (scheme.tile_size,) * 2 + (scheme.max_tiles,)
    assert LLAMA4.processor_kwargs() == {"size": {"height": 336, "width": 336}, "max_patches": 16,
                                         "resize_to_max_canvas": False}
    assert COHERE2.processor_kwargs() == {"size": {"height": 512, "width": 512}, "crop_to_patches": True,
                                          "min_patches": 1, "max_patches": 12}
    for change in ({"arithmetic": "float64"}, {"tie": "first"}, {"thumbnail": False}):
        with pytest.raises(UsageError, match="has no Llama4ImageProcessor setting"):
            dataclasses.replace(LLAMA4, **change).processor_kwargs()
    with pytest.raises(UsageError, match="has no Cohere2VisionImageProcessor setting"):
        dataclasses.replace(COHERE2, arithmetic="float32").processor_kwargs()


@pytest.mark.parametrize("scheme", [LLAMA4, COHERE2, *VARIANTS.values()], ids=lambda s: s.name)
def test_to_dict_round_trips_through_the_registry(scheme):
    data = scheme.to_dict()
    assert data["scheme"] == "tiled-canvas"
    assert json.loads(json.dumps(data)) == data
    assert scheme_from_dict(json.loads(json.dumps(data))) == scheme == TiledCanvas.from_dict(data)


@pytest.mark.parametrize("scheme", [LLAMA4, COHERE2], ids=lambda s: s.name)
def test_from_preprocessor_config_reads_what_the_processor_saves(tmp_path, scheme):
    image_processor(scheme).save_pretrained(tmp_path)
    path = tmp_path / "preprocessor_config.json"
    assert TiledCanvas.from_preprocessor_config(path) == scheme
    assert resolve_profile(str(path)) == scheme  # the registry routes it here, not to the GotOcr2 reader
    saved = json.loads(path.read_text())
    assert TiledCanvas.from_preprocessor_config({**saved, "max_patches": 6}).name == f"{scheme.name}-custom"
    # The -Fast names of older checkpoints are the same processors.
    fast = {**saved, "image_processor_type": saved["image_processor_type"] + "Fast"}
    assert TiledCanvas.from_preprocessor_config(fast) == scheme


def test_from_preprocessor_config_reads_the_tokens_per_tile_of_a_combined_processor_config():
    llama = {"image_processor": {"image_processor_type": "Llama4ImageProcessorFast", "max_patches": 16,
                                 "size": {"height": 336, "width": 336}, "resize_to_max_canvas": False},
             "patch_size": 14, "pixel_shuffle_ratio": 0.5, "processor_class": "Llama4Processor"}
    assert TiledCanvas.from_preprocessor_config(llama) == LLAMA4
    wide = TiledCanvas.from_preprocessor_config({**llama, "pixel_shuffle_ratio": 1.0})
    assert (wide.tokens_per_tile, wide.name) == (576, "llama4-custom")
    cohere = {"image_processor": {"image_processor_type": "Cohere2VisionImageProcessor", "patch_size": 8,
                                  "crop_to_patches": False}}
    one = TiledCanvas.from_preprocessor_config(cohere)
    assert (one.tokens_per_tile, one.max_tiles, one.targets()) == (64, 1, (Tiling(1, 1),))
    assert one.geometry(512, 5000).crops == image_processor(one).get_number_of_image_patches(512, 5000) == 1


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ({"image_processor_type": "Llama4ImageProcessor", "resize_to_max_canvas": True}, "resize_to_max_canvas true"),
        ({"image_processor_type": "Llama4ImageProcessor", "size": {"height": 336, "width": 224}}, "must be square"),
        ({"image_processor_type": "GotOcr2ImageProcessor", "max_patches": 6}, "not Llama4ImageProcessor or Cohere2"),
        ({"do_resize": True}, "no known image processor"),
        ({"image_processor_type": "Cohere2VisionImageProcessor", "max_patches": 0}, "max_tiles must be a positive"),
        ("/nonexistent/preprocessor_config.json", "cannot read preprocessor config"),
    ],
)
def test_bad_configs_are_refused_in_one_line(config, needle):
    with pytest.raises(UsageError, match=needle) as info:
        TiledCanvas.from_preprocessor_config(config)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"tile_size": 340}, "tile_size 340 is not a multiple of patch_size 14"),
        ({"max_tiles": 0}, "max_tiles must be a positive integer, got 0"),
        ({"order": "molmo"}, "order must be one of llama4, cohere2, got 'molmo'"),
        ({"arithmetic": "float16"}, "arithmetic must be one of float32, float64"),
        ({"tie": "last"}, "tie must be one of first, min-area"),
        ({"frame_tokens": -1}, "frame_tokens must be a whole number >= 0, got -1"),
        ({"thumbnail": 1}, "thumbnail must be true or false, got 1"),
        ({"name": ""}, "name must be a non-empty string"),
    ],
)
def test_bad_settings_are_refused_in_one_line(change, needle):
    with pytest.raises(UsageError, match=needle) as info:
        dataclasses.replace(LLAMA4, **change)
    assert "\n" not in str(info.value)
