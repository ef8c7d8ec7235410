"""The Cohere2-Vision family: the tiny model measured on the CPU, the token layout, loading, and no full-size preset.

Every model is built from a config in code (no download): `tests/workers/conftest.py` sets ``HF_HUB_OFFLINE``.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import torch

from tilings import PROFILES, geometry, resolution_for
from tilings.tiled import TiledCanvas
from workers import MODELS, MeasureConfig, ModelHost
from workers.cohere2 import (
    BEGIN,
    BREAK,
    END,
    IMAGE,
    MODULE_MAP,
    TINY_IMAGE_TOKEN_ID,
    TINY_VOCAB,
    TokenLayout,
    check_scheme_fits,
    image_processor_for,
    scheme_from_checkpoint,
)
from workers.inputs import FORCED_TOKEN_IDS, PROMPT_IDS, synthetic_image
from workers.models import build_registered, count_parameters
from workers.registry import ARCHITECTURE_MAPS, detect_architecture, module_map_for
from workers.summary import stages_sum
from workers.timers import CpuClock, HookTimer

CPU = torch.device("cpu")
TINY = "tiny-cohere2-vision"
SCHEME = PROFILES["cohere2-vision"]
PATCH = TINY_IMAGE_TOKEN_ID
# Stand-ins without a tokenizer: begin, end and line break just below the image id.
BOI, EOI, LINE = PATCH - 3, PATCH - 2, PATCH - 1
TARGETS = [(1, 1), (1, 2), (2, 2)]


def build(seed: int = 0) -> torch.nn.Module:
    return build_registered(MODELS[TINY], device=CPU, dtype=torch.float32, attn_implementation=None, seed=seed)


def crops_of(rows: int, cols: int) -> int:
    return rows * cols + (rows * cols > 1)


def prepare(host: ModelHost, target: tuple[int, int], seed: int = 0):
    return host.inputs.process(synthetic_image(*resolution_for(target, SCHEME), seed)).to(CPU, torch.float32)


@pytest.fixture(scope="module")
def host() -> ModelHost:
    return ModelHost(TINY, device="cpu")


@pytest.fixture(scope="module")
def swept(host) -> dict[tuple[int, int], list]:
    return {target: host.measure(MeasureConfig(tiling_rows=target[0], tiling_cols=target[1], warmup=0, repeats=2,
                                               config_id=f"cohere2-{target}"))
            for target in TARGETS}


# ----- registry, configs, shapes -----------------------------------------------------------------


def test_only_the_tiny_model_is_registered_and_its_ids_fit_its_vocabulary():
    ours = {n: (m.architecture, m.profile, m.weights) for n, m in MODELS.items() if m.architecture == "cohere2-vision"}
    assert ours == {TINY: ("cohere2-vision", "cohere2-vision", "seeded-init")}
    config = MODELS[TINY].config()
    assert TokenLayout.from_config(config).ids == {IMAGE: PATCH, BEGIN: BOI, END: EOI, BREAK: LINE}
    assert max(PROMPT_IDS + FORCED_TOKEN_IDS) < BOI and PATCH < config.text_config.vocab_size == TINY_VOCAB


def test_tiny_weights_are_seeded_and_shaped_like_the_release():
    a, b, c = build(), build(), build(seed=1)
    for key in ("model.language_model.layers.0.self_attn.q_proj.weight", "model.vision_tower.encoder.layers.0.mlp.fc1.weight"):
        assert torch.equal(a.state_dict()[key], b.state_dict()[key])
        assert not torch.equal(a.state_dict()[key], c.state_dict()[key])
    assert not a.training and 100_000 < count_parameters(a) < 1_000_000
    assert a.lm_head.weight is a.model.language_model.embed_tokens.weight  # tied, as released
    # The projector takes 2x2 shuffled SigLIP features (4 x 32) and halves its SwiGLU width onto the text width.
    projector = a.model.multi_modal_projector
    assert projector.linear_1.weight.shape == (128, 4 * 32) and projector.linear_2.weight.shape == (64, 64)
    assert a.model.vision_tower.embeddings.position_embedding.weight.shape == (32 * 32, 32)  # 512 / 16 a side
    assert a.config.text_config.layer_types == ["sliding_attention", "full_attention"]


# ----- module map --------------------------------------------------------------------------------


def test_module_map_is_detected_and_resolves_to_the_right_modules(host):
    model = host.model
    assert detect_architecture(model) == "cohere2-vision"
    module_map, resolved = module_map_for(model)
    assert module_map == ARCHITECTURE_MAPS["cohere2-vision"] == MODULE_MAP
    assert resolved.vision == [model.model.vision_tower]
    assert resolved.projector == [model.model.multi_modal_projector]
    assert resolved.llm_blocks == list(model.model.language_model.layers) and len(resolved.llm_blocks) == 2
    assert resolved.lm_head == [model.lm_head]
    assert resolved.vision_blocks == list(model.model.vision_tower.encoder.layers)


def test_hooks_time_the_tower_then_the_projector_then_the_text(host):
    prepared = prepare(host, (2, 2))
    timer = HookTimer(CpuClock(), host.modules)
    with timer.attached(), torch.inference_mode():
        host.model(**prepared.forward, logits_to_keep=1)
    assert timer.log == [("vision", "start"), ("vision", "end"), ("projector", "start"), ("projector", "end"),
                         ("llm_prefill", "start"), ("llm_prefill", "end"), ("lm_head", "start"), ("lm_head", "end")]


# ----- inputs --------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [(1, 1), (2, 3)])
def test_inputs_lay_out_the_processor_text(host, target):
    crops = crops_of(*target)
    prepared = host.inputs.process(synthetic_image(*resolution_for(target, SCHEME), 0))
    span = [BOI, *([PATCH] * 256 + [LINE]) * crops, EOI]
    assert prepared.forward["input_ids"].tolist() == [[PROMPT_IDS[0], *span, *PROMPT_IDS[1:]]]
    assert set(prepared.forward) == {"input_ids", "pixel_values"} and set(prepared.vision) == {"pixel_values"}
    assert prepared.forward["pixel_values"].shape == (crops, 3, 512, 512)
    assert (prepared.crops, prepared.image_tokens, prepared.sequence_tokens) == (crops, 256 * crops, 257 * crops + 2)
    assert prepared.grids == target and prepared.source == "image-processor+layout"


def test_pixel_values_are_the_tiles_then_the_thumbnail(host):
    image = synthetic_image(*resolution_for((1, 2), SCHEME), 3)
    pixels = host.inputs.process(image).forward["pixel_values"]
    processor = host.inputs.image_processor
    whole = processor(images=[image], crop_to_patches=False, return_tensors="pt")["pixel_values"][0]
    # The image is exactly the 1x2 canvas: its left and right halves are the tiles; the thumbnail is all of it.
    left = processor(images=[image.crop((0, 0, 512, 512))], crop_to_patches=False, return_tensors="pt")
    assert torch.allclose(pixels[0], left["pixel_values"][0], atol=1e-5)
    assert torch.allclose(pixels[2], whole, atol=1e-5)
    assert not torch.allclose(pixels[0], pixels[1], atol=0.1)


def test_decode_steps_continue_the_positions(host):
    model, inputs = host.model, host.inputs
    prepared = prepare(host, (1, 2), 1)
    with torch.inference_mode():
        out = model(**prepared.forward, **inputs.prefill_kwargs(True))
        stepped = [out.logits[0, -1]]
        for step in range(3):
            out = inputs.decode_step(model, out, step, prepared.seq_len)
            stepped.append(out.logits[0, -1])
        forced = torch.tensor([list(inputs.decode_ids[:3])])
        whole = {**prepared.forward, "input_ids": torch.cat([prepared.forward["input_ids"], forced], 1)}
        expected = model(**whole).logits[0, -4:]
        blind = model(input_ids=whole["input_ids"]).logits[0, -4:]
    assert torch.allclose(torch.stack(stepped), expected, atol=1e-4)
    assert not torch.allclose(blind, expected, atol=1e-4)


def test_vision_only_runs_the_tower_and_the_projector(host):
    prepared = prepare(host, (2, 2))
    with torch.inference_mode():
        out = host.inputs.vision_only(host.model, prepared.vision)
    assert out.pooler_output.shape == (5, 256, host.model.config.text_config.hidden_size)
    assert out.last_hidden_state.shape == (5, 32 * 32, host.model.config.vision_config.hidden_size)


# ----- measuring -----------------------------------------------------------------------------------


def test_measured_counts_equal_the_prediction(swept):
    for (rows, cols), records in swept.items():
        height, width = resolution_for((rows, cols), SCHEME)
        predicted = geometry(height, width, SCHEME)
        for r in records:
            assert r.status == "ok", r.error
            assert (r.height, r.width, r.profile, r.model) == (height, width, "cohere2-vision", TINY)
            assert (r.crops, r.crops_actual) == (predicted.crops, crops_of(rows, cols))
            assert (r.image_tokens, r.image_tokens_actual) == (predicted.image_tokens, 256 * crops_of(rows, cols))
            assert r.sequence_tokens == predicted.sequence_tokens == 257 * crops_of(rows, cols) + 2
            assert r.seq_len == r.sequence_tokens + len(PROMPT_IDS)


def test_stages_are_positive_nest_in_the_total_and_cover_it(swept):
    for target, records in swept.items():
        for r in records:
            stages = (r.t_vision_ms, r.t_projector_ms, r.t_llm_prefill_ms, r.t_lm_head_ms)
            assert all(s > 0 for s in stages) and sum(stages) <= r.t_total_ms
        coverage = max(stages_sum(r) / r.t_total_ms for r in records)
        assert coverage >= 0.85, (target, coverage)  # 1,024 patches a crop: vision dominates from one crop
    small, large = swept[(1, 1)], swept[(2, 2)]
    for name in ("t_vision_ms", "t_llm_prefill_ms"):
        assert statistics.median(getattr(r, name) for r in large) > statistics.median(getattr(r, name) for r in small)


def test_a_processor_unlike_the_scheme_is_a_failed_record_with_both_numbers(host):
    original = host.inputs.image_processor
    host.inputs.image_processor = image_processor_for(TiledCanvas.from_preprocessor_config(
        {"image_processor_type": "Cohere2VisionImageProcessor", "max_patches": 2}))
    try:
        [failed] = host.measure(MeasureConfig(tiling_rows=2, tiling_cols=2, warmup=0, repeats=1))
    finally:
        host.inputs.image_processor = original
    # With 2 tiles at most, 1x1, 2x1 and 1x2 all shrink a 1024x1024 image by 0.5: the first (1x1) wins.
    assert failed.status == "failed" and failed.error_type == "GeometryMismatchError"
    assert "the processor produced 1 crops, 256 image tokens and 259" in failed.error
    assert "tilings predicts 5 crops, 1280 image tokens and 1287 sequence tokens" in failed.error


# ----- schemes the model takes or refuses --------------------------------------------------------


def test_check_fits_refuses_other_tiles_patches_tokens_and_schemes():
    config = MODELS[TINY].config()
    check_scheme_fits(config, SCHEME)
    raw = json.loads(config.to_json_string())
    check_scheme_fits(raw, SCHEME)
    base = {"order": "cohere2", "arithmetic": "float64", "tie": "first"}
    with pytest.raises(ValueError, match="uses 336 px tiles but the model's vision tower takes 512x512"):
        check_scheme_fits(raw, TiledCanvas(name="small", tile_size=336, patch_size=16, **base))
    with pytest.raises(ValueError, match="has patch_size 8 but the model's vision tower uses 16 px patches"):
        check_scheme_fits(config, TiledCanvas(name="p8", tile_size=512, patch_size=8, **base))
    with pytest.raises(ValueError, match="counts 64 tokens per tile but the model makes 256"):
        check_scheme_fits(raw, TiledCanvas(name="t64", tile_size=512, patch_size=16, tokens_per_tile=64, **base))
    for other in ("llama4", "internvl3"):
        with pytest.raises(ValueError, match=f"'{other}' is not a Cohere2-Vision tiled-canvas scheme"):
            check_scheme_fits(config, PROFILES[other])


# ----- checkpoints by path -----------------------------------------------------------------------


def _tokenizer():
    """A word-level tokenizer built here (no download) with Cohere2-Vision's image tokens at ids of its own choice
    (not the stand-ins), so the test tells the tokenizer's ids from the layout's."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = {IMAGE: PATCH, BEGIN: 1010, END: 1011, BREAK: 1012, "<PAD>": 1007}
    tokenizer = Tokenizer(models.WordLevel(vocab={f"w{i}": i for i in range(1000)} | specials, unk_token="w0"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="w0", pad_token="<PAD>",
        extra_special_tokens={"image_token": IMAGE, "boi_token": BEGIN, "eoi_token": END,
                              "img_line_break_token": BREAK})


@pytest.fixture(scope="module")
def saved(tmp_path_factory, host) -> Path:
    from transformers import Cohere2VisionProcessor

    root = tmp_path_factory.mktemp("cohere2")
    for name in ("image-processor", "full"):
        host.model.save_pretrained(root / name)
    image_processor_for(SCHEME).save_pretrained(root / "image-processor")
    Cohere2VisionProcessor(image_processor=image_processor_for(SCHEME), tokenizer=_tokenizer()).save_pretrained(
        root / "full")
    return root


def test_local_checkpoints_load_and_measure(saved):
    plain = ModelHost(str(saved / "image-processor"), device="cpu")
    assert (plain.source, plain.architecture, plain.profile, plain.inputs.processor) == (
        "pretrained", "cohere2-vision", SCHEME, None)
    [r] = plain.measure(MeasureConfig(tiling_rows=1, tiling_cols=2, warmup=0, repeats=1))
    assert r.status == "ok", r.error
    assert json.loads(r.extra)["inputs"] == "image-processor+layout" and (r.crops_actual, r.sequence_tokens) == (3, 773)
    full = ModelHost(str(saved / "full"), device="cpu")
    assert full.inputs.processor is not None and full.profile == SCHEME
    [r] = full.measure(MeasureConfig(tiling_rows=1, tiling_cols=2, warmup=0, repeats=1))
    assert r.status == "ok", r.error
    assert json.loads(r.extra)["inputs"] == "processor"
    assert (r.crops_actual, r.image_tokens_actual, r.sequence_tokens) == (3, 768, 773) and r.seq_len > 773
    ids = full.inputs.process(synthetic_image(r.height, r.width, 0)).forward["input_ids"][0].tolist()
    start = ids.index(1010)
    assert ids[start:start + 773] == [1010, *([PATCH] * 256 + [1012]) * 3, 1011]


def test_the_scheme_of_a_checkpoint_follows_its_image_processor():
    from transformers import Cohere2VisionImageProcessor

    config = MODELS[TINY].config()
    assert scheme_from_checkpoint(Cohere2VisionImageProcessor(), config) == SCHEME
    six = scheme_from_checkpoint(Cohere2VisionImageProcessor(max_patches=6), config)
    assert (six.max_tiles, six.tokens_per_tile, six.name) == (6, 256, "cohere2-vision-custom")
