"""Ceiling-grid scheme (Phi-4-multimodal's image processor): agreement with the real processor, the inverse,
the pad family, the preset, configs and errors.

transformers is the judge. On thousands of sizes (huge ones included) its own
``Phi4MultimodalImageProcessor.dynamic_preprocess`` runs with the pixel resampling swapped for
blank tensors of the sizes it asks for (`shape_only_pixels`): the grid, the canvas, the padding
mask and the refusal of extreme images are the processor's, only no pixel is computed (a real
resize of a 10^9 px side cannot run). The tokens of those sizes are ``_preprocess``'s count
applied to that mask (`processor_token_count`, its lines verbatim). The whole processor then
runs, unchanged, on real images: ``Phi4MultimodalProcessor`` with a word-level tokenizer built
here (no download) at every target, every pad point and a sample of the seeded sizes; there it
must agree both with tilings and with the bulk path, which checks the swap and the transcribed
count. Numbers written in the tests were worked out by hand from the processor's rule
(arithmetic in the comments) or come from the survey and are checked against transformers in
the same test.
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
from tilings import GRID, PROFILES, Scheme, Tiling, enumerate_tilings, resolve_profile, scheme_from_dict
from tilings.ceiling import PRESETS, CeilingGrid

PHI4 = PRESETS["phi4-mm"]
SEED = 20250226
DETERMINISTIC = settings(derandomize=True, max_examples=200, deadline=None, database=None)
REFUSED = "refused"

# Other settings of the same kernel, checked against the processor too: a lower tile limit (the closest-aspect
# branch from 13 tiles on), 336 px tiles and at most 16, tiny tiles with an odd number of mask patches per tile (each tile's mask
# is subsampled on its own), and one tile at most.
VARIANTS = {
    "max12": dataclasses.replace(PHI4, name="max12", dynamic_hd=12),
    "t336-max16": dataclasses.replace(PHI4, name="t336", tile_size=336, dynamic_hd=16),
    "t42-odd-mask": CeilingGrid(name="t42", tile_size=42, patch_size=14, dynamic_hd=9),
    "one-tile": dataclasses.replace(PHI4, name="one", tile_size=28, dynamic_hd=1),
}

# Survey (/work/shared/VLM-SCHEMES.md, section 7): grid -> image tokens at the exact canvas, 273 + 256rc + 16r.
SURVEY_EXACT = {(1, 1): 545, (1, 2): 801, (2, 2): 1329, (1, 8): 2337, (2, 4): 2353, (6, 6): 9585}

# A preprocessor_config.json as Phi4MultimodalImageProcessor saves it (its class defaults).
PHI4_CONFIG = {
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "dynamic_hd": 36,
    "image_mean": [0.5, 0.5, 0.5],
    "image_processor_type": "Phi4MultimodalImageProcessor",
    "image_std": [0.5, 0.5, 0.5],
    "patch_size": 14,
    "processor_class": "Phi4MultimodalProcessor",
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"height": 448, "width": 448},
}


# ----- transformers, the judge -----
def phi4_module():
    pytest.importorskip("torchvision")  # the image processor's backend
    return pytest.importorskip("transformers.models.phi4_multimodal.image_processing_phi4_multimodal")


@functools.cache
def image_processor(scheme: CeilingGrid):
    return phi4_module().Phi4MultimodalImageProcessor(**scheme.processor_kwargs())


@functools.cache
def _zero():
    torch = pytest.importorskip("torch")
    return torch.zeros(1, 1, 1, dtype=torch.uint8)


def blank(channels: int, height: int, width: int):
    """An image tensor of any size that holds one byte: every element is the same zero (stride 0)."""
    return _zero().expand(channels, height, width)


_SHAPE_ONLY = types.SimpleNamespace(
    resize=lambda image, size, **_: blank(image.shape[0], *size),
    pad=lambda image, padding, **_: blank(image.shape[0], image.shape[1] + padding[1] + padding[3],
                                          image.shape[2] + padding[0] + padding[2]),
)


@contextlib.contextmanager
def shape_only_pixels():
    """The processor module's torchvision functions replaced by ones that return blank images of the size asked
    for: its own size arithmetic and mask run unchanged, no pixel is computed."""
    module = phi4_module()
    real = module.tvF
    module.tvF = _SHAPE_ONLY
    try:
        yield
    finally:
        module.tvF = real


def processor_token_count(attention_mask, mask_size: int) -> int:
    """``Phi4MultimodalImageProcessor._preprocess``'s ``num_img_tokens`` from ``dynamic_preprocess``'s mask
    (transformers 5.24, its lines verbatim)."""
    mask_height, mask_width = attention_mask.shape[-2:]
    attention_mask_reshape = attention_mask.reshape(mask_height // mask_size, mask_size, mask_width // mask_size,
                                                    mask_size)
    attention_mask_reshape = attention_mask_reshape.transpose(1, 2)
    attention_mask_reshape = attention_mask_reshape.reshape(-1, mask_size, mask_size).contiguous()
    downsample_attention_mask = attention_mask_reshape[:, 0::2, 0::2]
    downsample_attention_mask = downsample_attention_mask.reshape(
        mask_height // mask_size, mask_width // mask_size,
        mask_size // 2 + mask_size % 2, mask_size // 2 + mask_size % 2,
    )
    downsample_attention_mask = downsample_attention_mask.transpose(1, 2)
    downsample_attention_mask = downsample_attention_mask.reshape(
        downsample_attention_mask.size(0) * downsample_attention_mask.size(1),
        downsample_attention_mask.size(2) * downsample_attention_mask.size(3),
    )
    return (256 + 1 + int(downsample_attention_mask.sum().item())
            + int(downsample_attention_mask[:, 0].sum().item()) + 16)


def reference(scheme: CeilingGrid, height: int, width: int):
    """(grid, crops, canvas, image tokens) from the processor's own arithmetic, or REFUSED where it raises."""
    proc = image_processor(scheme)
    tile, patch = proc.size.height, proc.patch_size
    mask_size = tile // patch
    with shape_only_pixels():
        try:
            canvas, mask = proc.dynamic_preprocess(blank(3, height, width), tile, patch, mask_size,
                                                   max_num=proc.dynamic_hd)
        except ValueError:
            return REFUSED
    grid = Tiling(mask.shape[0] // mask_size, mask.shape[1] // mask_size)
    return grid, grid.cells + 1, tuple(canvas.shape[-2:]), processor_token_count(mask, mask_size)


def predicted(scheme: CeilingGrid, height: int, width: int):
    try:
        g = scheme.geometry(height, width)
    except UsageError:
        return REFUSED
    return g.tiling, g.crops, g.canvas, g.image_tokens


def disagreements(scheme: CeilingGrid, sizes) -> list[str]:
    wrong = []
    for h, w in sizes:
        want, got = reference(scheme, h, w), predicted(scheme, h, w)
        if got != want:
            wrong.append(f"{h}x{w}: processor {want}, tilings {got}")
    return wrong


def sample_sizes(scheme: CeilingGrid, seed: int, n_random: int = 400) -> list[tuple[int, int]]:
    """Seeded sizes: ordinary, extreme aspect ratios (refused or not), tiny, every inverse and the pixels around
    it (a pixel past a tile starts a new one), padding just under, at and over one and two patches; and, fewer
    because the processor rebuilds its candidate set on each (6 ms here), sizes over the tile limit: huge ones,
    exact ratios of a grid (every grid of that ratio ties) with the tie rule's area boundaries, and aspect ratios
    halfway between two grids'."""
    rng = random.Random(seed)
    tile, patch, n = scheme.tile_size, scheme.patch_size, scheme.dynamic_hd
    fits = tile * math.isqrt(n)  # squares up to here keep their ceiling grid
    sizes = [(rng.randint(1, fits), rng.randint(1, fits)) for _ in range(n_random)]
    for _ in range(n_random // 4):  # extreme aspect ratios, both ways, within the limit along the long side
        thin, long = rng.randint(1, 60), rng.randint(tile, n * tile)
        sizes += [(thin, long), (long, thin)]
    sizes += [(rng.randint(1, tile), rng.randint(1, tile)) for _ in range(n_random // 4)]  # tiny: one tile
    for t in scheme.targets():  # every inverse and the pixels around it
        h, w = scheme.resolution_for(t)
        sizes += [(h + dh, w + dw) for dh in (-1, 0, 1) for dw in (-1, 0, 1)]
    for t in rng.sample(scheme.targets(), min(30, len(scheme.targets()))):  # padding around the mask's threshold
        h, w = scheme.resolution_for(t)
        for d in (patch - 1, patch, patch + 1, 2 * patch - 1, 2 * patch, 2 * patch + 1, tile // 2, tile - 1):
            sizes += [(h, w - d), (h - d, w)]
    # over the tile limit
    over = fits + 2 * tile
    sizes += [(rng.randint(fits, over), rng.randint(fits, over)) for _ in range(n_random // 8)]
    sizes += [(rng.randint(over, 10**9), rng.randint(over, 10**9)) for _ in range(n_random // 10)]  # huge
    sizes += [(rng.randint(1, 60), rng.randint(n * tile, 80 * tile)) for _ in range(n_random // 20)]  # thin and long
    grids = [(c, r) for c in range(1, n + 1) for r in range(1, n + 1) if c * r <= n]
    for c0, r0 in rng.sample(grids, min(25, len(grids))):  # exactly a grid's ratio beyond the limit: ties
        if math.gcd(c0, r0) == 1:
            low = tile * (math.isqrt(n) + 1) // min(c0, r0) + 1
            sizes += [(r0 * u, c0 * u) for u in rng.sample(range(low, 4 * low), 2)]
            k = math.isqrt(n // (c0 * r0)) + 1  # the tie rule's area boundary u = k*T/sqrt(2) past the largest grid
            u = int(k * tile / math.sqrt(2))
            sizes += [(r0 * v, c0 * v) for v in range(max(1, u - 1), u + 2)]
    for _ in range(40 if len(grids) > 1 else 0):  # aspect ratio halfway between two grids' ratios, beyond the limit
        (c1, r1), (c2, r2) = rng.sample(grids, 2)
        m = rng.randint(fits // max(1, 2 * r1 * r2) + 1, 2 * fits)
        sizes.append((2 * r1 * r2 * m, (c1 * r2 + c2 * r1) * m))
    return [(h, w) for h, w in sizes if h >= 1 and w >= 1]


def pad_sizes(scheme: CeilingGrid) -> list[tuple[int, int]]:
    return [hw for _, hw in scheme.points("pad")]


def target_sizes(scheme: CeilingGrid) -> list[tuple[int, int]]:
    return [scheme.resolution_for(t) for t in scheme.targets()]


# ----- agreement with the processor -----
def test_counts_agree_with_the_processor_on_every_target_and_thousands_of_sizes():
    sizes = target_sizes(PHI4) + pad_sizes(PHI4) + sample_sizes(PHI4, SEED)
    assert len(set(sizes)) >= 2000
    wrong = disagreements(PHI4, sizes)
    assert not wrong, f"{len(wrong)} of {len(sizes)} sizes disagree:\n" + "\n".join(wrong[:20])
    # the sample reaches both branches and the refusal: grids over the limit, padded canvases, extreme images
    kinds = [predicted(PHI4, h, w) for h, w in sizes]
    assert sum(k == REFUSED for k in kinds) >= 20
    assert sum(k != REFUSED and k[0].cells == 36 for k in kinds) >= 50


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_counts_agree_with_the_processor_for_other_settings(variant):
    scheme = VARIANTS[variant]
    sizes = target_sizes(scheme) + pad_sizes(scheme) + sample_sizes(scheme, SEED + 1, n_random=150)
    wrong = disagreements(scheme, sizes)
    assert not wrong, f"{variant}: {len(wrong)} of {len(sizes)} sizes disagree:\n" + "\n".join(wrong[:20])


@functools.cache
def full_processor(scheme: CeilingGrid):
    """The real ``Phi4MultimodalProcessor``: the image processor from `processor_kwargs`, its audio feature
    extractor, and a word-level tokenizer (words ``w0..w9``, ``<|image|>``, ``<|audio|>``) built here."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers

    specials = ["<|image|>", "<|audio|>", "<|endoftext|>"]
    vocab = {f"w{i}": i for i in range(10)} | {s: 10 + i for i, s in enumerate(specials)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="w0"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="w0", eos_token="<|endoftext|>",
        extra_special_tokens={"image_token": "<|image|>", "audio_token": "<|audio|>"},
    )
    return transformers.Phi4MultimodalProcessor(image_processor=image_processor(scheme),
                                                audio_processor=transformers.Phi4MultimodalFeatureExtractor(),
                                                tokenizer=tokenizer)


def processor_run(scheme: CeilingGrid, image, height: int, width: int):
    """The whole processor on one image in the text ``w1 <|image|> w2``: (grid, crops, canvas, <|image|> tokens,
    every other token, mask shape). Rescaling and normalising are off: they change pixel values, never counts."""
    proc = full_processor(scheme)
    out = proc(text="w1 <|image|> w2", images=image, do_rescale=False, do_normalize=False)
    ids = list(out["input_ids"][0])
    n = ids.count(proc.image_token_id)
    pixels, mask = out["image_pixel_values"], out["image_attention_mask"]
    canvas = tuple(int(v) for v in out["image_sizes"][0])
    tile = scheme.tile_size
    return (Tiling(canvas[0] // tile, canvas[1] // tile), pixels.shape[1], canvas, n, len(ids) - n,
            tuple(mask.shape[1:]))


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


def test_the_processor_on_real_images_makes_the_predicted_crops_and_tokens_at_every_planned_target():
    """Every target of the default families 1xk, 2xk and kx1 (uint8 image tensors: canvases up to 16128 px long,
    which PIL's conversion would make slower still; the other grids of `all` are checked through the processor's
    own selection on every target above), every pad point and 20 seeded sizes (PIL images), each also through the
    bulk path (`reference`)."""
    torch = pytest.importorskip("torch")
    image_module = pytest.importorskip("PIL.Image")
    rng = random.Random(SEED + 2)
    bulk = [(h, w) for h, w in sample_sizes(PHI4, SEED + 2, n_random=100) if h * w <= 3_000_000
            and predicted(PHI4, h, w) != REFUSED]
    pil_sizes = pad_sizes(PHI4) + rng.sample(bulk, 20)
    planned = [PHI4.resolution_for(t) for t, _ in enumerate_tilings(PHI4, ["1xk", "2xk", "kx1"])]
    wrong = []
    with one_torch_thread():
        for kind, sizes in (("tensor", planned), ("pil", pil_sizes)):
            for h, w in sizes:
                image = (torch.full((3, h, w), 128, dtype=torch.uint8) if kind == "tensor"
                         else image_module.new("RGB", (w, h), (200, 40, 90)))
                g = PHI4.geometry(h, w)
                m = PHI4.tile_patches
                want = (g.tiling, g.crops, g.canvas, g.image_tokens, 2, (g.crops, m, m))
                got = processor_run(PHI4, image, h, w)
                if got != want or g.sequence_tokens != g.image_tokens or reference(PHI4, h, w) != want[:4]:
                    wrong.append(f"{h}x{w}: processor (grid, crops, canvas, <|image|>, other, mask) {got}, "
                                 f"tilings {want}, bulk path {reference(PHI4, h, w)}")
    assert len(planned) == 36 + 18 + 36 - 2 and len(pil_sizes) == 45  # 1x1 and 2x1 are in two families
    assert not wrong, f"{len(wrong)} real images disagree:\n" + "\n".join(wrong[:20])


@pytest.mark.parametrize("variant", ["max12", "t42-odd-mask"])
def test_the_processor_on_real_images_for_other_settings(variant):
    """Every target and a few other sizes; where tilings refuses a size, the processor raises."""
    image_module = pytest.importorskip("PIL.Image")
    scheme = VARIANTS[variant]
    tile, m = scheme.tile_size, scheme.tile_patches
    sizes = target_sizes(scheme) + [(37, 2000), (500, 500), (tile * 2 - 5, tile + 9), (tile * 4, tile * 4 + 1)]
    refused = 0
    for h, w in sizes:
        image = image_module.new("RGB", (w, h), (10, 200, 60))
        if predicted(scheme, h, w) == REFUSED:
            refused += 1
            with pytest.raises(ValueError, match="aspect ratio is very extreme"):
                processor_run(scheme, image, h, w)
            continue
        g = scheme.geometry(h, w)
        got = processor_run(scheme, image, h, w)
        assert got == (g.tiling, g.crops, g.canvas, g.image_tokens, 2, (g.crops, m, m)), (variant, h, w)
    # 37x2000 at 42 px tiles: ceil grid 1x48 is over 9 tiles, the closest ratio is 1x9; its width fills 378 px and
    # the height becomes int(37 * 0.189) = 6 px: refused
    assert refused == (variant == "t42-odd-mask")


def test_an_image_the_processor_refuses_is_refused_in_one_line():
    """20x9000: ceil grid 1x21; the width fills 9408 px (scale 1.0453) and the height stays int(20 * 1.0453) = 20 px:
    accepted. 4x9000 stays 4 px high, under 10: the processor's ValueError, our UsageError."""
    image_module = pytest.importorskip("PIL.Image")
    assert PHI4.geometry(20, 9000).tiling == Tiling(1, 21)
    with pytest.raises(ValueError, match="aspect ratio is very extreme"):
        full_processor(PHI4)(text="w1 <|image|>", images=image_module.new("RGB", (9000, 4)))
    with pytest.raises(UsageError, match="refuses an image of 4x9000.*under 10 px") as info:
        PHI4.geometry(4, 9000)
    assert "\n" not in str(info.value)
    assert reference(PHI4, 4, 9000) == REFUSED


# ----- hand-worked geometry -----
def test_geometry_by_hand():
    for grid, tokens in SURVEY_EXACT.items():  # 273 + 256*r*c + 16*r, no padding at the canvas
        g = PHI4.target_geometry(Tiling(*grid))
        assert (g.image_tokens, g.crops, g.canvas) == (tokens, grid[0] * grid[1] + 1, (448 * grid[0], 448 * grid[1]))
        assert tokens == 273 + 256 * grid[0] * grid[1] + 16 * grid[0]
        assert reference(PHI4, *g.canvas)[3] == tokens
    # 20x3000: ceil grid 1x7 (7 tiles <= 36); the width fills 3136 (scale 3136/3000), the height int(20*1.0453) = 20,
    # 428 px of padding masks floor(428/14) = 30 of 32 patch rows, 2 stay, subsampled: 1 row of 7*16 columns:
    # 273 + 112 + 1 = 386
    assert predicted(PHI4, 20, 3000) == (Tiling(1, 7), 8, (448, 3136), 386)
    # 3000x3200: ceil grid 7x8 = 56 tiles > 36, so the closest aspect ratio: 3200/3000 is nearest 1 (6/5 is 1.2),
    # every n x n ties and the later wins while 9.6e6 > 0.5*448^2*n^2: 6x6. The height becomes int(3000*0.84) = 2520,
    # 168 px pad = 12 patch rows masked, 180 of 192 valid, subsampled 5*16 + 10 = 90 rows of 96: 273 + 8640 + 90
    assert predicted(PHI4, 3000, 3200) == (Tiling(6, 6), 37, (2688, 2688), 9003)
    # 448x435: 13 px of padding is under one patch, nothing is masked; 448x434: 14 px masks one patch column,
    # which is the subsample's last (odd) column: still 16 features; 448x420: 28 px masks 2, one feature column less
    assert [PHI4.geometry(448, w).image_tokens for w in (435, 434, 420)] == [545, 545, 529]
    # an odd mask size, 42/14 = 3 patches a tile: each tile keeps its patch rows (columns) 0 and 2. 42x84 (1x2, no
    # padding): 2 rows of 4 columns, 273 + 8 + 2. 42x56 (still 1x2): 28 px of padding mask patch columns 4 and 5, so
    # of the kept columns 0, 2 (tile 1) and 3, 5 (tile 2) three stay: 273 + 6 + 2 (every second column of the whole
    # grid, 0, 2, 4, would leave two)
    odd = VARIANTS["t42-odd-mask"]
    assert odd.geometry(42, 84).image_tokens == 273 + 2 * 4 + 2
    assert predicted(odd, 42, 56) == reference(odd, 42, 56) == (Tiling(1, 2), 3, (42, 84), 273 + 2 * 3 + 2)


@pytest.mark.parametrize("size, needle", [
    ((0, 5), "height must be a positive integer"),
    ((5, -1), "width must be a positive integer"),
    ((1.5, 5), "height must be a positive integer"),
    ((True, 5), "height must be a positive integer"),
    ((5, 2**63), "below"),
    ((1, 448), "refuses an image of 1x448"),
])
def test_bad_sizes_are_refused_in_one_line(size, needle):
    with pytest.raises(UsageError, match=needle) as info:
        PHI4.geometry(*size)
    assert "\n" not in str(info.value)


# ----- the inverse -----
@DETERMINISTIC
@given(st.integers(1, 40), st.integers(1, 40))
def test_round_trip_property_on_the_preset(rows, cols):
    target = Tiling(rows, cols)
    if rows * cols <= 36:
        assert PHI4.is_reachable(target)
        size = PHI4.resolution_for(target)
        assert size == (rows * 448, cols * 448)
        geo = PHI4.geometry(*size)
        assert geo.tiling == target and geo.canvas == size and geo.crops == rows * cols + 1
        assert PHI4.target_geometry(target) == geo
    else:
        assert not PHI4.is_reachable(target)
        with pytest.raises(UsageError, match=f"tiling {rows}x{cols} is unreachable.*over scheme 'phi4-mm'") as info:
            PHI4.resolution_for(target)
        assert "\n" not in str(info.value)


@DETERMINISTIC
@given(st.sampled_from([(14, 14), (28, 14), (42, 14), (112, 16), (336, 14), (448, 14)]), st.integers(1, 12),
       st.integers(1, 8), st.integers(1, 8))
def test_round_trip_property_on_any_setting_agrees_with_the_processor(tile_patch, limit, rows, cols):
    tile, patch = tile_patch
    scheme = CeilingGrid(name="drawn", tile_size=tile, patch_size=patch, dynamic_hd=limit)
    target = Tiling(rows, cols)
    if rows * cols <= limit:
        size = scheme.resolution_for(target)
        assert reference(scheme, *size)[:3] == (target, target.cells + 1, size)
    else:
        with pytest.raises(UsageError, match="unreachable"):
            scheme.resolution_for(target)
    for target, size in scheme.points("pad"):
        assert reference(scheme, *size)[0] == target


@DETERMINISTIC
@given(st.sampled_from(PHI4.families))
def test_every_point_of_every_family_gives_its_target(family):
    points = PHI4.points(family)
    assert points
    for target, size in points:
        assert PHI4.is_reachable(target)
        assert PHI4.geometry(*size).tiling == target, (family, target, size)
    assert list(dict.fromkeys(t for t, _ in points)) == PHI4.family_tilings(family)


# ----- families -----
def test_families_list_the_reachable_grids():
    def grids(text):
        return [Tiling(*map(int, g.split("x"))) for g in text.split()]

    assert PHI4.families == ("1xk", "2xk", "kx1", "all", "pad")
    assert PHI4.default_families == ("1xk", "2xk", "kx1")
    assert PHI4.family_tilings("1xk") == [Tiling(1, k) for k in range(1, 37)]
    assert PHI4.family_tilings("2xk") == [Tiling(2, k) for k in range(1, 19)]
    assert PHI4.family_tilings("kx1") == [Tiling(k, 1) for k in range(1, 37)]
    assert PHI4.family_tilings("all") == [Tiling(r, c) for r in range(1, 37) for c in range(1, 37) if r * c <= 36]
    assert PHI4.family_tilings("pad") == grids("1x1 2x2 2x3 3x2 3x3")
    assert VARIANTS["max12"].family_tilings("pad") == grids("1x1 2x2 2x3 3x2 3x3")
    assert VARIANTS["one-tile"].family_tilings("pad") == grids("1x1")
    assert VARIANTS["one-tile"].family_tilings("2xk") == []
    with pytest.raises(UsageError, match="unknown tiling family 'nope'.*pad") as info:
        PHI4.family_tilings("nope")
    assert "\n" not in str(info.value)


def test_the_pad_family_keeps_crops_and_lowers_tokens():
    by_grid: dict[Tiling, list[tuple[int, int]]] = {}
    for target, size in PHI4.points("pad"):
        by_grid.setdefault(target, []).append(size)
    assert len(by_grid) == 5
    for target, sizes in by_grid.items():
        assert len(sizes) == 5
        assert sizes[0] == PHI4.resolution_for(target)  # starts at the canvas itself
        counts = [reference(PHI4, *s) for s in sizes]  # transformers' own numbers
        assert {c[0] for c in counts} == {target} and {c[1] for c in counts} == {target.cells + 1}
        tokens = [c[3] for c in counts]
        assert all(a > b for a, b in zip(tokens, tokens[1:])), (target, sizes, tokens)
        assert [PHI4.geometry(*s).image_tokens for s in sizes] == tokens
        assert len({s[0] for s in sizes}) == 1 or len({s[1] for s in sizes}) == 1  # one side shrinks
    # 2x3 narrowed by 56 px steps: each masks 4 patch columns, 2 feature columns on each of 32 rows:
    # 1841, 1777, ... (64 tokens a step)
    assert [(s, PHI4.geometry(*s).image_tokens) for s in by_grid[Tiling(2, 3)]] == [
        ((896, 1344), 1841), ((896, 1288), 1777), ((896, 1232), 1713), ((896, 1176), 1649), ((896, 1120), 1585)]
    # 3x2 shrinks the height: 2 feature rows fewer a step, each row 32 features and its separator: 66 tokens a step
    assert [(s, PHI4.geometry(*s).image_tokens) for s in by_grid[Tiling(3, 2)]] == [
        ((1344, 896), 1857), ((1288, 896), 1791), ((1232, 896), 1725), ((1176, 896), 1659), ((1120, 896), 1593)]
    assert enumerate_tilings("phi4-mm", ["pad"]) == [(t, "pad") for t in by_grid]


# ----- the scheme, the preset and processor settings -----
def test_the_scheme_interface():
    assert isinstance(PHI4, Scheme)
    assert PHI4.kind == GRID
    assert PROFILES["phi4-mm"] is PHI4
    assert PHI4.max_crops == 36 and len(PHI4.targets()) == 140
    assert PHI4.target_geometry(Tiling(2, 2)).encoder_patches == 5 * 32 * 32


def test_the_preset_holds_the_processor_and_model_defaults():
    transformers = pytest.importorskip("transformers")
    phi4_module()
    default = transformers.Phi4MultimodalImageProcessor()
    vision = transformers.Phi4MultimodalVisionConfig()
    assert (default.size.height, default.size.width, default.patch_size, default.dynamic_hd) == (448, 448, 14, 36)
    assert (PHI4.tile_size, PHI4.patch_size, PHI4.dynamic_hd) == (448, 14, 36)
    assert (vision.image_size, vision.patch_size, vision.crop_size) == (PHI4.tile_size, PHI4.patch_size, 448)


def test_processor_kwargs_configure_the_processor():
    for scheme in (PHI4, *VARIANTS.values()):
        proc = image_processor(scheme)
        assert (proc.size.height, proc.size.width, proc.patch_size, proc.dynamic_hd) == (
            scheme.tile_size, scheme.tile_size, scheme.patch_size, scheme.dynamic_hd)


@pytest.mark.parametrize("scheme", [PHI4, *VARIANTS.values()], ids=["preset", *VARIANTS])
def test_to_dict_round_trips_through_the_registry(scheme):
    data = scheme.to_dict()
    assert data["scheme"] == "ceiling-grid"
    restored = scheme_from_dict(json.loads(json.dumps(data)))
    assert restored == scheme and type(restored) is CeilingGrid
    assert restored.geometry(300, 400) == scheme.geometry(300, 400)


def test_to_dict_holds_every_number():
    assert PHI4.to_dict() == {"scheme": "ceiling-grid", "name": "phi4-mm", "tile_size": 448, "patch_size": 14,
                              "dynamic_hd": 36}


def test_a_foreign_dict_is_refused():
    with pytest.raises(UsageError, match="'pinpoints' is not 'ceiling-grid'"):
        CeilingGrid.from_dict({**PHI4.to_dict(), "scheme": "pinpoints"})
    with pytest.raises(UsageError, match="unknown CeilingGrid key"):
        CeilingGrid.from_dict({**PHI4.to_dict(), "max_crops": 9})


def test_from_preprocessor_config_reads_a_phi4_checkpoint(tmp_path):
    assert CeilingGrid.from_preprocessor_config(PHI4_CONFIG) == PHI4
    path = tmp_path / "preprocessor_config.json"
    path.write_text(json.dumps(PHI4_CONFIG))
    assert CeilingGrid.from_preprocessor_config(path) == PHI4
    assert resolve_profile(str(path)) == PHI4  # the registry tells the class by its image processor type
    assert CeilingGrid.from_preprocessor_config({"image_processor": PHI4_CONFIG}) == PHI4
    # what transformers itself writes for a processor of this scheme reads back as the scheme
    image_processor(VARIANTS["max12"]).save_pretrained(tmp_path / "saved")
    saved = CeilingGrid.from_preprocessor_config(tmp_path / "saved" / "preprocessor_config.json")
    assert dataclasses.replace(saved, name="max12") == VARIANTS["max12"] and saved.name == "phi4-mm-custom"
    assert resolve_profile(str(tmp_path / "saved" / "preprocessor_config.json")) == saved


def test_from_preprocessor_config_other_settings_and_overrides():
    few = CeilingGrid.from_preprocessor_config({**PHI4_CONFIG, "dynamic_hd": 16})
    assert (few.dynamic_hd, few.name) == (16, "phi4-mm-custom")
    assert CeilingGrid.from_preprocessor_config({"dynamic_hd": 36}) == PHI4  # keys only: the preset's for the rest
    named = CeilingGrid.from_preprocessor_config(PHI4_CONFIG, name="mine", dynamic_hd=12)
    assert named == dataclasses.replace(VARIANTS["max12"], name="mine")
    assert CeilingGrid.from_preprocessor_config({"size": 336}).tile_size == 336


@pytest.mark.parametrize("config, overrides, needle", [
    ({**PHI4_CONFIG, "image_processor_type": "LlavaOnevisionImageProcessor"}, {}, "not Phi4MultimodalImageProcessor"),
    ({"do_resize": True}, {}, "none of the Phi4MultimodalImageProcessor keys"),
    ({"size": {"height": 448, "width": 896}}, {}, "must be square"),
    ({"size": {"shortest_edge": 448}}, {}, "'size' must be"),
    ({"size": 448, "patch_size": 15}, {}, "multiple of patch_size 15"),
    (PHI4_CONFIG, {"max_patches": 9}, "unknown CeilingGrid override"),
    ("/nonexistent/preprocessor_config.json", {}, "cannot read preprocessor config"),
])
def test_bad_configs_are_refused_in_one_line(config, overrides, needle):
    with pytest.raises(UsageError, match=needle) as info:
        CeilingGrid.from_preprocessor_config(config, **overrides)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("change, needle", [
    ({"name": ""}, "name must be a non-empty string"),
    ({"tile_size": 0}, "tile_size must be a positive integer"),
    ({"tile_size": 7, "patch_size": 7}, "tile_size 7 must be at least 10"),
    ({"patch_size": 100}, "tile_size 448 must be at least 10 and a multiple of patch_size 100"),
    ({"dynamic_hd": 0}, "dynamic_hd must be a positive integer"),
    ({"dynamic_hd": 2.0}, "dynamic_hd must be a positive integer"),
])
def test_bad_settings_are_refused_in_one_line(change, needle):
    with pytest.raises(UsageError, match=needle) as info:
        dataclasses.replace(PHI4, **change)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("target", [(7, 6), (1, 37), (0, 1), "2x2", (1, 2, 3)])
def test_unreachable_or_malformed_targets_are_refused_in_one_line(target):
    with pytest.raises(UsageError) as info:
        PHI4.resolution_for(target)
    assert "\n" not in str(info.value)
    assert not PHI4.is_reachable(target)
