"""Padded-canvas scheme (Llama 3.2 Vision's MllamaImageProcessor): agreement with the real processor, the inverse,
the constant-compute mark, the presets, configs and errors.

transformers is the judge. Grids come from its ``get_optimal_tiled_canvas`` (the torchvision
processor's and the PIL twin's, each module its own copy) for the bulk, and from running
``MllamaImageProcessor`` / ``MllamaImageProcessorPil`` and the whole ``MllamaProcessor`` (with a
word-level tokenizer built here, offline) on real PIL images at every target: the grid is read
from the processor's ``aspect_ratio_ids`` (its own list), the padded tiles from ``pixel_values``,
the image's tiles from ``aspect_ratio_mask`` and the cross-attention mask, the text tokens from
``input_ids``. Numbers written in the tests were worked out by hand (arithmetic in the comments).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tilesweep.errors import UsageError
from tilings import GRID, PROFILES, Scheme, Tiling, crop_counts, enumerate_tilings, resolve_profile, scheme_from_dict
from tilings.mllama import PRESETS, PaddedCanvas
from tilings.scheme import constant_compute

MLLAMA = PRESETS["mllama"]
TINY = PRESETS["mllama-tiny"]
SEED = 20240925
DETERMINISTIC = settings(derandomize=True, max_examples=200, deadline=None, database=None)
# The 8 grids of 4 tiles, in the processor's list order (get_all_supported_aspect_ratios(4), first number outer).
GRIDS_OF_4 = [(1, 1), (1, 2), (1, 3), (1, 4), (2, 1), (2, 2), (3, 1), (4, 1)]

# Other settings of the same kernel, checked against the processor too: the code's default tile (224), one tile
# only, 2, 6 and 16 tiles, small tiles (28 px, 2 px) where float ties are dense.
VARIANTS = {
    "t224": PaddedCanvas(name="t224", tile_size=224, patch_size=14),
    "max1": PaddedCanvas(name="max1", max_image_tiles=1),
    "max2": PaddedCanvas(name="max2", max_image_tiles=2),
    "max6-t28": PaddedCanvas(name="max6", tile_size=28, patch_size=14, max_image_tiles=6),
    "max16-t336": PaddedCanvas(name="max16", tile_size=336, patch_size=14, max_image_tiles=16),
    "t2-max5": PaddedCanvas(name="t2", tile_size=2, patch_size=1, max_image_tiles=5),
}

# meta-llama/Llama-3.2-11B-Vision's preprocessor_config.json.
CHECKPOINT_CONFIG = {
    "do_convert_rgb": True, "do_normalize": True, "do_pad": True, "do_rescale": True, "do_resize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_processor_type": "MllamaImageProcessor",
    "image_std": [0.26862954, 0.26130258, 0.27577711], "max_image_tiles": 4, "resample": 2,
    "rescale_factor": 0.00392156862745098, "size": {"height": 560, "width": 560},
}


# ----- the real processor -----
def canvas_functions():
    """Both backends' own ``get_optimal_tiled_canvas`` (the PIL module keeps a copy of its own)."""
    pytest.importorskip("torchvision")
    fast = pytest.importorskip("transformers.models.mllama.image_processing_mllama")
    pil = pytest.importorskip("transformers.models.mllama.image_processing_pil_mllama")
    return fast.get_optimal_tiled_canvas, pil.get_optimal_tiled_canvas


def processor_grid(function, scheme: PaddedCanvas, height: int, width: int) -> Tiling:
    canvas_h, canvas_w = function(height, width, scheme.max_image_tiles, scheme.tile_size)
    assert canvas_h % scheme.tile_size == 0 and canvas_w % scheme.tile_size == 0
    return Tiling(int(canvas_h) // scheme.tile_size, int(canvas_w) // scheme.tile_size)


def disagreements(scheme: PaddedCanvas, sizes) -> list[str]:
    wrong = []
    for function in canvas_functions():
        for h, w in sizes:
            want, got = processor_grid(function, scheme, h, w), scheme.geometry(h, w).tiling
            if got != want:
                wrong.append(f"{function.__module__} {h}x{w}: processor {want}, tilings {got}")
    return wrong


def sample_sizes(scheme: PaddedCanvas, seed: int, n_random: int = 500) -> list[tuple[int, int]]:
    """Seeded sizes: ordinary, extreme aspect ratios, tiny, huge; every canvas and its multiples and halves
    (scale ties between canvases, the min-area rule), every canvas's aspect ratio at random scales (scale_h ==
    scale_w), and every target with its neighbours."""
    rng = random.Random(seed)
    tile = scheme.tile_size
    sizes = [(rng.randint(1, 4000), rng.randint(1, 4000)) for _ in range(n_random)]
    for _ in range(n_random // 4):
        thin, long = rng.randint(1, 60), rng.randint(600, 100_000)
        sizes += [(thin, long), (long, thin)]
    sizes += [(rng.randint(1, 40), rng.randint(1, 40)) for _ in range(n_random // 3)]
    sizes += [(rng.randint(4000, 10**12), rng.randint(4000, 10**12)) for _ in range(n_random // 10)]
    for a, b in scheme.candidates():
        for num, den in ((1, 2), (1, 1), (3, 2), (2, 1), (3, 1), (1, 3), (2, 3), (5, 4)):
            if (a * tile * num) % den == 0 and (b * tile * num) % den == 0:
                sizes.append((a * tile * num // den, b * tile * num // den))
        sizes += [(a * u, b * u) for u in rng.sample(range(1, 3 * tile + 2), min(12, 3 * tile + 1))]
    for t in scheme.targets():
        h, w = scheme.resolution_for(t)
        sizes += [(h + dh, w + dw) for dh in (-2, -1, 0, 1, 2) for dw in (-2, -1, 0, 1, 2)]
    return [(h, w) for h, w in sizes if h >= 1 and w >= 1]


# ----- agreement with the processor -----
def test_grids_agree_with_both_processors_on_every_target_and_thousands_of_sizes():
    sizes = sample_sizes(MLLAMA, SEED, n_random=1000)
    assert len(set(sizes)) >= 2000
    wrong = disagreements(MLLAMA, sizes)
    assert not wrong, f"{len(wrong)} of {2 * len(sizes)} disagree (mllama):\n" + "\n".join(wrong[:20])
    # the sample reaches every grid, and ties: a 560x560 image fits 1x1, 1x2, 2x1, ... at scale 1 (min area: 1x1)
    assert {MLLAMA.geometry(h, w).tiling for h, w in sizes} == set(GRIDS_OF_4)
    assert MLLAMA.geometry(560, 560).tiling == (1, 1) and MLLAMA.geometry(280, 560).tiling == (1, 1)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_grids_agree_with_the_processor_for_other_settings(variant):
    scheme = VARIANTS[variant]
    sizes = sample_sizes(scheme, SEED + 1, n_random=150)
    wrong = disagreements(scheme, sizes)
    assert not wrong, f"{len(wrong)} of {2 * len(sizes)} disagree ({variant}):\n" + "\n".join(wrong[:20])


def test_hand_worked_sizes():
    # 1000x3000: scales min(560k/1000, 560m/3000); >= 1 needs k >= 2 and m >= 6: none within 4 tiles, so the
    # largest down-scale: 1x3 -> min(0.56, 1680/3000 = 0.56) and 1x4 -> min(0.56, 0.7467) tie at 0.56 (the same
    # rational, the same double), 2x2 -> min(1.12, 0.3733) is below: of the tie, the smaller area, 1x3.
    assert MLLAMA.geometry(1000, 3000).tiling == (1, 3)
    # 600x600: 2x2 needs 1.8667 (min of 1120/600 twice); 1x1 0.9333, 1x2 0.9333 and 2x1: none >= 1 but 2x2 -> 2x2.
    assert MLLAMA.geometry(600, 600).tiling == (2, 2)
    # 500x1200: 1x3 -> min(1.12, 1.4) = 1.12; 1x4 -> min(1.12, 1.8667) = 1.12; 2x2 -> min(2.24, 0.9333) < 1;
    # 1x3 and 1x4 tie at 1.12: the smaller area, 1x3.
    assert MLLAMA.geometry(500, 1200).tiling == (1, 3)
    functions = canvas_functions()
    for h, w, want in ((1000, 3000, (1, 3)), (600, 600, (2, 2)), (500, 1200, (1, 3))):
        assert all(processor_grid(f, MLLAMA, h, w) == want for f in functions)


def run_processor(proc, height: int, width: int, text: str | None = None):
    image_module = pytest.importorskip("PIL.Image")
    image = image_module.new("RGB", (width, height), (120, 60, 30))
    kwargs = {"text": text} if text is not None else {}
    return proc(images=[[image]], return_tensors="pt", **kwargs)


def grid_of(out, max_image_tiles: int) -> Tiling:
    """The processor's grid: its aspect_ratio_ids index its own list of (first number, second number) pairs."""
    from transformers.models.mllama.image_processing_mllama import get_all_supported_aspect_ratios

    return Tiling(*get_all_supported_aspect_ratios(max_image_tiles)[int(out["aspect_ratio_ids"][0, 0]) - 1])


@pytest.mark.parametrize("backend", ["MllamaImageProcessor", "MllamaImageProcessorPil"])
def test_both_image_processors_run_on_real_images_pad_every_target_to_max_tiles(backend):
    """Every target at its exact size: its grid, the image's tiles in the mask, and always 4 padded tiles."""
    transformers = pytest.importorskip("transformers")
    proc = getattr(transformers, backend)(**MLLAMA.processor_kwargs())
    for t in MLLAMA.targets():
        out = run_processor(proc, *MLLAMA.resolution_for(t))
        g = MLLAMA.target_geometry(t)
        pixels = out["pixel_values"]
        assert grid_of(out, 4) == t
        assert tuple(pixels.shape) == (1, 1, g.crops, 3, 560, 560) and g.crops == 4
        assert out["aspect_ratio_mask"][0, 0].tolist() == [1] * t.cells + [0] * (4 - t.cells)
        assert out["num_tiles"] == [[t.cells]]
        assert g.canvas == (t.rows * 560, t.cols * 560)
        assert float(pixels[0, 0, t.cells:].abs().sum()) == 0.0  # padding tiles are zeros


def test_small_tiles_on_real_images_at_targets_neighbours_and_random_sizes():
    """The whole preprocessing with 28 px tiles (cheap): every target and its neighbours, plus random sizes."""
    transformers = pytest.importorskip("transformers")
    scheme = VARIANTS["max6-t28"]
    proc = transformers.MllamaImageProcessor(**scheme.processor_kwargs())
    rng = random.Random(SEED)
    sizes = [(h + dh, w + dw) for t in scheme.targets() for h, w in [scheme.resolution_for(t)]
             for dh, dw in ((0, 0), (-1, 1), (2, -3), (1, 1))]
    sizes += [(rng.randint(1, 200), rng.randint(1, 200)) for _ in range(120)]
    wrong = []
    for h, w in sizes:
        out = run_processor(proc, h, w)
        g = scheme.geometry(h, w)
        got = (grid_of(out, 6), int(out["pixel_values"].shape[2]), int(out["aspect_ratio_mask"].sum()))
        if got != (g.tiling, g.crops, g.tiling.cells):
            wrong.append(f"{h}x{w}: processor {got}, tilings {(g.tiling, g.crops, g.tiling.cells)}")
    assert not wrong, f"{len(wrong)} of {len(sizes)} images disagree:\n" + "\n".join(wrong[:20])


@functools.cache
def word_level_processor():
    """A real MllamaProcessor whose tokenizer spells <|image|>, <|python_tag|> and the bos token as one token each."""
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {"[UNK]": 0, "<|begin_of_text|>": 1, "<|image|>": 2, "<|python_tag|>": 3, "Describe": 4, "this": 5}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", bos_token="<|begin_of_text|>",
        additional_special_tokens=["<|image|>", "<|python_tag|>"])
    return transformers.MllamaProcessor(image_processor=transformers.MllamaImageProcessor(**MLLAMA.processor_kwargs()),
                                        tokenizer=tokenizer)


def test_the_full_processor_adds_one_image_token_and_a_cross_attention_mask_over_the_image_tiles():
    """MllamaProcessor at every target: one <|image|> in the text (image_tokens = sequence_tokens = 1, no other
    token added for the image), 4 padded tiles, and the tokens from <|image|> on attend to the image's tiles only."""
    proc = word_level_processor()
    for t in MLLAMA.targets():
        out = run_processor(proc, *MLLAMA.resolution_for(t), text="<|image|>Describe this")
        g = MLLAMA.target_geometry(t)
        ids = out["input_ids"][0].tolist()
        assert ids == [2, 1, 4, 5]  # <|image|> <|begin_of_text|> Describe this: bos goes after leading images
        assert ids.count(proc.image_token_id) == g.image_tokens == g.sequence_tokens == 1
        assert grid_of(out, 4) == t and out["pixel_values"].shape[2] == g.crops
        mask = out["cross_attention_mask"]
        assert tuple(mask.shape) == (1, 4, 1, 4)
        assert mask[0, :, 0].tolist() == [[1] * t.cells + [0] * (4 - t.cells)] * 4


# ----- the inverse -----
@st.composite
def schemes(draw) -> PaddedCanvas:
    patch = draw(st.integers(1, 40))
    return PaddedCanvas(name="h", tile_size=patch * draw(st.integers(1, 40)), patch_size=patch,
                        max_image_tiles=draw(st.integers(1, 20)))


@DETERMINISTIC
@given(scheme=schemes(), data=st.data())
def test_forward_of_the_inverse_is_the_target_and_the_processor_agrees(scheme, data):
    target = data.draw(st.sampled_from(scheme.targets()))
    h, w = scheme.resolution_for(target)
    assert scheme.geometry(h, w).tiling == target
    assert all(processor_grid(f, scheme, h, w) == target for f in canvas_functions())


@DETERMINISTIC
@given(scheme=schemes(), h=st.integers(1, 10**7), w=st.integers(1, 10**7))
def test_every_size_gives_a_reachable_target_whose_inverse_gives_it_back(scheme, h, w):
    target = scheme.geometry(h, w).tiling
    assert scheme.is_reachable(target) and target.cells <= scheme.max_image_tiles
    assert scheme.geometry(*scheme.resolution_for(target)).tiling == target


def test_every_grid_within_the_limit_is_a_target():
    for scheme in (MLLAMA, *VARIANTS.values()):
        m = scheme.max_image_tiles
        assert set(scheme.targets()) == {(r, c) for r in range(1, m + 1) for c in range(1, m + 1) if r * c <= m}
    assert list(MLLAMA.targets()) == GRIDS_OF_4


# ----- geometry, the control mark, presets -----
def test_geometry_is_the_same_at_every_target():
    """4 tiles of (560/14)^2 = 1600 patches at every tiling; the LLM attends to 4 x 1601 = 6404 vision states."""
    geometries = [MLLAMA.target_geometry(t) for t in MLLAMA.targets()]
    assert len({g.canvas for g in geometries}) == 8  # the canvases differ...
    assert {(g.crops, g.image_tokens, g.sequence_tokens, g.encoder_patches) for g in geometries} == {(4, 1, 1, 6400)}
    assert MLLAMA.cross_attention_tokens == 6404  # ...nothing the model computes on does
    assert {TINY.target_geometry(t).encoder_patches for t in TINY.targets()} == {400}  # 4 x (560/56)^2
    assert crop_counts(MLLAMA) == [4]


def test_the_scheme_is_marked_as_a_constant_compute_control():
    note = constant_compute(MLLAMA)
    assert "max_image_tiles = 4" in note and "6404" in note and "flat" in note and "\n" not in note
    assert "attends to 404" in constant_compute(TINY)  # 4 x (10x10 + 1)
    assert all(constant_compute(PROFILES[n]) == "" for n in ("molmo2", "internvl3", "llava-onevision", "qwen2.5-vl"))


def test_presets_are_registered_and_read_back():
    assert PROFILES["mllama"] is MLLAMA and PROFILES["mllama-tiny"] is TINY
    for scheme in (MLLAMA, TINY):
        assert isinstance(scheme, Scheme) and scheme.kind == GRID and scheme.max_crops == 4
        data = scheme.to_dict()
        assert data == {"scheme": "padded-canvas", "name": scheme.name, "tile_size": 560,
                        "patch_size": scheme.patch_size, "max_image_tiles": 4}
        assert scheme_from_dict(json.loads(json.dumps(data))) == scheme
    assert [t for t, _ in enumerate_tilings(MLLAMA)] == [(1, 1), (1, 2), (1, 3), (1, 4), (2, 1), (2, 2), (3, 1), (4, 1)]
    assert MLLAMA.processor_kwargs() == {"size": {"height": 560, "width": 560}, "max_image_tiles": 4}


def test_the_checkpoint_config_reads_into_the_preset(tmp_path):
    assert PaddedCanvas.from_preprocessor_config(CHECKPOINT_CONFIG) == MLLAMA
    assert PaddedCanvas.from_preprocessor_config(CHECKPOINT_CONFIG, patch_size=56, name="mllama-tiny") == TINY
    eight = PaddedCanvas.from_preprocessor_config({**CHECKPOINT_CONFIG, "max_image_tiles": 8})
    assert (eight.name, eight.max_image_tiles, len(eight.targets())) == ("mllama-custom", 8, 20)
    path = tmp_path / "preprocessor_config.json"
    path.write_text(json.dumps(CHECKPOINT_CONFIG))
    assert resolve_profile(str(path)) == MLLAMA  # the registry knows the processor type
    path.write_text(json.dumps({"size": {"height": 224, "width": 224}, "max_image_tiles": 2}))
    assert resolve_profile(str(path)) == dataclasses.replace(MLLAMA, name="mllama-custom", tile_size=224,
                                                             max_image_tiles=2)


@pytest.mark.parametrize("call, message", [
    (lambda: MLLAMA.resolution_for((2, 3)), "tiling 2x3 has 6 tiles, over scheme 'mllama'.s max_image_tiles 4"),
    (lambda: MLLAMA.resolution_for((0, 1)), "tiling rows must be a positive integer"),
    (lambda: MLLAMA.resolution_for("1x2"), "a tiling is a pair"),
    (lambda: MLLAMA.geometry(0, 5), "height must be a positive integer"),
    (lambda: MLLAMA.geometry(5, 2**63), "width must be a positive integer below"),
    (lambda: PaddedCanvas(name="x", tile_size=560, patch_size=15), "tile_size 560 is not a multiple of patch_size 15"),
    (lambda: PaddedCanvas(name="x", max_image_tiles=0), "max_image_tiles must be a positive integer"),
    (lambda: PaddedCanvas(name=""), "name must be a non-empty string"),
    (lambda: PaddedCanvas.from_preprocessor_config({**CHECKPOINT_CONFIG, "size": {"height": 560, "width": 448}}),
     "must be square, got 560x448"),
    (lambda: PaddedCanvas.from_preprocessor_config({"image_processor_type": "GotOcr2ImageProcessor", "size": 448}),
     "is for 'GotOcr2ImageProcessor', not MllamaImageProcessor"),
    (lambda: PaddedCanvas.from_preprocessor_config({"do_pad": True}), "none of the MllamaImageProcessor keys"),
    (lambda: PaddedCanvas.from_preprocessor_config(CHECKPOINT_CONFIG, tiles=4), "unknown PaddedCanvas override"),
])
def test_bad_input_is_a_one_line_usage_error(call, message):
    with pytest.raises(UsageError, match=message) as info:
        call()
    assert "\n" not in str(info.value)


# ----- tilesweep plan -----
def run_plan(capsys, *argv: str) -> tuple[int, str, str]:
    from orchestrator.cli import main

    code = main(["plan", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_plan_lists_every_tiling_and_says_it_is_a_control(capsys):
    code, out, err = run_plan(capsys, "--profile", "mllama")
    assert code == 0 and err == ""
    lines = out.splitlines()
    body = [line.split() for line in lines[1:9]]
    assert [row[0] for row in body] == [f"{r}x{c}" for r, c in GRIDS_OF_4]
    assert {row[2] for row in body} == {f"{560 * r}x{560 * c}" for r, c in GRIDS_OF_4}
    assert {tuple(row[3:]) for row in body} == {("4", "1", "1")}
    assert lines[-1] == f"constant-compute control: {constant_compute(MLLAMA)}"
    code, out, _ = run_plan(capsys, "--profile", "mllama", "--format", "json")
    doc = json.loads(out)
    assert doc["constant_compute"] == constant_compute(MLLAMA) and len(doc["rows"]) == 8
    _, _, err = run_plan(capsys, "--profile", "mllama", "--format", "csv")
    assert err.splitlines()[-1].startswith("constant-compute control: mllama pads every image")
    _, out, _ = run_plan(capsys, "--profile", "internvl3")
    assert "constant-compute" not in out
    assert json.loads(run_plan(capsys, "--profile", "internvl3", "--format", "json")[1])["constant_compute"] is None


def test_plan_with_an_unknown_profile_names_the_mllama_presets(capsys):
    code, _, err = run_plan(capsys, "--profile", "mlama")
    assert code == 2 and "mllama" in err and "mllama-tiny" in err
