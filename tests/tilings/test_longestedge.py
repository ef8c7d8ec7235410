"""Longest-edge schemes (Idefics3, SmolVLM): agreement with the real processors, the inverse with its processor
override, the presets, configs and errors.

transformers is the judge. Grids and canvases come from the image processor's own code:
``get_resize_output_image_size``, then the ``resize_for_vision_encoder`` and ``split_images`` methods of
``Idefics3ImageProcessor`` / ``SmolVLMImageProcessor`` called on stand-ins that record shapes (the only thing
left out is torchvision's resize itself, which makes exactly the size it is asked for); on real PIL images the
whole processor runs at every target with its override. Sequence tokens come from a real ``Idefics3Processor``
built here offline with a word-level tokenizer that holds the image tags as single tokens and spells
``"\\n\\n"`` as one token or as two: its ``_get_num_multimodal_tokens`` for the bulk, its whole call
(``mm_token_type_ids``: the image's span) on real images. ``SmolVLMProcessor`` needs ``num2words``, which is not
installed: for SmolVLM its module's own ``get_image_prompt_string`` writes the text and the same tokenizer counts it.
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
from tilings import GRID, PROFILES, Scheme, Tiling, enumerate_tilings, resolve_profile, scheme_from_dict
from tilings.longestedge import MAX_IMAGE_SIZE, PRESETS, LongestEdge
from tilings.overrides import configured, overrides_text, parse_overrides, point_geometry, processor_overrides

IDEFICS3, SMOLVLM = PRESETS["idefics3"], PRESETS["smolvlm"]
SCHEMES = {"idefics3": IDEFICS3, "smolvlm": SMOLVLM}
SEED = 20240813
DETERMINISTIC = settings(derandomize=True, max_examples=150, deadline=None, database=None)
SPECIALS = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"] + [
    f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]


# ----- transformers, the judge -----
def transformers_module():
    pytest.importorskip("torchvision")  # the image processors' backend
    return pytest.importorskip("transformers")


def processor_class(scheme: LongestEdge):
    return _judge(scheme.tile_size)[0]


class _Shape:
    """What the processor's size arithmetic reads of an image tensor: ``shape`` and ``size()``."""

    def __init__(self, *shape: int) -> None:
        self.shape = shape

    def size(self) -> tuple[int, ...]:
        return self.shape


_RECORDER = types.SimpleNamespace(resize=lambda image, size, resample=None: _Shape(*image.shape[:-2], size.height,
                                                                                   size.width))


@functools.lru_cache(maxsize=None)
def _split(cls, canvas_h: int, canvas_w: int, tile: int) -> tuple[tuple[int, int], int]:
    """``split_images`` itself, on a meta tensor of the canvas (no memory): (processor rows, cols), crops."""
    torch = pytest.importorskip("torch")
    meta = types.SimpleNamespace(
        resize=lambda image, size, resample=None: torch.empty((*image.shape[:-2], size.height, size.width),
                                                              device="meta"))
    frames, rows, cols = cls.split_images(meta, torch.empty((1, 3, canvas_h, canvas_w), device="meta"),
                                          {"longest_edge": tile})
    return (rows[0], cols[0]), frames.shape[1]


@functools.lru_cache(maxsize=None)
def _judge(tile: int):
    """(image processor class, its module) of the scheme with this tile: SmolVLM's for 384, Idefics3's otherwise."""
    transformers_module()
    from transformers.models.idefics3 import image_processing_idefics3
    from transformers.models.smolvlm import image_processing_smolvlm

    if tile == 384:
        return image_processing_smolvlm.SmolVLMImageProcessor, image_processing_smolvlm
    return image_processing_idefics3.Idefics3ImageProcessor, image_processing_idefics3


def reference(scheme: LongestEdge, height: int, width: int, longest_edge: int) -> tuple[Tiling, tuple[int, int], int]:
    """(grid, canvas, crops) from the processor's own code with ``size={"longest_edge": longest_edge}``."""
    cls, module = _judge(scheme.tile_size)
    h1, w1 = module.get_resize_output_image_size(_Shape(3, height, width), longest_edge)
    canvas = cls.resize_for_vision_encoder(_RECORDER, _Shape(1, 3, h1, w1), scheme.tile_size).shape[-2:]
    (rows, cols), crops = _split(cls, *canvas, scheme.tile_size)
    grid = Tiling(rows, cols) if (rows, cols) != (0, 0) else Tiling(1, 1)  # 0 x 0: not split, one image
    return grid, tuple(canvas), crops


def predicted(scheme: LongestEdge, height: int, width: int, longest_edge: int) -> tuple[Tiling, tuple[int, int], int]:
    g = configured(scheme, {"size": {"longest_edge": longest_edge}}).geometry(height, width)
    canvas = g.canvas if g.tiling != (1, 1) else (scheme.tile_size, scheme.tile_size)
    return g.tiling, canvas, g.crops


@functools.lru_cache(maxsize=None)
def tokenizer(merged: bool):
    """A word-level tokenizer built here (no download): words ``w0..w9``, the image tags as special tokens, and
    ``"\\n"`` (plus ``"\\n\\n"`` when `merged`) as added tokens."""
    transformers = transformers_module()
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

    newlines = ["\n\n", "\n"] if merged else ["\n"]
    vocab = {f"w{i}": i for i in range(10)} | {t: 10 + k for k, t in enumerate(SPECIALS + newlines)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_tokens([AddedToken(n, normalized=False) for n in newlines])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="w0",
                                                additional_special_tokens=SPECIALS)


@functools.lru_cache(maxsize=None)
def idefics3_processor(scheme: LongestEdge, merged: bool = True):
    """The real ``Idefics3Processor``: image processor from `processor_kwargs`, ``image_seq_len`` from the scheme."""
    transformers = transformers_module()
    return transformers.Idefics3Processor(image_processor=transformers.Idefics3ImageProcessor(**scheme.processor_kwargs()),
                                          tokenizer=tokenizer(merged), **scheme.text_processor_kwargs())


def sample_sizes(scheme: LongestEdge, seed: int, n_random: int = 1200) -> list[tuple[int, int]]:
    """Seeded sizes: ordinary, tiny, extreme aspect ratios, huge, every target's image and 1-2 px around it,
    exact multiples of each target's ratio, and sizes whose resized short side lands on or next to a multiple
    of the tile (where ``int()`` of a float quotient decides between two grids)."""
    rng = random.Random(seed)
    tile = scheme.tile_size
    top = scheme.max_side * tile
    sizes = [(rng.randint(1, top + tile), rng.randint(1, top + tile)) for _ in range(n_random)]
    sizes += [(rng.randint(1, tile), rng.randint(1, tile)) for _ in range(n_random // 6)]  # tiny
    for _ in range(n_random // 12):  # extreme aspect ratios, both ways
        thin, long = rng.randint(1, 40), rng.randint(500, 100_000)
        sizes += [(thin, long), (long, thin)]
    sizes += [(rng.randint(top, 10**7), rng.randint(top, 10**7)) for _ in range(n_random // 20)]  # huge
    for rows, cols in scheme.targets():
        h, w = rows * tile, cols * tile
        sizes += [(h + dh, w + dw) for dh in (-2, -1, 0, 1, 2) for dw in (-2, -1, 0, 1, 2)]
        g = math.gcd(rows, cols)
        sizes += [(rows // g * u, cols // g * u) for u in rng.sample(range(1, 3 * tile), 3)]
    for _ in range(n_random // 6):  # short side on and next to a multiple of the tile after the first resize
        long, k = rng.randint(tile + 1, top), rng.randint(1, scheme.max_side)
        short = k * tile * long // (4 * tile) + rng.randint(-2, 2)
        if short >= 1:
            sizes += [(short, long), (long, short)]
    return [(h, w) for h, w in sizes if h >= 1 and w >= 1]


def longest_edges(scheme: LongestEdge) -> list[int]:
    """The default, every override a target uses, edges that are no multiple of the tile, and one over the cap."""
    overrides = sorted({processor_overrides(scheme, t)["size"]["longest_edge"] for t in scheme.targets()})
    return [scheme.longest_edge, *overrides, 900, 1000, 2000, 3 * scheme.tile_size - 7, MAX_IMAGE_SIZE + 500]


def disagreements(scheme: LongestEdge, pairs) -> list[str]:
    wrong = []
    for (h, w), edge in pairs:
        want, got = reference(scheme, h, w, edge), predicted(scheme, h, w, edge)
        if want != got:
            wrong.append(f"{h}x{w} at longest_edge {edge}: transformers {want}, tilings {got}")
    return wrong


# ----- agreement with transformers -----
@pytest.mark.parametrize("name", list(SCHEMES))
def test_grids_agree_with_transformers_on_every_target_and_thousands_of_sizes(name):
    scheme = SCHEMES[name]
    rng = random.Random(SEED)
    sizes = sample_sizes(scheme, SEED)
    edges = longest_edges(scheme)
    # every planned target at its own override, every size at the default and at one more edge drawn per size
    pairs = [(scheme.resolution_for(t), processor_overrides(scheme, t)["size"]["longest_edge"])
             for t in scheme.targets()]
    pairs += [(s, scheme.longest_edge) for s in sizes] + [(s, rng.choice(edges)) for s in sizes]
    assert len(set(sizes)) >= 2000 and len(set(pairs)) >= 4000
    wrong = disagreements(scheme, pairs)
    assert not wrong, f"{len(wrong)} of {len(pairs)} disagree:\n" + "\n".join(wrong[:20])


def test_without_an_override_the_long_side_always_has_four_tiles():
    """The processor's default ``longest_edge = 4*M`` reaches only 1x4..4x4..4x1: the reason for the override."""
    for scheme in SCHEMES.values():
        grids = {scheme.geometry(h, w).tiling for h, w in sample_sizes(scheme, SEED + 1, n_random=300)}
        assert {max(g) for g in grids} == {4}
        assert grids == {Tiling(r, 4) for r in range(1, 5)} | {Tiling(4, c) for c in range(1, 5)}


def test_the_processors_own_patch_count_helper_is_wrong_off_multiples_of_the_tile_and_the_chain_is_right():
    """``get_number_of_image_patches`` takes the short side before the second resize: it agrees with the chain at
    every longest edge that is a multiple of the tile (all the scheme uses) and not elsewhere, where a real image
    shows the chain, and so the scheme, right."""
    from PIL import Image

    cls = processor_class(IDEFICS3)
    proc = cls(**IDEFICS3.processor_kwargs())
    sizes = sample_sizes(IDEFICS3, SEED + 2, n_random=300)
    for edge in range(364, 6 * 364 + 1, 364):
        for h, w in sizes:
            _, rows, cols = proc.get_number_of_image_patches(h, w, {"size": {"longest_edge": edge}})
            assert (Tiling(rows, cols) if rows else Tiling(1, 1)) == reference(IDEFICS3, h, w, edge)[0], (h, w, edge)
    # 15x12 at longest edge 900: the chain gives 1092x1092 (3x3), the helper 3x2
    _, rows, cols = proc.get_number_of_image_patches(15, 12, {"size": {"longest_edge": 900}})
    assert (rows, cols) == (3, 2)
    out = proc(images=[Image.new("RGB", (12, 15), (9, 9, 9))], size={"longest_edge": 900}, return_row_col_info=True,
               do_rescale=False, do_normalize=False)
    assert (out["rows"][0][0], out["cols"][0][0], len(out["pixel_values"][0])) == (3, 3, 10)
    assert predicted(IDEFICS3, 15, 12, 900) == reference(IDEFICS3, 15, 12, 900) == (Tiling(3, 3), (1092, 1092), 10)


@pytest.mark.parametrize("merged", [True, False], ids=["newline-pair-merged", "newline-pair-split"])
def test_token_counts_agree_with_the_real_processor(merged):
    """``Idefics3Processor._get_num_multimodal_tokens`` (what its ``replace_image_token`` writes, tokenized) at
    every target with its override, and at the default edge on 2,000 sizes."""
    for scheme in SCHEMES.values():
        scheme = dataclasses.replace(scheme, newline_pair_tokens=1 if merged else 2)
        proc = idefics3_processor(scheme, merged)
        wrong = []
        for t in scheme.targets():
            edge = processor_overrides(scheme, t)["size"]["longest_edge"]
            [n] = proc._get_num_multimodal_tokens(image_sizes=[scheme.resolution_for(t)],
                                                  size={"longest_edge": edge})["num_image_tokens"]
            if n != scheme.target_geometry(t).sequence_tokens:
                wrong.append(f"{t}: processor {n}, tilings {scheme.target_geometry(t).sequence_tokens}")
        sizes = sample_sizes(scheme, SEED + 3, n_random=1000)[:2000]
        counts = proc._get_num_multimodal_tokens(image_sizes=sizes)["num_image_tokens"]
        wrong += [f"{h}x{w}: processor {n}, tilings {scheme.geometry(h, w).sequence_tokens}"
                  for (h, w), n in zip(sizes, counts) if n != scheme.geometry(h, w).sequence_tokens]
        assert len(sizes) == 2000 and not wrong, f"{scheme.name}: {len(wrong)} disagree:\n" + "\n".join(wrong[:20])


def run_processor(scheme: LongestEdge, target: Tiling) -> tuple[int, tuple[int, int], int, int, tuple[int, int]]:
    """The whole processor on a real PIL image of the target's size, with the target's override: (crops, crop
    size, <image> tokens, tokens of the image's span, grid of the <row_i_col_j> tags it wrote). Idefics3: the full
    processor; SmolVLM: its image processor, its module's own prompt string (from the image processor's rows and
    cols), the same tokenizer. Rescaling, normalising, RGB conversion and padding are off: they change pixel
    values and the batch's padding only, never the crops or counts, and take most of the time."""
    from PIL import Image

    height, width = scheme.resolution_for(target)
    overrides = processor_overrides(scheme, target)
    image = Image.new("RGB", (width, height), (200, 40, 90))
    quiet = {"do_rescale": False, "do_normalize": False, "do_convert_rgb": False, "do_pad": False}
    tok = tokenizer(True)
    if scheme.tile_size == 364:
        proc = idefics3_processor(scheme)
        out = proc(images=[image], text="w1<image>w2", return_mm_token_type_ids=True, **overrides, **quiet)
        ids, span, crops = out["input_ids"][0], sum(out["mm_token_type_ids"][0]), out["pixel_values"][0]
    else:
        from transformers.models.smolvlm.processing_smolvlm import get_image_prompt_string

        proc = processor_class(scheme)(**scheme.processor_kwargs())
        out = proc(images=[image], return_row_col_info=True, **overrides, **quiet)
        text = get_image_prompt_string(out["rows"][0][0], out["cols"][0][0], scheme.tokens_per_tile,
                                       fake_token_around_image=SPECIALS[0], image_token=SPECIALS[1],
                                       global_image_token=SPECIALS[3])
        ids, crops = tok(text, add_special_tokens=False)["input_ids"], out["pixel_values"][0]
        span = len(ids)
    tags = [tok.convert_ids_to_tokens(i) for i in ids if tok.convert_ids_to_tokens(i).startswith("<row_")]
    grid = (len({t.split("_")[1] for t in tags}), len({t.split("_")[3] for t in tags}))
    return len(crops), tuple(crops[0].shape[-2:]), ids.count(tok.convert_tokens_to_ids(SPECIALS[1])), span, grid


@pytest.mark.parametrize("name", list(SCHEMES))
def test_the_processor_on_real_images_makes_every_target_with_its_override(name):
    scheme = SCHEMES[name]
    started, wrong = time.monotonic(), []
    for t in scheme.targets():
        g = point_geometry(scheme, t, *scheme.resolution_for(t))
        want = (g.crops, (scheme.tile_size, scheme.tile_size), g.image_tokens, g.sequence_tokens,
                tuple(t) if t != (1, 1) else (0, 0))
        got = run_processor(scheme, t)
        if got != want:
            wrong.append(f"{t}: processor (crops, crop, <image>, span, rows/cols) {got}, tilings {want}")
    assert len(scheme.targets()) == 36 and not wrong, "\n".join(wrong)
    assert time.monotonic() - started < 60  # a guard on the file's run time, not a benchmark


def test_the_override_is_what_reaches_the_grid():
    """The same image without its override: the processor's default longest edge, another grid (4 tiles long)."""
    from PIL import Image

    proc = processor_class(IDEFICS3)(**IDEFICS3.processor_kwargs())
    out = proc(images=[Image.new("RGB", (728, 364))], return_row_col_info=True, do_rescale=False, do_normalize=False)
    assert (out["rows"][0][0], out["cols"][0][0], len(out["pixel_values"][0])) == (2, 4, 9)
    assert IDEFICS3.geometry(364, 728).tiling == (2, 4)
    assert point_geometry(IDEFICS3, Tiling(1, 2), 364, 728).tiling == (1, 2)


# ----- counts by hand -----
def test_geometry_counts_by_hand():
    # 1x2 at longest edge 728: 2 tiles + the global image = 3 crops of 169 tokens; the text is 2 x (fake, row_col,
    # 169), then the row's "\n" and the global image's "\n" (one token "\n\n"), then fake, global, 169, fake:
    # 342 + 1 + 172 = 515.
    g = point_geometry(IDEFICS3, Tiling(1, 2), 364, 728)
    assert g == (Tiling(1, 2), 3, (364, 728), 507, 515, None, None, 3 * 26 * 26)
    # unsplit: fake, global, 169, fake
    assert point_geometry(IDEFICS3, Tiling(1, 1), 364, 364)[:5] == (Tiling(1, 1), 1, (364, 364), 169, 172)
    # 6x6 on SmolVLM: 37 crops of 81 tokens, 27x27 patches each (384 // 14 = 27)
    g = SMOLVLM.target_geometry(Tiling(6, 6))
    assert (g.crops, g.image_tokens, g.sequence_tokens, g.encoder_patches) == (37, 2997, 36 * 83 + 6 + 84, 37 * 729)
    # 1000x3000 at the default 1456: 1456 wide, int(1456 / 3.0) = 485 -> 486 high; canvas 728x1456: 2x4
    assert IDEFICS3.geometry(1000, 3000)[:3] == (Tiling(2, 4), 9, (728, 1456))
    # 1x100000: 1456 x max(int(1456/100000), 1) = 1 -> canvas 364x1456
    assert IDEFICS3.geometry(1, 100_000).tiling == Tiling(1, 4)


@pytest.mark.parametrize("size, needle", [
    ((0, 5), "height must be a positive integer"),
    ((5, -1), "width must be a positive integer"),
    ((1.5, 5), "height must be a positive integer"),
    ((True, 5), "height must be a positive integer"),
    ((5, 2**63), "below"),
])
def test_bad_sizes_are_refused_in_one_line(size, needle):
    with pytest.raises(UsageError, match=needle) as info:
        IDEFICS3.geometry(*size)
    assert "\n" not in str(info.value)


# ----- the inverse -----
@DETERMINISTIC
@given(st.sampled_from(list(SCHEMES)), st.integers(1, 9), st.integers(1, 9))
def test_round_trip_property_on_the_presets(name, rows, cols):
    scheme, target = SCHEMES[name], Tiling(rows, cols)
    if rows <= 6 and cols <= 6:
        size = scheme.resolution_for(target)
        edge = processor_overrides(scheme, target)["size"]["longest_edge"]
        assert size == (rows * scheme.tile_size, cols * scheme.tile_size) and edge == max(rows, cols) * scheme.tile_size
        geo = point_geometry(scheme, target, *size)
        assert geo.tiling == target and geo == scheme.target_geometry(target)
        assert reference(scheme, *size, edge)[0] == target  # transformers' own code agrees
    else:
        assert not scheme.is_reachable(target)
        with pytest.raises(UsageError, match=f"tiling {rows}x{cols} is unreachable") as info:
            scheme.resolution_for(target)
        assert "\n" not in str(info.value)


@st.composite
def any_scheme(draw) -> LongestEdge:
    """Other tile sizes and default edges (multiples of the tile or not), sides as far as the cap allows."""
    tile = draw(st.sampled_from([28, 224, 336, 364, 384, 448, 512, 980]))
    side = draw(st.integers(1, min(6, MAX_IMAGE_SIZE // tile)))
    return LongestEdge(name="drawn", tile_size=tile, max_side=side, patch_size=14, tokens_per_tile=1,
                       longest_edge=draw(st.integers(1, MAX_IMAGE_SIZE + 100)))


@DETERMINISTIC
@given(any_scheme(), st.integers(1, 7), st.integers(1, 7))
def test_round_trip_property_on_any_tile_agrees_with_transformers(scheme, rows, cols):
    target = Tiling(rows, cols)
    if scheme.is_reachable(target):
        size = scheme.resolution_for(target)
        assert point_geometry(scheme, target, *size).tiling == target
        assert reference(scheme, *size, processor_overrides(scheme, target)["size"]["longest_edge"])[0] == target
    else:
        assert max(rows, cols) > scheme.max_side
    for family in scheme.families:
        for t, size in scheme.points(family):
            assert point_geometry(scheme, t, *size).tiling == t, (family, t, size)


# ----- overrides, families, presets, configs -----
def test_overrides_configure_the_scheme_and_nothing_else():
    t = Tiling(2, 3)
    overrides = processor_overrides(IDEFICS3, t)
    assert overrides == {"size": {"longest_edge": 1092}}
    assert overrides_text(overrides) == '{"size":{"longest_edge":1092}}'
    assert parse_overrides(overrides_text(overrides)) == overrides and parse_overrides(None) == {}
    assert configured(IDEFICS3, overrides) == dataclasses.replace(IDEFICS3, longest_edge=1092)
    assert configured(IDEFICS3, {}) is IDEFICS3
    cases = [({"max_image_size": {"longest_edge": 512}}, "overrides only the processor's size"),
             ({"size": {"height": 5, "width": 5}}, r'size override must be \{"longest_edge": N\}'),
             ({"size": {"longest_edge": 0}}, "size longest_edge must be a positive integer")]
    for bad, message in cases:
        with pytest.raises(UsageError, match=message) as info:
            configured(IDEFICS3, bad)
        assert "\n" not in str(info.value)
    with pytest.raises(UsageError, match="'internvl3' takes no processor overrides"):
        configured(PROFILES["internvl3"], overrides)
    with pytest.raises(UsageError, match="must be a JSON object"):
        parse_overrides("[1, 2]")


def test_families_and_the_scheme_interface():
    assert isinstance(IDEFICS3, Scheme) and IDEFICS3.kind == GRID
    assert PROFILES["idefics3"] is IDEFICS3 and PROFILES["smolvlm"] is SMOLVLM
    assert IDEFICS3.max_crops == 36 and IDEFICS3.families == ("1xk", "2xk", "kx1", "all")
    assert IDEFICS3.family_tilings("1xk") == [Tiling(1, k) for k in range(1, 7)]
    assert IDEFICS3.family_tilings("2xk") == [Tiling(2, k) for k in range(1, 7)]
    assert IDEFICS3.family_tilings("all") == [Tiling(r, c) for r in range(1, 7) for c in range(1, 7)]
    assert [t for t, _ in enumerate_tilings("smolvlm")][:3] == [Tiling(1, 1), Tiling(1, 2), Tiling(1, 3)]
    flat = dataclasses.replace(IDEFICS3, name="flat", image_splitting=False)
    assert flat.targets() == (Tiling(1, 1),) and flat.max_crops == 1 and processor_overrides(flat, (1, 1)) == {}
    assert flat.geometry(3000, 1000)[:2] == (Tiling(1, 1), 1)
    with pytest.raises(UsageError, match="does not split images"):
        flat.resolution_for(Tiling(1, 2))


def test_the_presets_hold_the_processors_defaults_and_the_checkpoints_numbers():
    transformers = transformers_module()
    for cls in (transformers.Idefics3ImageProcessor, transformers.SmolVLMImageProcessor):
        default = cls()  # SmolVLM's class defaults are Idefics3's
        assert (default.size["longest_edge"], default.max_image_size["longest_edge"], default.do_image_splitting) == (
            IDEFICS3.longest_edge, IDEFICS3.tile_size, IDEFICS3.image_splitting)
        for scheme in SCHEMES.values():
            configured_proc = cls(**scheme.processor_kwargs())
            assert (configured_proc.size["longest_edge"], configured_proc.max_image_size["longest_edge"]) == (
                scheme.longest_edge, scheme.tile_size)
    import inspect

    for cls in (transformers.Idefics3Processor, transformers.SmolVLMProcessor):
        assert inspect.signature(cls.__init__).parameters["image_seq_len"].default == IDEFICS3.tokens_per_tile
    # tokens per crop = (tile // patch)^2 / scale^2, as Idefics3Model computes its image_seq_len
    assert IDEFICS3.tokens_per_tile == (364 // 14) ** 2 // 2**2 and SMOLVLM.tokens_per_tile == (384 // 14) ** 2 // 3**2
    assert (SMOLVLM.tile_size, SMOLVLM.longest_edge) == (384, 4 * 384)


@pytest.mark.parametrize("name", list(SCHEMES))
def test_to_dict_round_trips_through_the_registry(name):
    scheme = SCHEMES[name]
    data = scheme.to_dict()
    assert data["scheme"] == "longest-edge" and data["tile_size"] == scheme.tile_size
    restored = scheme_from_dict(json.loads(json.dumps(data)))
    assert restored == scheme and type(restored) is LongestEdge


def test_from_preprocessor_config(tmp_path):
    smolvlm2 = {"image_processor_type": "SmolVLMImageProcessor", "processor_class": "SmolVLMProcessor",
                "do_image_splitting": True, "do_resize": True, "max_image_size": {"longest_edge": 384},
                "size": {"longest_edge": 1536}}
    path = tmp_path / "preprocessor_config.json"
    path.write_text(json.dumps(smolvlm2))
    assert resolve_profile(str(path)) == SMOLVLM
    assert LongestEdge.from_preprocessor_config({"max_image_size": {"longest_edge": 364}}) == IDEFICS3
    small = LongestEdge.from_preprocessor_config({**smolvlm2, "max_image_size": {"longest_edge": 512},
                                                  "size": {"longest_edge": 2048}, "image_seq_len": 64},
                                                 patch_size=16)
    assert (small.name, small.tile_size, small.longest_edge, small.tokens_per_tile, small.max_side) == (
        "smolvlm-custom", 512, 2048, 64, 6)
    with pytest.raises(UsageError, match="do_resize false"):
        LongestEdge.from_preprocessor_config({**smolvlm2, "do_resize": False})
    with pytest.raises(UsageError, match="none of the Idefics3ImageProcessor keys"):
        LongestEdge.from_preprocessor_config({"image_processor_type": "Idefics3ImageProcessor"})
    with pytest.raises(UsageError, match="is for 'GotOcr2ImageProcessor'"):
        LongestEdge.from_preprocessor_config({**smolvlm2, "image_processor_type": "GotOcr2ImageProcessor",
                                              "processor_class": "SmolVLMProcessor"})
    with pytest.raises(UsageError, match="unknown LongestEdge override"):
        LongestEdge.from_preprocessor_config(smolvlm2, tile=3)


@pytest.mark.parametrize("fields, message", [
    ({"max_side": 7}, "max_side 7 is over 6"),
    ({"tile_size": 1024, "max_side": 5}, "max_side 5 is over 4"),
    ({"newline_pair_tokens": 3}, "newline_pair_tokens must be 1"),
    ({"patch_size": 400}, "patch_size 400 is over tile_size 364"),
    ({"image_splitting": 1}, "image_splitting must be true or false"),
    ({"tokens_per_tile": 0}, "tokens_per_tile must be a positive integer"),
])
def test_bad_settings_are_refused_in_one_line(fields, message):
    with pytest.raises(UsageError, match=message) as info:
        dataclasses.replace(IDEFICS3, **fields)
    assert "\n" not in str(info.value)
