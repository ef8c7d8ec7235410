"""The Llama 4 family: the tiny model measured on the CPU, the token layout, the forward fix, loading, and why there is
no full-size preset.

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
from workers.inputs import FORCED_TOKEN_IDS, PROMPT_IDS, synthetic_image
from workers.llama4 import (
    MODULE_MAP,
    OFFSETS,
    TINY_BOI,
    TINY_VOCAB,
    TokenLayout,
    check_scheme_fits,
    fix_forward_output,
    image_processor_for,
    inputs_for,
)
from workers.models import build_on_meta, build_registered, count_parameters
from workers.registry import ARCHITECTURE_MAPS, detect_architecture, module_map_for
from workers.summary import stages_sum
from workers.timers import CpuClock, HookTimer

CPU = torch.device("cpu")
TINY = "tiny-llama4"
SCHEME = PROFILES["llama4"]
START, END, X, Y, IMAGE, PATCH = (TINY_BOI, TINY_BOI + 1, TINY_BOI + 4, TINY_BOI + 5, TINY_BOI + 10, TINY_BOI + 12)
# One tile (no global tile), then 2 and 4 tiles plus the global tile.
TARGETS = [(1, 1), (1, 2), (2, 2)]


def build(seed: int = 0) -> torch.nn.Module:
    return build_registered(MODELS[TINY], device=CPU, dtype=torch.float32, attn_implementation=None, seed=seed)


def crops_of(rows: int, cols: int) -> int:
    return rows * cols + (rows * cols > 1)


def prepare(host: ModelHost, target: tuple[int, int], seed: int = 0):
    """The inputs of a target, floating tensors in the model's float32 (the processor returns bf16 pixels; the host
    converts them the same way)."""
    return host.inputs.process(synthetic_image(*resolution_for(target, SCHEME), seed)).to(CPU, torch.float32)


@pytest.fixture(scope="module")
def host() -> ModelHost:
    return ModelHost(TINY, device="cpu")


@pytest.fixture(scope="module")
def swept(host) -> dict[tuple[int, int], list]:
    return {target: host.measure(MeasureConfig(tiling_rows=target[0], tiling_cols=target[1], warmup=0, repeats=2,
                                               config_id=f"llama4-{target}"))
            for target in TARGETS}


# ----- registry, configs, shapes -----------------------------------------------------------------


def test_only_the_tiny_model_is_registered():
    ours = {n: (m.architecture, m.profile, m.weights) for n, m in MODELS.items() if m.architecture == "llama4"}
    assert ours == {TINY: ("llama4", "llama4", "seeded-init")}
    config = MODELS[TINY].config()
    layout = TokenLayout.from_config(config)
    # The released tokenizer's order from <|image_start|>: end +1, separators +4/+5, <|image|> +10, <|patch|> +12.
    assert layout.ids == {"<|image_start|>": START, "<|image_end|>": END, "<|tile_x_separator|>": X,
                          "<|tile_y_separator|>": Y, "<|image|>": IMAGE, "<|patch|>": PATCH}
    assert max(PROMPT_IDS + FORCED_TOKEN_IDS) < START and PATCH < config.text_config.vocab_size == TINY_VOCAB
    assert OFFSETS["<|patch|>"] == 200092 - 200080  # Llama4Config's image_token_index - boi_token_index


# meta-llama/Llama-4-Scout-17B-16E's config.json numbers (the smallest Llama 4).
SCOUT = {
    "vision_config": {"hidden_size": 1408, "image_size": 336, "intermediate_size": 5632, "num_attention_heads": 16,
                      "num_hidden_layers": 34, "patch_size": 14, "pixel_shuffle_ratio": 0.5,
                      "projector_input_dim": 4096, "projector_output_dim": 4096, "vision_output_dim": 4096},
    "text_config": {"vocab_size": 202048, "hidden_size": 5120, "intermediate_size": 8192,
                    "intermediate_size_mlp": 16384, "num_hidden_layers": 48, "num_attention_heads": 40,
                    "num_key_value_heads": 8, "head_dim": 128, "num_local_experts": 16, "num_experts_per_tok": 1,
                    "interleave_moe_layer_step": 1},
}


def test_scout_does_not_fit_one_80_gb_gpu_in_bf16():
    """Why there is no llama4 -arch preset: Scout's shapes, built on meta, hold 1.086e11 parameters, 217 GB in bf16."""
    from transformers import Llama4Config

    scout = type(MODELS[TINY])(name="scout", description="", architecture="llama4", profile="llama4",
                       config=lambda: Llama4Config(**SCOUT), weights="meta")
    model = build_on_meta(scout)
    parameters = count_parameters(model)
    assert 1.08e11 < parameters < 1.10e11  # Meta quotes 109B total (17B active)
    assert parameters * 2 > 80e9 * 2.5
    experts = model.language_model.model.layers[0].feed_forward.experts
    assert experts.gate_up_proj.shape == (16, 5120, 2 * 8192)


def test_tiny_weights_are_seeded_and_the_text_tower_has_experts_and_both_attentions():
    a, b, c = build(), build(), build(seed=1)
    for key in ("language_model.model.layers.0.self_attn.q_proj.weight", "vision_model.model.layers.0.mlp.fc1.weight"):
        assert torch.equal(a.state_dict()[key], b.state_dict()[key])
        assert not torch.equal(a.state_dict()[key], c.state_dict()[key])
    assert not a.training and 100_000 < count_parameters(a) < 1_000_000
    text = a.config.text_config
    assert text.moe_layers == [0, 1] and text.layer_types == ["chunked_attention", "full_attention"]
    assert text.no_rope_layers == [1, 0]  # layer 1 without RoPE, as every fourth released layer
    assert a.language_model.model.layers[0].feed_forward.experts.gate_up_proj.shape[0] == 4


def test_the_forward_needs_the_output_fix():
    """transformers 5.24's forward reads ``image_outputs`` from the text model's output, which has none; once this
    test fails, transformers returns without the fix and `fix_forward_output` can go."""
    model = build()
    processor = image_processor_for(SCHEME)
    pixels = processor(images=[synthetic_image(336, 336, 0)], return_tensors="pt")["pixel_values"].float()
    ids = torch.tensor([[PROMPT_IDS[0], START, IMAGE, *[PATCH] * 144, END]])
    with torch.inference_mode():
        with pytest.raises(AttributeError, match="image_outputs"):
            model(input_ids=ids, pixel_values=pixels, logits_to_keep=1)
        out = fix_forward_output(model)(input_ids=ids, pixel_values=pixels, logits_to_keep=1)
        fix_forward_output(model)  # registered once
    assert out.logits.shape == (1, 1, TINY_VOCAB) and torch.isfinite(out.logits).all()
    assert len(model.language_model._forward_hooks) == 1


# ----- module map --------------------------------------------------------------------------------


def test_module_map_is_detected_and_resolves_to_the_right_modules(host):
    model = host.model
    assert detect_architecture(model) == "llama4"
    module_map, resolved = module_map_for(model)
    assert module_map == ARCHITECTURE_MAPS["llama4"] == MODULE_MAP
    assert resolved.vision == [model.vision_model]
    assert resolved.projector == [model.multi_modal_projector]
    assert resolved.llm_blocks == list(model.language_model.model.layers) and len(resolved.llm_blocks) == 2
    assert resolved.lm_head == [model.language_model.lm_head]
    assert resolved.vision_blocks == list(model.vision_model.model.layers)
    # The pixel shuffle and its MLP are inside the vision stage; the projector is the one linear layer after it.
    assert model.vision_model.vision_adapter in list(model.vision_model.modules())
    assert [type(m).__name__ for m in model.multi_modal_projector.children()] == ["Linear"]


def test_hooks_time_the_tower_then_the_projector_then_the_text(host):
    prepared = prepare(host, (2, 2))
    timer = HookTimer(CpuClock(), host.modules)
    with timer.attached(), torch.inference_mode():
        host.model(**prepared.forward, logits_to_keep=1)
    assert timer.log == [("vision", "start"), ("vision", "end"), ("projector", "start"), ("projector", "end"),
                         ("llm_prefill", "start"), ("llm_prefill", "end"), ("lm_head", "start"), ("lm_head", "end")]
    assert timer.read().calls == {"vision": 1, "projector": 1, "llm_prefill": 1, "lm_head": 1}


# ----- inputs --------------------------------------------------------------------------------------


def test_inputs_lay_out_the_processor_text(host):
    # 1x2: the two tiles with an x separator between them, a y separator closing the row, then <|image|> and the
    # global tile's 144; one tile: no separators, no global tile.
    prepared = host.inputs.process(synthetic_image(*resolution_for((1, 2), SCHEME), 0))
    span = [START, *[PATCH] * 144, X, *[PATCH] * 144, Y, IMAGE, *[PATCH] * 144, END]
    assert prepared.forward["input_ids"].tolist() == [[PROMPT_IDS[0], *span, *PROMPT_IDS[1:]]]
    assert prepared.forward["pixel_values"].shape == (3, 3, 336, 336)
    assert (prepared.crops, prepared.image_tokens, prepared.sequence_tokens, prepared.grids) == (3, 432, 437, (1, 2))
    one = host.inputs.process(synthetic_image(336, 336, 0))
    assert one.forward["input_ids"].tolist() == [[PROMPT_IDS[0], START, IMAGE, *[PATCH] * 144, END, *PROMPT_IDS[1:]]]
    assert (one.crops, one.sequence_tokens, one.source) == (1, 147, "image-processor+layout")
    # 2x3: two rows of three tiles, so 2 x separators per row and 2 y separators.
    ids = host.inputs.process(synthetic_image(*resolution_for((2, 3), SCHEME), 0)).forward["input_ids"][0]
    assert [int((ids == t).sum()) for t in (X, Y, IMAGE, PATCH)] == [4, 2, 1, 7 * 144]


def test_decode_steps_continue_the_positions(host):
    """Prefill plus forced decode steps through the cache give the logits of one forward over the whole text."""
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
        blind = model(input_ids=whole["input_ids"]).logits[0, -4:]  # the same ids without the pixels
    assert torch.allclose(torch.stack(stepped), expected, atol=1e-4)
    assert not torch.allclose(blind, expected, atol=1e-4)


def test_vision_only_gives_one_text_width_feature_per_patch_token(host):
    prepared = prepare(host, (2, 2))
    with torch.inference_mode():
        out = host.inputs.vision_only(host.model, prepared.vision)
    assert out.shape == (5 * 144, host.model.config.text_config.hidden_size)
    assert int((prepared.forward["input_ids"] == PATCH).sum()) == out.shape[0]


# ----- measuring -----------------------------------------------------------------------------------


def test_measured_counts_equal_the_prediction(swept):
    for (rows, cols), records in swept.items():
        height, width = resolution_for((rows, cols), SCHEME)
        predicted = geometry(height, width, SCHEME)
        assert len(records) == 2
        for r in records:
            assert r.status == "ok", r.error
            assert (r.height, r.width, r.profile, r.model) == (height, width, "llama4", TINY)
            assert (r.crops, r.crops_actual) == (predicted.crops, crops_of(rows, cols))
            assert (r.image_tokens, r.image_tokens_actual) == (predicted.image_tokens, 144 * crops_of(rows, cols))
            assert r.sequence_tokens == predicted.sequence_tokens
            assert r.seq_len == r.sequence_tokens + len(PROMPT_IDS)
            assert json.loads(r.extra)["architecture"] == "llama4"


def covered(r) -> float:
    return stages_sum(r) / r.t_total_ms


def test_stages_are_positive_nest_in_the_total_and_cover_it(swept):
    for target, records in swept.items():
        for r in records:
            for name in ("t_vision_ms", "t_projector_ms", "t_llm_prefill_ms", "t_lm_head_ms", "t_vision_only_ms"):
                assert getattr(r, name) > 0, (target, name)
            assert stages_sum(r) <= r.t_total_ms
        # At one tile ~16% of the tiny forward is glue (embedding, masks, scatter); from 3 tiles on under 15%.
        if crops_of(*target) >= 3:
            coverage = max(covered(r) for r in records)
            assert coverage >= 0.85, (target, coverage)
    small, large = swept[(1, 1)], swept[(2, 2)]
    for name in ("t_vision_ms", "t_llm_prefill_ms"):
        assert statistics.median(getattr(r, name) for r in large) > statistics.median(getattr(r, name) for r in small)


def test_a_size_or_processor_unlike_the_scheme_is_a_failed_record(host):
    [failed] = host.measure(MeasureConfig(tiling_rows=1, tiling_cols=2, height=336, width=336, repeats=1))
    assert failed.status == "failed" and failed.error_type == "GeometryMismatchError"
    assert "1x2 at 336x336" in failed.error and "gives tiling 1x1" in failed.error
    original = host.inputs.image_processor
    host.inputs.image_processor = image_processor_for(TiledCanvas(name="few", max_tiles=2))
    try:
        [failed] = host.measure(MeasureConfig(tiling_rows=2, tiling_cols=2, warmup=0, repeats=1))
    finally:
        host.inputs.image_processor = original
    # With 2 tiles at most, 1x1, 1x2 and 2x1 all shrink a 672x672 image by 0.5: the smallest area, 1x1, wins.
    assert failed.status == "failed" and failed.error_type == "GeometryMismatchError"
    assert "the processor produced 1 crops, 144 image tokens and 147" in failed.error
    assert "tilings predicts 5 crops, 720 image tokens and 727 sequence tokens" in failed.error


# ----- schemes the model takes or refuses --------------------------------------------------------


def test_check_fits_refuses_other_tiles_patches_tokens_and_schemes():
    config = MODELS[TINY].config()
    check_scheme_fits(config, SCHEME)
    raw = json.loads(config.to_json_string())  # a local checkpoint's config.json, as plain JSON
    check_scheme_fits(raw, SCHEME)
    with pytest.raises(ValueError, match="uses 448 px tiles but the model's vision tower takes 336x336"):
        check_scheme_fits(raw, TiledCanvas(name="big", tile_size=448))
    with pytest.raises(ValueError, match="has patch_size 16 but the model's vision tower uses 14 px patches"):
        check_scheme_fits(config, TiledCanvas(name="p16", tile_size=336, patch_size=16))
    with pytest.raises(ValueError, match="counts 576 tokens per tile but the model makes 144"):
        check_scheme_fits(raw, TiledCanvas(name="t576", tokens_per_tile=576))
    for other in ("cohere2-vision", "internvl3"):
        with pytest.raises(ValueError, match=f"'{other}' is not a Llama 4 tiled-canvas scheme"):
            check_scheme_fits(config, PROFILES[other])
    with pytest.raises(ValueError, match="not a Llama 4 tiled-canvas scheme"):
        ModelHost(TINY, device="cpu", profile="cohere2-vision")


# ----- checkpoints by path -----------------------------------------------------------------------


def _tokenizer():
    """A word-level tokenizer built here (no download) with Llama 4's image tokens at the tiny model's ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = {"<|image_start|>": START, "<|image_end|>": END, "<|tile_x_separator|>": X,
                "<|tile_y_separator|>": Y, "<|image|>": IMAGE, "<|patch|>": PATCH, "<|eot|>": 1021}
    tokenizer = Tokenizer(models.WordLevel(vocab={f"w{i}": i for i in range(1000)} | specials, unk_token="w0"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="w0", eos_token="<|eot|>",
                                   extra_special_tokens=list(specials)[:6])


@pytest.fixture(scope="module")
def saved(tmp_path_factory, host) -> Path:
    """The tiny model saved with its image processor only, and with the full Llama4Processor."""
    from transformers import Llama4Processor

    root = tmp_path_factory.mktemp("llama4")
    for name in ("image-processor", "full"):
        host.model.save_pretrained(root / name)
    image_processor_for(SCHEME).save_pretrained(root / "image-processor")
    Llama4Processor(image_processor=image_processor_for(SCHEME), tokenizer=_tokenizer()).save_pretrained(root / "full")
    return root


def test_local_checkpoints_load_and_measure(saved):
    plain = ModelHost(str(saved / "image-processor"), device="cpu")
    assert (plain.source, plain.architecture, plain.profile, plain.inputs.processor) == (
        "pretrained", "llama4", SCHEME, None)
    [r] = plain.measure(MeasureConfig(tiling_rows=1, tiling_cols=2, warmup=0, repeats=1))
    assert r.status == "ok", r.error
    assert json.loads(r.extra)["inputs"] == "image-processor+layout" and (r.crops_actual, r.sequence_tokens) == (3, 437)
    full = ModelHost(str(saved / "full"), device="cpu")
    assert full.inputs.processor is not None and full.profile == SCHEME
    [r] = full.measure(MeasureConfig(tiling_rows=1, tiling_cols=2, warmup=0, repeats=1))
    assert r.status == "ok", r.error
    assert json.loads(r.extra)["inputs"] == "processor"
    assert (r.crops_actual, r.image_tokens_actual, r.sequence_tokens) == (3, 432, 437) and r.seq_len > 437
    prepared = full.inputs.process(synthetic_image(r.height, r.width, 0))
    ids = prepared.forward["input_ids"][0].tolist()
    start = ids.index(START)
    assert ids[start:start + 437] == [START, *[PATCH] * 144, X, *[PATCH] * 144, Y, IMAGE, *[PATCH] * 144, END]
    assert prepared.grids == (1, 2)


def test_inputs_for_a_checkpoint_with_other_settings_follow_its_processor():
    """A checkpoint whose image processor allows 4 tiles: the scheme read from it and its processor agree."""
    from workers.llama4 import scheme_from_checkpoint

    model = build()
    small = scheme_from_checkpoint(image_processor_for(TiledCanvas(name="x", max_tiles=4)), model.config)
    assert (small.max_tiles, small.tokens_per_tile, small.name) == (4, 144, "llama4-custom")
    prepared = inputs_for(model, small).process(synthetic_image(336, 5 * 336, 0))
    assert prepared.grids == small.geometry(336, 5 * 336).tiling == (1, 4)
