"""Pan-and-scan scheme (Gemma 3's Gemma3ImageProcessor): agreement with the real processor, the inverse,
reachability, the token layout, the preset, configs and errors.

The processor is the judge: crops come from transformers' own ``pan_and_scan_batched`` (and its
PIL twin's ``pan_and_scan``) run on a stand-in image that records the crop boxes it is sliced
into, tokens from ``Gemma3Processor.replace_image_token`` (a real processor with a word-level
tokenizer), and the whole processor runs on real images at every target. Numbers written in
the tests were worked out by hand from the processor's rule (the arithmetic is in the comments).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tilesweep.errors import UsageError
from tilings import GRID, PROFILES, Scheme, Tiling, enumerate_tilings, resolve_profile, scheme_from_dict
from tilings.panscan import PRESETS, PanScan

GEMMA3 = PRESETS["gemma3"]
SEED = 20250312
DETERMINISTIC = settings(derandomize=True, max_examples=150, deadline=None, database=None)

# Other settings of the same kernel, checked against the processor too: a high activation ratio (no 1x2:
# with 256 px crops an image 3.5 times wider is at least 896 px wide, so at least 3 crops), one so high
# that only the cap is left, a low ratio (squares are cropped), more and smaller crops, and no crops at all.
VARIANTS = {
    "ratio3.5": dataclasses.replace(GEMMA3, name="r35", min_ratio=3.5),
    "ratio50": dataclasses.replace(GEMMA3, name="r50", min_ratio=50.0, max_num_crops=3),
    "ratio0.8": dataclasses.replace(GEMMA3, name="r08", min_ratio=0.8),
    "max8-crop64": dataclasses.replace(GEMMA3, name="m8", min_crop_size=64, max_num_crops=8, view_size=448),
    "tiny-crop3": dataclasses.replace(GEMMA3, name="t3", min_crop_size=3, max_num_crops=4, min_ratio=1.0),
    "off": dataclasses.replace(GEMMA3, name="off", pan_and_scan=False),
}

# google/gemma-3-4b-it's preprocessor_config.json (as released, e.g. mirrored by Synthetica-AI/gemma-3-4b-it):
# the pan-and-scan keys are null, so Gemma3Processor's call decides (and it calls with pan and scan off).
GEMMA3_CONFIG = {
    "do_convert_rgb": None, "do_normalize": True, "do_pan_and_scan": None, "do_rescale": True, "do_resize": True,
    "image_mean": [0.5, 0.5, 0.5], "image_processor_type": "Gemma3ImageProcessor", "image_seq_length": 256,
    "image_std": [0.5, 0.5, 0.5], "pan_and_scan_max_num_crops": None, "pan_and_scan_min_crop_size": None,
    "pan_and_scan_min_ratio_to_activate": None, "processor_class": "Gemma3Processor", "resample": 2,
    "rescale_factor": 0.00392156862745098, "size": {"height": 896, "width": 896},
}
BOI, EOI, SOFT = "<start_of_image>", "<end_of_image>", "<image_soft_token>"
WORDS = {"[UNK]": 0, BOI: 1, EOI: 2, SOFT: 3, "hi": 5}


# ----- the real processor -----
def transformers():
    pytest.importorskip("torchvision")  # the processor's backend
    return pytest.importorskip("transformers")


@functools.cache
def image_processors(scheme: PanScan) -> tuple:
    """The torchvision processor and its PIL twin, configured to the scheme."""
    t = transformers()
    return t.Gemma3ImageProcessor(**scheme.processor_kwargs()), t.Gemma3ImageProcessorPil(**scheme.processor_kwargs())


class Boxes:
    """A stand-in image of any size: slicing it returns the box, so the processor's crops are read, not cut."""

    def __init__(self, height: int, width: int):
        self.shape = (3, height, width)

    def __getitem__(self, key):
        return key[-2:]


def processor_grid(scheme: PanScan, height: int, width: int) -> Tiling:
    """(rows, cols) of the crops both processor backends cut (1x1 for none), from their own boxes."""
    fast, pil = image_processors(scheme)
    if not fast.do_pan_and_scan:  # _preprocess calls pan and scan only when it is on
        return Tiling(1, 1)
    settings_ = (scheme.min_crop_size, scheme.max_num_crops, scheme.min_ratio)
    grids = []
    for boxes in (fast.pan_and_scan_batched(Boxes(height, width), *settings_),
                  pil.pan_and_scan(Boxes(height, width), *settings_)):
        rows = len({b[0].start for b in boxes})
        cols = len({b[1].start for b in boxes})
        assert rows * cols == len(boxes)  # a full grid of boxes
        grids.append(Tiling(rows, cols) if boxes else Tiling(1, 1))
    assert grids[0] == grids[1], (height, width, grids)
    return grids[0]


def word_level_processor(scheme: PanScan):
    """A real Gemma3Processor whose tokenizer knows the three image tokens as one token each, plus the word 'hi'."""
    t = transformers()
    tokenizers = pytest.importorskip("tokenizers")
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(WORDS, unk_token="[UNK]"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer = t.PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]",
                                          extra_special_tokens={"boi_token": BOI, "eoi_token": EOI, "image_token": SOFT})
    return t.Gemma3Processor(image_processor=image_processors(scheme)[0], tokenizer=tokenizer,
                             image_seq_length=scheme.tokens_per_view)


@functools.cache
def layout_counts(scheme: PanScan, crops: int) -> tuple[int, int]:
    """(soft tokens, special tokens) in the text Gemma3Processor writes for an image of `crops` crops."""
    text = word_level_processor(scheme).replace_image_token({"num_crops": [crops]}, 0)
    soft = text.count(SOFT)
    return soft, soft + text.count(BOI) + text.count(EOI)


def processor_counts(scheme: PanScan, height: int, width: int) -> tuple[Tiling, int, int, int]:
    """(grid, views, image tokens, sequence tokens) by the processor's own arithmetic and layout."""
    grid = processor_grid(scheme, height, width)
    crops = 0 if grid == (1, 1) else grid.cells
    return (grid, 1 + crops, *layout_counts(scheme, crops))


def predicted_counts(scheme: PanScan, height: int, width: int) -> tuple[Tiling, int, int, int]:
    g = scheme.geometry(height, width)
    return g.tiling, g.crops, g.image_tokens, g.sequence_tokens


def disagreements(scheme: PanScan, sizes) -> list[str]:
    wrong = []
    for h, w in sizes:
        want, got = processor_counts(scheme, h, w), predicted_counts(scheme, h, w)
        if got != want:
            wrong.append(f"{h}x{w}: processor {want}, tilings {got}")
    return wrong


def sample_sizes(scheme: PanScan, seed: int, n_random: int = 500) -> list[tuple[int, int]]:
    """Seeded sizes, both orientations: ordinary, extreme, tiny and huge; on and around each threshold of the
    rule (the activation ratio, the half-way rounding of the ratio, the floor(long/min_crop) cap, the crop-size
    check, sides at min_crop); and every inverse with its neighbours."""
    rng = random.Random(seed)
    mc, ratio, most = scheme.min_crop_size, scheme.min_ratio, scheme.max_num_crops
    sides = []
    sides += [(rng.randint(1, 4000), rng.randint(1, 4000)) for _ in range(n_random)]
    sides += [(rng.randint(1, 60), rng.randint(600, 100_000)) for _ in range(n_random // 4)]  # extreme
    sides += [(rng.randint(1, 40), rng.randint(1, 40)) for _ in range(n_random // 5)]  # tiny
    sides += [(rng.randint(4000, 10**12), rng.randint(4000, 10**15)) for _ in range(n_random // 10)]  # huge
    for _ in range(n_random // 2):
        short = rng.randint(max(1, mc - 3), 6 * mc)
        for target in (ratio * short, (rng.randint(1, most + 2) + 0.5) * short):  # activation, half-way rounding
            sides += [(short, int(target) + d) for d in (-1, 0, 1, 2)]
        k = rng.randint(1, most + 2)
        sides += [(short, k * mc + d) for d in (-1, 0, 1)]  # the floor(long / min_crop) cap
        sides += [(short, k * (mc - 1) + d) for d in (0, 1, k)]  # the crop-size check: ceil(long / k) vs min_crop
    for k in range(2, most + 2):
        sides += [(mc + d, (k + 1) * mc - 1 + e) for d in (-1, 0, 1) for e in (-1, 0, 1)]  # the witnesses
    for t in scheme.targets():  # every inverse and the sizes 1..3 px around it
        h, w = scheme.resolution_for(t)
        sides += [(h + dh, w + dw) for dh in (-3, -1, 0, 1, 3) for dw in (-3, -1, 0, 2)]
    both = [(h, w) for h, w in sides] + [(w, h) for h, w in sides]  # portrait mirrors of every landscape size
    return [(h, w) for h, w in both if h >= 1 and w >= 1]


# ----- agreement with the processor -----
def test_counts_agree_with_the_processor_on_every_target_and_thousands_of_sizes():
    sizes = sample_sizes(GEMMA3, SEED, n_random=300)
    assert len(set(sizes)) >= 2000
    wrong = disagreements(GEMMA3, sizes)
    assert not wrong, f"{len(wrong)} of {len(sizes)} sizes disagree (gemma3):\n" + "\n".join(wrong[:20])
    # the sample holds every target, in both orientations
    assert {processor_grid(GEMMA3, h, w) for h, w in set(sizes)} == set(GEMMA3.targets())


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_counts_agree_with_the_processor_for_other_settings(variant):
    scheme = VARIANTS[variant]
    sizes = sample_sizes(scheme, SEED + 1, n_random=150)
    wrong = disagreements(scheme, sizes)
    assert not wrong, f"{len(wrong)} of {len(sizes)} sizes disagree ({variant}):\n" + "\n".join(wrong[:20])


@contextlib.contextmanager
def one_torch_thread():
    """Run torch on one thread: on a shared 2-core machine two threads contend and a resize takes much longer."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def test_the_processor_on_real_images_makes_the_predicted_views_and_tokens_at_every_target():
    """The whole Gemma3Processor, pan and scan passed at call time as the worker does: views, soft tokens,
    markers and the token types the model's bidirectional image mask reads."""
    image_module = pytest.importorskip("PIL.Image")
    proc = word_level_processor(GEMMA3)
    wrong = []
    with one_torch_thread():
        for t in GEMMA3.targets():
            h, w = GEMMA3.resolution_for(t)
            out = proc(text=["hi <start_of_image> hi"], images=[image_module.new("RGB", (w, h), (90, 40, 10))],
                       return_tensors="pt", **GEMMA3.processor_kwargs())
            ids = out["input_ids"][0].tolist()
            g = GEMMA3.geometry(h, w)
            got = (int(out["pixel_values"].shape[0]), tuple(out["pixel_values"].shape[-2:]), ids.count(3),
                   ids.count(1) + ids.count(2) + ids.count(3), int(out["token_type_ids"].sum()))
            want = (g.crops, (896, 896), g.image_tokens, g.sequence_tokens, g.image_tokens)
            if got != want:
                wrong.append(f"{t} at {h}x{w}: processor (views, view size, soft, special, image types) {got}, "
                             f"tilings {want}")
    assert not wrong, "\n".join(wrong)


def test_the_image_processor_on_real_images_near_the_thresholds():
    """Small real images on both sides of each threshold (cheap: the views are what costs)."""
    image_module = pytest.importorskip("PIL.Image")
    fast, _ = image_processors(GEMMA3)
    # (height, width) -> crops, worked out by hand from the rule (see test_hand_worked_sizes)
    cases = {(300, 359): 0, (300, 360): 0, (1000, 1200): 2, (256, 767): 2, (256, 768): 3, (255, 1024): 0, (300, 2000): 4,
             (511, 256): 2, (510, 256): 0, (1023, 256): 3}
    wrong = []
    with one_torch_thread():
        for (h, w), crops in cases.items():
            out = fast(images=[image_module.new("RGB", (w, h))], return_tensors="pt")
            got = (int(out["num_crops"][0]), int(out["pixel_values"].shape[0]))
            if got != (crops, 1 + crops) or GEMMA3.geometry(h, w).crops != 1 + crops:
                wrong.append(f"{h}x{w}: processor (crops, views) {got}, tilings views {GEMMA3.geometry(h, w).crops}")
    assert not wrong, "\n".join(wrong)


def test_gemma3_processor_crops_only_when_asked_at_call_time():
    """Gemma3Processor passes its own images_kwargs (pan and scan off) at every call, over the image processor's
    settings: the worker must pass the scheme's kwargs at call time."""
    image_module = pytest.importorskip("PIL.Image")
    proc = word_level_processor(GEMMA3)
    assert proc.image_processor.do_pan_and_scan is True
    h, w = GEMMA3.resolution_for((1, 2))
    with one_torch_thread():
        out = proc(text=["<start_of_image>"], images=[image_module.new("RGB", (w, h))], return_tensors="pt")
    assert int(out["pixel_values"].shape[0]) == 1 and out["input_ids"][0].tolist().count(3) == 256


def test_hand_worked_sizes():
    # 300x360: ratio 1.2 >= 1.2; round(1.2 + 0.5) = 1, floor(360/256) = 1, raised to 2; crops ceil(360/2) = 180 < 256:
    # none. 300x359: ratio 1.197 < 1.2: none.
    assert GEMMA3.select(300, 359) == GEMMA3.select(300, 360) == (1, 1)
    # 1000x1200: ratio 1.2; n = min(floor(1200/256) = 4, floor(1.7) = 1) = 1 -> 2; crops 600 x 1000: 1x2.
    assert GEMMA3.select(1000, 1200) == (1, 2) and GEMMA3.select(1000, 1199) == (1, 1)
    # 256x767: floor(2.996 + 0.5) = 3 but floor(767/256) = 2: 2 crops of 384. 256x768: 3 crops of 256.
    assert (GEMMA3.select(256, 767), GEMMA3.select(256, 768)) == ((1, 2), (1, 3))
    # 255 px high: a crop 255 px high is under 256, whatever the width.
    assert GEMMA3.select(255, 1024) == (1, 1)
    # 300x2000: floor(6.67 + 0.5) = 7, floor(2000/256) = 7, capped at 4: crops of 500 x 300.
    assert GEMMA3.select(300, 2000) == (1, 4)
    # Portrait 511x256: ratio 1.996 -> 2, floor(511/256) = 1 -> 2; crops ceil(511/2) = 256 high: 2x1. 510x256: 255.
    assert (GEMMA3.select(511, 256), GEMMA3.select(510, 256)) == ((2, 1), (1, 1))
    # A square is landscape (width >= height) with ratio 1 < 1.2.
    assert GEMMA3.select(5000, 5000) == (1, 1)


# ----- the inverse and reachability -----
def test_every_target_round_trips_and_the_processor_agrees():
    assert GEMMA3.targets() == ((1, 1), (1, 2), (2, 1), (1, 3), (3, 1), (1, 4), (4, 1))
    for t in GEMMA3.targets():
        h, w = GEMMA3.resolution_for(t)
        assert GEMMA3.geometry(h, w).tiling == t == processor_grid(GEMMA3, h, w), t
        assert GEMMA3.target_geometry(t) == GEMMA3.geometry(h, w)


def test_gemma3_sizes_make_each_crop_one_view():
    # b = 896: the whole image is square, or n crops of exactly 896 x 896.
    assert [GEMMA3.resolution_for(t) for t in GEMMA3.targets()] == [
        (896, 896), (896, 1792), (1792, 896), (896, 2688), (2688, 896), (896, 3584), (3584, 896)]


@DETERMINISTIC
@given(st.sampled_from(GEMMA3.targets()))
def test_round_trip_property_on_the_preset(target):
    assert GEMMA3.geometry(*GEMMA3.resolution_for(target)).tiling == target


@st.composite
def any_scheme(draw, max_crop: int = 600, max_ratio: float = 12.0) -> PanScan:
    """Settings beyond the preset: crop sizes, crop limits and activation ratios, pan and scan on or off."""
    mc = draw(st.integers(2, max_crop))
    ratio = draw(st.one_of(st.sampled_from([0.5, 1.0, 1.2, 2.0, 2.5, 3.0, 3.5]),
                           st.floats(0.1, max_ratio, allow_nan=False, allow_infinity=False)))
    return PanScan(name="drawn", view_size=14 * draw(st.integers(1, 80)), patch_size=14, min_crop_size=mc,
                   max_num_crops=draw(st.integers(2, min(mc + 1, 10))), min_ratio=ratio,
                   pan_and_scan=draw(st.sampled_from([True, True, True, False])))


@DETERMINISTIC
@given(any_scheme(), st.data())
def test_round_trip_property_on_any_setting_agrees_with_the_processor(scheme, data):
    target = data.draw(st.sampled_from(scheme.targets()))
    h, w = scheme.resolution_for(target)
    assert scheme.geometry(h, w).tiling == target == processor_grid(scheme, h, w)


@settings(derandomize=True, max_examples=40, deadline=None, database=None)
@given(any_scheme(max_crop=4, max_ratio=6.0))
def test_the_targets_are_exactly_what_some_size_reaches(scheme):
    """Every size up to the largest witness, through the processor: the grids it cuts are the scheme's targets
    (small crops keep the sizes few; the module docstring proves no larger size reaches another grid)."""
    mc, most = scheme.min_crop_size, scheme.max_num_crops
    bound = mc * max(most + 1, int(scheme.min_ratio) + 1) + 1
    reached = {processor_grid(scheme, h, w) for h in range(1, bound + 1) for w in range(1, bound + 1)}
    assert reached == set(scheme.targets())


def test_unreachable_rows_name_the_ratio():
    # min ratio 3.5 with 256 px crops: the widest image with floor(w/256) = 2 is 256 x 767 (ratio 2.996 < 3.5),
    # and from ratio 3.5 round(r + 0.5) >= 4, so 2 crops never happen; 3 crops do at 256 x 1023 (ratio 3.996).
    r35 = VARIANTS["ratio3.5"]
    assert r35.targets() == ((1, 1), (1, 3), (3, 1), (1, 4), (4, 1))
    with pytest.raises(UsageError, match=r"1x2 is unreachable in scheme 'r35': crops start at aspect ratio 3\.5"):
        r35.resolution_for((1, 2))
    assert processor_grid(r35, *r35.resolution_for((1, 3))) == (1, 3)
    # ratio 50, at most 3 crops: every image that elongated reaches the cap.
    assert VARIANTS["ratio50"].targets() == ((1, 1), (1, 3), (3, 1))
    assert VARIANTS["ratio50"].resolution_for((3, 1)) == (256 * 50, 256)


@pytest.mark.parametrize(
    ("target", "needle"),
    [
        ((2, 2), r"2x2 is unreachable: pan and scan cuts one row or one column of crops, never both"),
        ((1, 5), r"1x5 has 5 crop\(s\), outside scheme 'gemma3'.s 2\.\.4"),
        ((3, 3), "never both"),
        ((0, 2), "tiling rows must be a positive integer, got 0"),
        ((2, -1), "tiling cols must be a positive integer, got -1"),
        ((1.0, 2), "tiling rows must be a positive integer, got 1.0"),
        ("1x2", "pair"),
    ],
)
def test_unreachable_targets_are_refused_in_one_line(target, needle):
    for call in (GEMMA3.resolution_for, GEMMA3.target_geometry):
        with pytest.raises(UsageError, match=needle) as info:
            call(target)
        assert "\n" not in str(info.value)
    assert not GEMMA3.is_reachable(target)


def test_without_pan_and_scan_only_1x1_is_reachable():
    off = VARIANTS["off"]
    assert off.targets() == (Tiling(1, 1),) and off.max_crops == 1
    assert off.geometry(256, 5000) == off.target_geometry(Tiling(1, 1))
    with pytest.raises(UsageError, match="1x2 is unreachable: scheme 'off' has pan and scan off"):
        off.resolution_for((1, 2))


# ----- geometry, the interface, families -----
def test_geometry_counts_by_hand():
    g = GEMMA3.target_geometry(Tiling(1, 3))
    # the whole image + 3 crops = 4 views; 4 * 256 soft tokens; each between <start_of_image> and <end_of_image>;
    # 4 * (896/14)^2 patches.
    assert g == (Tiling(1, 3), 4, (896, 2688), 1024, 1032, None, None, 4 * 64 * 64)
    one = GEMMA3.target_geometry(Tiling(1, 1))
    assert (one.crops, one.canvas, one.image_tokens, one.sequence_tokens, one.encoder_patches) == (
        1, (896, 896), 256, 258, 4096)
    # A row and a column of the same crops cost the same.
    assert GEMMA3.target_geometry(Tiling(3, 1))[1:] == (4, (2688, 896), *g[3:])


def test_the_scheme_interface_and_families():
    assert isinstance(GEMMA3, Scheme) and PROFILES["gemma3"] is GEMMA3
    assert (GEMMA3.kind, GEMMA3.max_crops, GEMMA3.SCHEME) == (GRID, 4, "pan-and-scan")
    assert GEMMA3.family_tilings("1xk") == [Tiling(1, k) for k in range(1, 5)]
    assert GEMMA3.family_tilings("kx1") == [Tiling(k, 1) for k in range(1, 5)]
    assert GEMMA3.family_tilings("2xk") == [Tiling(2, 1)]  # 2x2 and wider are never cut
    assert GEMMA3.family_tilings("all") == list(GEMMA3.targets())
    assert GEMMA3.points("1xk")[1] == (Tiling(1, 2), (896, 1792))
    assert [str(t) for t, _ in enumerate_tilings("gemma3")] == ["1x1", "1x2", "1x3", "1x4", "2x1", "3x1", "4x1"]
    with pytest.raises(UsageError, match="unknown tiling family '3xk'"):
        GEMMA3.family_tilings("3xk")


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
        GEMMA3.geometry(*size)
    assert "\n" not in str(info.value)


# ----- the preset, processor settings, dicts, configs -----
def test_the_preset_holds_gemma3_numbers_and_matches_the_processor_defaults():
    s = GEMMA3
    assert (s.view_size, s.patch_size, s.pan_and_scan, s.tokens_per_view) == (896, 14, True, 256)
    assert (s.min_crop_size, s.max_num_crops, s.min_ratio) == (256, 4, 1.2)
    t = transformers()
    defaults = t.Gemma3Processor.images_kwargs
    assert (defaults["pan_and_scan_min_crop_size"], defaults["pan_and_scan_max_num_crops"],
            defaults["pan_and_scan_min_ratio_to_activate"]) == (s.min_crop_size, s.max_num_crops, s.min_ratio)
    assert defaults["do_pan_and_scan"] is False  # off unless asked: the scheme asks
    assert t.Gemma3Config().mm_tokens_per_image == s.tokens_per_view


def test_processor_kwargs_configure_the_processor():
    fast, pil = image_processors(GEMMA3)
    assert GEMMA3.processor_kwargs() == {
        "size": {"height": 896, "width": 896}, "do_pan_and_scan": True, "pan_and_scan_min_crop_size": 256,
        "pan_and_scan_max_num_crops": 4, "pan_and_scan_min_ratio_to_activate": 1.2}
    for proc in (fast, pil):
        assert (proc.size.height, proc.size.width, proc.do_pan_and_scan, proc.pan_and_scan_min_crop_size,
                proc.pan_and_scan_max_num_crops, proc.pan_and_scan_min_ratio_to_activate) == (896, 896, True, 256, 4, 1.2)


@pytest.mark.parametrize("scheme", [GEMMA3, *VARIANTS.values()], ids=lambda s: s.name)
def test_to_dict_round_trips_through_the_registry(scheme):
    data = scheme.to_dict()
    assert data["scheme"] == "pan-and-scan"
    assert json.loads(json.dumps(data)) == data
    assert scheme_from_dict(json.loads(json.dumps(data))) == scheme == PanScan.from_dict(data)


def test_a_foreign_dict_is_refused():
    with pytest.raises(UsageError, match="unknown PanScan key"):
        PanScan.from_dict({**GEMMA3.to_dict(), "crop_size": 3})
    with pytest.raises(UsageError, match="'budget' is not 'pan-and-scan'"):
        PanScan.from_dict({**GEMMA3.to_dict(), "scheme": "budget"})


def test_from_preprocessor_config_reads_a_gemma3_checkpoint(tmp_path):
    # The released config leaves pan and scan to the call: the scheme turns it on, with the processor's numbers.
    assert PanScan.from_preprocessor_config(GEMMA3_CONFIG) == GEMMA3
    path = tmp_path / "preprocessor_config.json"
    path.write_text(json.dumps(GEMMA3_CONFIG))
    assert type(resolve_profile(str(path))) is PanScan and resolve_profile(str(path)) == GEMMA3
    stated = {**GEMMA3_CONFIG, "pan_and_scan_max_num_crops": 3, "pan_and_scan_min_ratio_to_activate": 2.0}
    three = PanScan.from_preprocessor_config(stated)
    assert (three.name, three.max_num_crops, three.min_ratio) == ("gemma3-custom", 3, 2.0)
    off = PanScan.from_preprocessor_config({**GEMMA3_CONFIG, "do_pan_and_scan": False})
    assert off.targets() == (Tiling(1, 1),)
    small = PanScan.from_preprocessor_config({"size": {"height": 448, "width": 448}}, name="g448", patch_size=28)
    assert (small.name, small.view_size, small.patch_size) == ("g448", 448, 28)


@pytest.mark.parametrize(
    ("config", "overrides", "needle"),
    [
        ({**GEMMA3_CONFIG, "size": {"height": 896, "width": 448}}, {}, "'size' must be square, got 896x448"),
        ({**GEMMA3_CONFIG, "size": {"shortest_edge": 896}}, {}, "'size' must be"),
        ({**GEMMA3_CONFIG, "image_processor_type": "SiglipImageProcessor"}, {}, "not Gemma3ImageProcessor"),
        ({"do_resize": True}, {}, "none of the Gemma3ImageProcessor keys"),
        (GEMMA3_CONFIG, {"crop_size": 3}, "unknown PanScan override.*crop_size.*allowed: name, view_size"),
        ({**GEMMA3_CONFIG, "pan_and_scan_max_num_crops": 1}, {}, "max_num_crops 1 is outside 2..257"),
        ("/nonexistent/preprocessor_config.json", {}, "cannot read preprocessor config"),
    ],
)
def test_bad_configs_are_refused_in_one_line(config, overrides, needle):
    with pytest.raises(UsageError, match=needle) as info:
        PanScan.from_preprocessor_config(config, **overrides)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"view_size": 900}, "view_size 900 is not a multiple of patch_size 14"),
        ({"view_size": 0}, "view_size must be a positive integer, got 0"),
        ({"min_crop_size": 1, "max_num_crops": 2}, "min_crop_size 1 is under 2"),
        ({"max_num_crops": 1}, r"max_num_crops 1 is outside 2\.\.257"),
        ({"min_crop_size": 3, "max_num_crops": 5}, r"max_num_crops 5 is outside 2\.\.4"),
        ({"pan_and_scan": "yes"}, "pan_and_scan must be true or false, got 'yes'"),
        ({"min_ratio": 0}, "min_ratio must be a positive number, got 0"),
        ({"min_ratio": float("inf")}, "min_ratio must be a positive number"),
        ({"tokens_per_view": 2.5}, "tokens_per_view must be a positive integer, got 2.5"),
        ({"name": ""}, "name must be a non-empty string"),
    ],
)
def test_bad_settings_are_refused_in_one_line(change, needle):
    with pytest.raises(UsageError, match=needle) as info:
        dataclasses.replace(GEMMA3, **change)
    assert "\n" not in str(info.value)
