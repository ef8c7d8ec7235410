"""Native-resolution schemes (Pixtral, Mistral 3): agreement with the real processor, the inverse, the
families, the presets, configs and errors.

The processor is the judge: canvases come from transformers' own ``get_resize_output_image_size``
(called with the numbers the configured ``PixtralImageProcessor`` holds, as its ``resize`` calls it),
token counts from ``PixtralProcessor._get_num_multimodal_tokens`` and from its ``input_ids`` with a
word-level tokenizer, sizes and pixel tensors from running it on real PIL images. Numbers written in
the tests were worked out by hand from the processor's rule (the arithmetic is in the comments).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tilesweep.errors import UsageError
from tilings import (
    BUDGET,
    PROFILES,
    Scheme,
    Tiling,
    enumerate_tilings,
    resolve_profile,
    scheme_from_dict,
    tilings_for_tokens,
)
from tilings.nativeres import PRESETS, NativeResolution

SEED = 20251115
DETERMINISTIC = settings(derandomize=True, max_examples=200, deadline=None, database=None)
PIXTRAL, MISTRAL3 = PRESETS["pixtral"], PRESETS["mistral3"]
IDS = {"[UNK]": 0, "[IMG]": 1, "[IMG_BREAK]": 2, "[IMG_END]": 3, "hi": 4}

# Checkpoint configs as the hub ships them (mistral-community/pixtral-12b's preprocessor_config.json; for
# Mistral-Small-3.1 a combined processor_config.json: the processor's patch and merge over the image processor's).
PIXTRAL_CONFIG = {
    "do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
    "image_processor_type": "PixtralImageProcessor", "processor_class": "PixtralProcessor",
    "patch_size": {"height": 16, "width": 16}, "resample": 3, "rescale_factor": 0.00392156862745098,
    "size": {"longest_edge": 1024},
}
MISTRAL3_IMAGE_CONFIG = {**PIXTRAL_CONFIG, "patch_size": 14, "size": {"longest_edge": 1540}}
MISTRAL3_PROCESSOR_CONFIG = {"image_processor": MISTRAL3_IMAGE_CONFIG, "image_break_token": "[IMG_BREAK]",
                             "image_end_token": "[IMG_END]", "image_token": "[IMG]", "patch_size": 14,
                             "processor_class": "PixtralProcessor", "spatial_merge_size": 2}

# Other settings of the same kernel, checked against the processor too: caps that are no multiple of F.
VARIANTS = {
    "cap1000": NativeResolution(name="cap1000", patch_size=14, merge_size=2, longest_edge=1000),  # S = 36 (1008)
    "p8m3": NativeResolution(name="p8m3", patch_size=8, merge_size=3, longest_edge=517),  # F = 24, S = 22 (528)
    "small": NativeResolution(name="small", patch_size=16, merge_size=1, longest_edge=100),  # S = 7 (112)
}


# ----- the real processor -----
def pixtral_module():
    pytest.importorskip("torchvision")  # the processor's backend
    return pytest.importorskip("transformers.models.pixtral.image_processing_pixtral")


@functools.cache
def image_processor(scheme: NativeResolution):
    return pixtral_module().PixtralImageProcessor(**scheme.processor_kwargs())


def shaped(h: int, w: int):
    """An (h, w, 3) array that holds one value: the processor's size arithmetic reads only its shape."""
    np = pytest.importorskip("numpy")
    return np.broadcast_to(np.zeros((1, 1, 3), dtype=np.uint8), (h, w, 3))


def processor_canvas(scheme: NativeResolution, h: int, w: int) -> tuple:
    """(canvas, token grid) by the configured processor's own arithmetic, as its ``resize`` computes the output
    size; ("refused",) where a side is 0 px, which the resize then refuses (see the real-image test)."""
    module, proc = pixtral_module(), image_processor(scheme)
    from transformers.image_utils import ChannelDimension

    longest, patch = proc.size["longest_edge"], (proc.patch_size["height"], proc.patch_size["width"])
    out = module.get_resize_output_image_size(shaped(h, w), size=(longest, longest), patch_size=patch,
                                              input_data_format=ChannelDimension.LAST)
    if min(out) == 0:
        return ("refused",)
    return (tuple(out), (out[0] // patch[0], out[1] // patch[1]))


def predicted_canvas(scheme: NativeResolution, h: int, w: int) -> tuple:
    try:
        g = scheme.geometry(h, w)
    except UsageError:
        return ("refused",)
    return (g.canvas, tuple(g.tiling))


def disagreements(scheme: NativeResolution, sizes) -> list[str]:
    wrong = []
    for h, w in sizes:
        got, want = processor_canvas(scheme, h, w), predicted_canvas(scheme, h, w)
        if got != want:
            wrong.append(f"{h}x{w}: processor (canvas, grid) {got}, tilings {want}")
    return wrong


def sample_sizes(scheme: NativeResolution, seed: int, n_random: int) -> list[tuple[int, int]]:
    """Seeded sizes where the arithmetic has edges, plus every target's size and the sizes 1..3 px around it."""
    rng = random.Random(seed)
    f, cap = scheme.factor, scheme.longest_edge

    def log_side(lo: int, hi: int) -> int:
        return round(math.exp(rng.uniform(math.log(lo), math.log(hi))))

    sizes = [(log_side(1, 60_000), log_side(1, 60_000)) for _ in range(n_random)]  # anything
    sizes += [(rng.randint(1, 3 * f), rng.randint(1, 3 * f)) for _ in range(n_random // 4)]  # tiny: one token or two
    sizes += [(log_side(cap, 40 * cap), log_side(cap, 40 * cap)) for _ in range(n_random // 4)]  # scaled down
    for _ in range(n_random // 4):  # thin: the shorter side scales to about 1 px, or to 0 (refused)
        long = log_side(cap + 1, 200 * cap)
        short = max(1, math.ceil(long / cap) + rng.choice((-2, -1, 0, 0, 1, 2)))
        sizes += [(short, long), (long, short)]
    edges = [cap + d for d in range(-3, 4)] + [k * f + d for k in (1, 2, 7) for d in (-1, 0, 1)]
    sizes += [(a, b) for a in edges for b in edges]  # at the cap and at token boundaries
    sizes += [(2 * cap + d, rng.randint(1, 3 * cap)) for d in range(-2, 3) for _ in range(8)]  # ratio 2, exactly
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


def run_on_image(scheme: NativeResolution, h: int, w: int) -> tuple:
    """(image_sizes, pixel_values shape) from the processor run on a PIL image, or its refusal."""
    image_module = pytest.importorskip("PIL.Image")
    try:
        out = image_processor(scheme)(images=[image_module.new("RGB", (w, h), (120, 60, 30))], return_tensors="pt")
    except ValueError:
        return ("refused",)
    return ([tuple(int(v) for v in s) for s in out["image_sizes"].tolist()], tuple(out["pixel_values"].shape))


def predicted_run(scheme: NativeResolution, h: int, w: int) -> tuple:
    try:
        g = scheme.geometry(h, w)
    except UsageError:
        return ("refused",)
    return ([g.canvas], (g.crops, 3, *g.canvas))


@functools.cache
def word_level_processor(scheme: NativeResolution):
    """A real PixtralProcessor whose tokenizer knows [IMG], [IMG_BREAK] and [IMG_END] as one token each."""
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(IDS, unk_token="[UNK]"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]",
                                                     additional_special_tokens=["[IMG]", "[IMG_BREAK]", "[IMG_END]"])
    # The checkpoints' own image processor states the vision patch; the processor multiplies in the merge.
    checkpoint_like = pixtral_module().PixtralImageProcessor(patch_size=scheme.patch_size,
                                                             size={"longest_edge": scheme.longest_edge})
    return transformers.PixtralProcessor(image_processor=checkpoint_like, tokenizer=tokenizer,
                                         **scheme.pixtral_processor_kwargs())


# ----- agreement with the processor -----
@pytest.mark.parametrize("name", list(PRESETS))
def test_canvases_agree_with_the_processor_on_every_target_and_thousands_of_sizes(name):
    scheme = PRESETS[name]
    sizes = sample_sizes(scheme, SEED, n_random=700)
    assert len(set(sizes)) >= 3000
    refused = [s for s in sizes if processor_canvas(scheme, *s) == ("refused",)]
    assert len(refused) >= 50  # thin images whose shorter side floors to 0 px, from both sides
    scaled = [s for s in sizes if max(s) > scheme.longest_edge and processor_canvas(scheme, *s) != ("refused",)]
    assert len(scaled) >= 700
    wrong = disagreements(scheme, sizes)
    assert not wrong, f"{len(wrong)} of {len(sizes)} sizes disagree ({name}):\n" + "\n".join(wrong[:20])


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_canvases_agree_with_the_processor_for_other_settings(variant):
    scheme = VARIANTS[variant]
    sizes = sample_sizes(scheme, SEED + 1, n_random=300)
    wrong = disagreements(scheme, sizes)
    assert not wrong, f"{len(wrong)} of {len(sizes)} sizes disagree ({variant}):\n" + "\n".join(wrong[:20])


def test_the_pil_backend_does_the_same_arithmetic():
    """``PixtralImageProcessorPil`` (no torchvision) carries its own copy of the size functions."""
    pil = pytest.importorskip("transformers.models.pixtral.image_processing_pil_pixtral")
    from transformers.image_utils import ChannelDimension

    wrong = []
    for name, scheme in {**PRESETS, **VARIANTS}.items():
        for h, w in sample_sizes(scheme, SEED + 2, n_random=100):
            out = pil.get_resize_output_image_size(shaped(h, w), size=(scheme.longest_edge,) * 2,
                                                   patch_size=(scheme.factor,) * 2,
                                                   input_data_format=ChannelDimension.LAST)
            got = ("refused",) if min(out) == 0 else (tuple(out), (out[0] // scheme.factor, out[1] // scheme.factor))
            if got != predicted_canvas(scheme, h, w):
                wrong.append(f"{name} {h}x{w}: PIL processor {got}, tilings {predicted_canvas(scheme, h, w)}")
    assert not wrong, "\n".join(wrong[:20])


@pytest.mark.parametrize("name", list(PRESETS))
def test_the_processor_run_on_real_images_makes_the_predicted_size(name):
    """The whole preprocessing on PIL images: every planned target at its size and off by a pixel or two,
    tiny images, images scaled down, and thin ones whose shorter side floors to 0 px (refused)."""
    scheme = PRESETS[name]
    f, cap = scheme.factor, scheme.longest_edge
    rng = random.Random(SEED + 3)
    sizes = [scheme.resolution_for(t) for t in scheme.targets()]
    sizes += [(h + rng.choice((-3, -1, 1, 2)), w + rng.choice((-2, 1, 3))) for h, w in sizes[:20]]
    sizes += [(rng.randint(1, 3 * f), rng.randint(1, 3 * f)) for _ in range(15)]
    sizes += [(1, 1), (cap + 1, cap + 1), (cap + 5, 3), (2 * cap, 1), (3 * cap + 7, 2), (1, 3 * cap), (2, 2 * cap + 1)]
    sizes += [(rng.randint(cap, 2 * cap), rng.randint(1, 2 * cap)) for _ in range(8)]
    assert len(sizes) >= 70
    wrong = []
    with one_torch_thread():
        for h, w in sizes:
            got, want = run_on_image(scheme, h, w), predicted_run(scheme, h, w)
            if got != want:
                wrong.append(f"{h}x{w}: processor (image_sizes, pixel_values shape) {got}, tilings {want}")
    assert not wrong, f"{len(wrong)} of {len(sizes)} images disagree ({name}):\n" + "\n".join(wrong[:20])
    assert sum(predicted_run(scheme, *s) == ("refused",) for s in sizes) >= 3  # 1/3 of a pixel and less: refused


@pytest.mark.parametrize("name", list(PRESETS))
def test_the_pixtral_processor_writes_the_predicted_tokens(name):
    """transformers' PixtralProcessor, as a checkpoint ships it (the image processor states the vision patch):
    [IMG] x cols + [IMG_BREAK] per row, the last one [IMG_END]; its own count of the placeholders agrees."""
    image_module = pytest.importorskip("PIL.Image")
    scheme = PRESETS[name]
    proc = word_level_processor(scheme)
    sizes = [scheme.resolution_for(t) for t in scheme.family_tilings("square")[:5] + scheme.family_tilings("wide")[:3]
             + scheme.family_tilings("equal")]
    sizes += [(1, 1), (97, 333), (scheme.longest_edge + 40, 700), (3000, 41)]
    wrong = []
    for h, w in sizes:
        with one_torch_thread():
            out = proc(text=["hi [IMG] hi"], images=[image_module.new("RGB", (w, h))], return_tensors="pt")
        ids = out["input_ids"][0].tolist()[1:-1]
        g = scheme.geometry(h, w)
        rows, cols = g.tiling
        expected_span = ([IDS["[IMG]"]] * cols + [IDS["[IMG_BREAK]"]]) * rows
        expected_span[-1] = IDS["[IMG_END]"]
        counted = proc._get_num_multimodal_tokens(image_sizes=[(h, w)]).num_image_tokens[0]
        got = (len(ids), ids.count(IDS["[IMG]"]), counted, tuple(out["image_sizes"][0].tolist()), ids == expected_span)
        want = (g.sequence_tokens, g.image_tokens, g.sequence_tokens, g.canvas, True)
        if got != want:
            wrong.append(f"{h}x{w}: processor (sequence, [IMG], its own count, image_sizes, layout) {got}, "
                         f"tilings {want}")
    assert not wrong, "\n".join(wrong)


# ----- hand-worked numbers (the processor's rule, by hand) -----
def test_a_full_hd_image_by_hand():
    # Pixtral: ratio 1920/1024 = 1.875; 1080/1.875 = 576 = 36*16, 1920/1.875 = 1024 = 64*16.
    g = PIXTRAL.geometry(1080, 1920)
    assert (g.canvas, g.tiling, g.image_tokens, g.sequence_tokens, g.encoder_patches) == (
        (576, 1024), (36, 64), 2304, 36 * 65, 2304)
    # Mistral 3: ratio 1920/1540; 1080*1540/1920 = 866.25 -> 866 -> ceil(866/28) = 31 (868 px); the long side 55.
    g = MISTRAL3.geometry(1080, 1920)
    assert (g.canvas, g.tiling, g.image_tokens, g.sequence_tokens, g.encoder_patches) == (
        (868, 1540), (31, 55), 1705, 31 * 56, 62 * 110)  # the tower runs on 14 px patches, 2x2 per token


def test_small_images_round_up_and_are_never_scaled():
    assert PIXTRAL.geometry(1, 1).canvas == (16, 16) and MISTRAL3.geometry(1, 1).canvas == (28, 28)
    assert PIXTRAL.geometry(17, 1024).canvas == (32, 1024)  # 17 px is two tokens; 1024 is not over the cap
    assert MISTRAL3.geometry(29, 1540).tiling == (2, 55)
    assert MISTRAL3.geometry(1541, 1541).canvas == (1540, 1540)  # 1541/ratio floors to 1540 or 1539: 55 tokens


def test_thin_images_whose_short_side_floors_to_zero_are_refused():
    # 4620 x 3 at L = 1540: ratio 3, 3/3 = 1 px -> one token; 4621 x 3: 3/3.0006 < 1 -> 0 px, refused.
    assert MISTRAL3.geometry(4620, 3).tiling == (55, 1)
    with pytest.raises(UsageError) as err:
        MISTRAL3.geometry(4621, 3)
    assert "a side of 0 px" in str(err.value) and "min(height, width) >= max(height, width) / 1540" in str(err.value)
    assert "\n" not in str(err.value)


# ----- the inverse -----
@DETERMINISTIC
@given(st.sampled_from([*PRESETS.values(), *VARIANTS.values()]), st.integers(1, 80), st.integers(1, 80))
def test_round_trip_property(scheme, rows, cols):
    t = Tiling(rows, cols)
    # Reachable exactly when neither side is over ceil(L/F) tokens (64 for Pixtral, 55 for Mistral 3).
    side = {"pixtral": 64, "mistral3": 55, "cap1000": 36, "p8m3": 22, "small": 7}[scheme.name]
    assert scheme.is_reachable(t) == (max(rows, cols) <= side)
    if scheme.is_reachable(t):
        h, w = scheme.resolution_for(t)
        assert max(h, w) <= scheme.longest_edge  # never scaled: the processor only rounds up
        assert scheme.geometry(h, w).tiling == t == scheme.target_geometry(t).tiling
        assert processor_canvas(scheme, h, w)[1] == t  # and the processor's own arithmetic agrees
    else:
        with pytest.raises(UsageError, match=f"a side of {max(rows, cols)} tokens is over the {side}"):
            scheme.resolution_for(t)


def test_a_cap_that_is_no_multiple_of_the_token_side():
    cap = VARIANTS["cap1000"]  # 1000 px of 28 px tokens: 35 whole ones and a part, rounded up to 36
    assert cap.resolution_for((36, 1)) == (1000, 28) and cap.geometry(1000, 28).canvas == (1008, 28)
    assert cap.resolution_for((35, 2)) == (980, 56)


@pytest.mark.parametrize("target, needle", [
    ((65, 1), "a side of 65 tokens is over the 64 that its longest edge of 1024 px holds"),
    ((3, 100), "a side of 100 tokens is over"),
    ((0, 4), "token grid rows must be a positive integer"),
    ((4, -1), "token grid cols must be a positive integer"),
    ((2.0, 4), "must be a positive integer"),
    ("2x2", "a token grid is a pair"),
    ((1, 2, 3), "a token grid is a pair"),
])
def test_unreachable_targets_are_refused_in_one_line(target, needle):
    with pytest.raises(UsageError) as err:
        PIXTRAL.resolution_for(target)
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert not PIXTRAL.is_reachable(target)


def test_token_counts_give_every_reachable_factor_pair():
    assert tilings_for_tokens(1024, "pixtral") == [(16, 64), (32, 32), (64, 16)]  # 8x128 is over 64 a side
    assert tilings_for_tokens(1024, "mistral3") == [(32, 32)]  # 16x64 is over 55 a side
    assert tilings_for_tokens(6, "mistral3") == [(1, 6), (2, 3), (3, 2), (6, 1)]
    with pytest.raises(UsageError, match="gives exactly 4096 image tokens"):
        tilings_for_tokens(4096, "mistral3")


# ----- families -----
LADDER = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48]


def test_families_by_hand():
    assert PIXTRAL.family_tilings("square") == [(n, n) for n in LADDER + [64]]  # 64^2 = 4096 tokens: the top
    assert PIXTRAL.family_tilings("wide") == [(n, 2 * n) for n in LADDER[:-1]]  # 32 x 64: 2n is at most 64
    assert PIXTRAL.family_tilings("tall") == [(2 * n, n) for n in LADDER[:-1]]
    assert PIXTRAL.family_tilings("equal") == [(32, 32), (16, 64), (64, 16)]  # 1,024 tokens; 8x128 is out
    # Mistral 3: 55 a side; the ladders end at the largest grid of their shape (55x55, 27x54).
    assert MISTRAL3.family_tilings("square") == [(n, n) for n in LADDER + [55]]
    assert MISTRAL3.family_tilings("wide") == [(n, 2 * n) for n in LADDER[:-2] + [27]]
    assert MISTRAL3.family_tilings("tall")[-1] == (54, 27)
    # 1,024 tokens would be 32x32 alone (16x64 is out): equal takes 256 = 16x16, 8x32, 32x8 (4x64 is out).
    assert MISTRAL3.family_tilings("equal") == [(16, 16), (8, 32), (32, 8)]
    assert MISTRAL3.points("equal") == [((16, 16), (448, 448)), ((8, 32), (224, 896)), ((32, 8), (896, 224))]
    assert PIXTRAL.points("square")[-1] == ((64, 64), (1024, 1024))


def test_family_names_defaults_and_targets():
    for scheme in PRESETS.values():
        assert scheme.families == ("square", "wide", "tall", "equal")
        assert scheme.default_families == ("square", "wide", "tall")
        ladders = [t for f in ("square", "wide", "tall") for t in scheme.family_tilings(f)]
        assert [t for t, _ in enumerate_tilings(scheme)] == ladders  # no grid in two ladders
        assert scheme.targets() == tuple(dict.fromkeys(ladders + scheme.family_tilings("equal")))
    with pytest.raises(UsageError, match=r"unknown tiling family '1xk'; known families: square, wide, tall, equal "
                                         r"\(scheme 'mistral3'\)"):
        MISTRAL3.family_tilings("1xk")


# ----- the scheme interface, presets and the registry -----
def test_the_scheme_interface():
    for name, scheme in PRESETS.items():
        assert isinstance(scheme, Scheme) and isinstance(scheme, NativeResolution)
        assert PROFILES[name] is scheme
        assert (scheme.kind, scheme.max_crops, scheme.name) == (BUDGET, None, name)
    with pytest.raises(dataclasses.FrozenInstanceError):
        PIXTRAL.longest_edge = 1


def test_the_presets_hold_the_checkpoint_numbers():
    assert PIXTRAL.to_dict() == {"scheme": "native-resolution", "name": "pixtral", "patch_size": 16, "merge_size": 1,
                                 "longest_edge": 1024}
    assert MISTRAL3.to_dict() == {"scheme": "native-resolution", "name": "mistral3", "patch_size": 14,
                                  "merge_size": 2, "longest_edge": 1540}
    assert (PIXTRAL.factor, PIXTRAL.max_tokens, MISTRAL3.factor, MISTRAL3.max_tokens) == (16, 4096, 28, 3025)


@pytest.mark.parametrize("scheme", [*PRESETS.values(), *VARIANTS.values()], ids=lambda s: s.name)
def test_processor_kwargs_configure_the_processor_and_round_trip(scheme):
    proc = image_processor(scheme)
    assert (proc.size["longest_edge"], proc.patch_size["height"], proc.patch_size["width"], proc.do_resize) == (
        scheme.longest_edge, scheme.factor, scheme.factor, True)
    data = json.loads(json.dumps(scheme.to_dict()))
    assert scheme_from_dict(data) == scheme and NativeResolution.from_dict(data) == scheme


def test_a_foreign_dict_is_refused():
    with pytest.raises(UsageError, match="'pixel-budget' is not 'native-resolution'"):
        NativeResolution.from_dict({**PIXTRAL.to_dict(), "scheme": "pixel-budget"})
    with pytest.raises(UsageError, match="unknown NativeResolution key"):
        scheme_from_dict({**PIXTRAL.to_dict(), "max_pixels": 448})


# ----- preprocessor configs -----
def test_from_preprocessor_config_reads_the_checkpoints(tmp_path):
    assert NativeResolution.from_preprocessor_config(PIXTRAL_CONFIG) == PIXTRAL
    assert NativeResolution.from_preprocessor_config(MISTRAL3_PROCESSOR_CONFIG) == MISTRAL3
    # The image processor's file alone does not state the merge: merge 1, so 14 px tokens, a custom scheme.
    alone = NativeResolution.from_preprocessor_config(MISTRAL3_IMAGE_CONFIG)
    assert (alone.name, alone.factor) == ("native-resolution-custom", 14)
    assert NativeResolution.from_preprocessor_config(MISTRAL3_IMAGE_CONFIG, merge_size=2) == MISTRAL3
    path = tmp_path / "preprocessor_config.json"
    path.write_text(json.dumps(PIXTRAL_CONFIG))
    assert resolve_profile(str(path)) == PIXTRAL  # the registry picks this class by the image processor type
    path.write_text(json.dumps({"patch_size": 14, "spatial_merge_size": 2, "size": {"longest_edge": 1540}}))
    assert resolve_profile(str(path)) == MISTRAL3  # by its keys


@pytest.mark.parametrize("config", [PIXTRAL_CONFIG, MISTRAL3_IMAGE_CONFIG, {"patch_size": 8},
                                    {"size": {"longest_edge": 777}}, {"patch_size": {"height": 20, "width": 20}}])
def test_configs_are_read_as_the_processor_reads_them(config):
    proc = pixtral_module().PixtralImageProcessor.from_dict(dict(config))
    scheme = NativeResolution.from_preprocessor_config(config)
    patch = proc.patch_size if isinstance(proc.patch_size, int) else proc.patch_size["height"]
    assert (scheme.longest_edge, scheme.patch_size, scheme.merge_size) == (proc.size["longest_edge"], patch, 1)


@pytest.mark.parametrize("config, overrides, needle", [
    ({**PIXTRAL_CONFIG, "image_processor_type": "Idefics3ImageProcessor"}, {}, "is for 'Idefics3ImageProcessor'"),
    ({"image_mean": [0.5, 0.5, 0.5]}, {}, "none of the PixtralImageProcessor keys"),
    ({**PIXTRAL_CONFIG, "do_resize": False}, {}, "do_resize false"),
    ({"size": {"height": 1024, "width": 1024}}, {}, "'size' must be {'longest_edge': PIXELS}"),
    ({"size": 1024}, {}, "'size' must be"),
    ({"patch_size": {"height": 16, "width": 14}}, {}, "with equal sides"),
    (PIXTRAL_CONFIG, {"crop_size": 448}, "unknown NativeResolution override(s) crop_size"),
    ({"patch_size": 0}, {}, "NativeResolution.patch_size must be a positive integer"),
    ({"spatial_merge_size": -2}, {}, "NativeResolution.merge_size must be a positive integer"),
])
def test_bad_configs_are_refused_in_one_line(config, overrides, needle):
    with pytest.raises(UsageError) as err:
        NativeResolution.from_preprocessor_config(config, **overrides)
    assert needle in str(err.value) and "\n" not in str(err.value)


# ----- bad input -----
@pytest.mark.parametrize("size, needle", [
    ((0, 10), "height must be a positive integer"),
    ((10, -3), "width must be a positive integer"),
    ((2.0, 10), "height must be a positive integer"),
    ((True, 10), "height must be a positive integer"),
    ((2**63, 10), "below 9223372036854775808"),
    ((1, 2000), "image 1x2000 px scales by 1/1.95312"),
])
def test_bad_sizes_are_refused_in_one_line(size, needle):
    with pytest.raises(UsageError) as err:
        PIXTRAL.geometry(*size)
    assert needle in str(err.value) and "\n" not in str(err.value)
