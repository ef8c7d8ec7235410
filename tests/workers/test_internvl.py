"""The InternVL family (InternVL3): the tiny model measured on the CPU, the full-size shapes on meta, loading.

Every model is built from a config in code (no download): `tests/workers/conftest.py`
sets ``HF_HUB_OFFLINE``.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import torch

from tilings import PROFILES, geometry, resolution_for
from tilings.aspect import ClosestAspect
from workers import MODELS, MeasureConfig, ModelHost
from workers.inputs import FORCED_TOKEN_IDS, PROMPT_IDS, synthetic_image
from workers.internvl import (
    MAP,
    TINY_IDS,
    TINY_VOCAB,
    InternVLInputs,
    check_scheme_fits,
    internvl_image_processor,
    layout_from_config,
)
from workers.models import build_on_meta, build_registered, count_parameters, materialize_
from workers.registry import ARCHITECTURE_MAPS, detect_architecture, module_map_for
from workers.summary import stages_sum
from workers.timers import CpuClock, HookTimer

CPU = torch.device("cpu")
TINY = "tiny-internvl3"
SCHEME = PROFILES["internvl3"]
START, END, CONTEXT = TINY_IDS["image_start_token_id"], TINY_IDS["image_end_token_id"], TINY_IDS["image_token_id"]
# Grids measured: one tile (no thumbnail), then 2, 4, 6 and 12 tiles plus the thumbnail.
TARGETS = [(1, 1), (1, 2), (2, 2), (2, 3), (3, 4)]


def build(seed: int = 0) -> torch.nn.Module:
    return build_registered(MODELS[TINY], device=CPU, dtype=torch.float32, attn_implementation=None, seed=seed)


def crops_of(rows: int, cols: int) -> int:
    return rows * cols + (rows * cols > 1)


@pytest.fixture(scope="module")
def host() -> ModelHost:
    return ModelHost(TINY, device="cpu")


@pytest.fixture(scope="module")
def swept(host) -> dict[tuple[int, int], list]:
    return {target: host.measure(MeasureConfig(tiling_rows=target[0], tiling_cols=target[1], warmup=0, repeats=2,
                                               config_id=f"internvl3-{target}"))
            for target in TARGETS}


# ----- registry, configs, shapes -----------------------------------------------------------------


def test_registered_specs_name_their_architecture_profile_and_weights():
    got = {n: (MODELS[n].architecture, MODELS[n].profile, MODELS[n].weights) for n in (TINY, "internvl3-8b-arch")}
    assert got == {TINY: ("internvl3", "internvl3", "seeded-init"),
                   "internvl3-8b-arch": ("internvl3", "internvl3", "meta")}
    config = MODELS[TINY].config()
    layout = layout_from_config(config)
    # The special ids sit inside the tiny vocabulary, above the prompt and forced ids, in the released order.
    assert (layout.start, layout.end, layout.image, layout.tokens_per_tile) == (START, END, CONTEXT, 256)
    assert max(PROMPT_IDS + FORCED_TOKEN_IDS) < START < END < CONTEXT < config.text_config.vocab_size == TINY_VOCAB
    # The released 8B config names only the context token: <img> and </img> come right before it.
    full = layout_from_config(MODELS["internvl3-8b-arch"].config())
    assert (full.start, full.end, full.image, full.tokens_per_tile) == (151665, 151666, 151667, 256)


def test_tiny_weights_are_seeded():
    a, b, c = build(), build(), build(seed=1)
    for key in ("model.language_model.layers.0.self_attn.q_proj.weight",
                "model.vision_tower.encoder.layer.0.mlp.fc1.weight"):
        assert torch.equal(a.state_dict()[key], b.state_dict()[key])
        assert not torch.equal(a.state_dict()[key], c.state_dict()[key])
    assert not a.training and 100_000 < count_parameters(a) < 1_000_000
    assert a.lm_head.weight is not a.model.language_model.embed_tokens.weight  # untied, as the released 8B


# Published total: the safetensors parameter count of OpenGVLab/InternVL3-8B-hf (7.94B).
PUBLISHED_8B = 7.94e9


def test_full_size_architecture_builds_on_meta_with_the_published_shapes():
    model = build_on_meta(MODELS["internvl3-8b-arch"])
    assert all(p.device.type == "meta" for p in model.parameters()) and model.dtype == torch.bfloat16
    assert abs(count_parameters(model) / PUBLISHED_8B - 1) < 0.01
    text, vision = model.config.text_config, model.config.vision_config
    assert (text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads) == (28, 28, 4)
    layers = model.model.language_model.layers
    attn = layers[0].self_attn
    assert attn.q_proj.weight.shape == (3584, 3584) and attn.k_proj.weight.shape == (4 * 128, 3584)
    assert attn.q_proj.bias is not None  # Qwen2's qkv bias
    assert len(layers) == 28 and layers[-1].mlp.up_proj.weight.shape == (18944, 3584)
    tower = model.model.vision_tower
    assert len(tower.encoder.layer) == 24 and vision.hidden_size == 1024
    assert tower.embeddings.patch_embeddings.projection.weight.shape == (1024, 3, 14, 14)
    assert tower.embeddings.position_embeddings.shape == (1, 32 * 32 + 1, 1024)  # 448/14 patches a side, plus CLS
    assert tower.encoder.layer[0].attention.q_proj.bias is not None
    # The projector takes 2x2 pixel-shuffled features (4 x 1024) onto the text width.
    assert model.model.multi_modal_projector.linear_1.weight.shape == (3584, 4096)
    assert model.lm_head.weight.shape == (151674, 3584)
    assert model.lm_head.weight is not model.model.language_model.embed_tokens.weight
    # materialize_ recomputes only the rotary tables: those must be the only buffers.
    holders = {type(m).__name__ for m in model.modules() if list(m.buffers(recurse=False))}
    assert holders == {"Qwen2RotaryEmbedding"}


def test_materialize_gives_a_working_model():
    model = materialize_(build_on_meta(MODELS[TINY], dtype=torch.float32), CPU, seed=3).eval()
    reference = build()
    for key, buffer in reference.named_buffers():
        assert torch.equal(model.get_buffer(key), buffer), key
    assert 0.015 < model.model.language_model.layers[0].mlp.up_proj.weight.std().item() < 0.025
    inputs = InternVLInputs(image_processor=internvl_image_processor(SCHEME), layout=layout_from_config(model.config))
    prepared = inputs.process(synthetic_image(*resolution_for((1, 2), SCHEME), 0))
    with torch.inference_mode():
        assert torch.isfinite(model(**prepared.forward, logits_to_keep=1).logits).all()


# ----- module map --------------------------------------------------------------------------------


def test_module_map_is_detected_and_resolves_to_the_right_modules():
    model = build_on_meta(MODELS[TINY])
    assert detect_architecture(model) == "internvl3"
    module_map, resolved = module_map_for(model)
    assert module_map == ARCHITECTURE_MAPS["internvl3"] == MAP
    assert resolved.vision == [model.model.vision_tower]
    assert resolved.projector == [model.model.multi_modal_projector]
    assert resolved.llm_blocks == list(model.model.language_model.layers) and len(resolved.llm_blocks) == 2
    assert resolved.lm_head == [model.lm_head]
    assert resolved.vision_blocks == list(model.model.vision_tower.encoder.layer) and len(resolved.vision_blocks) == 2


def test_hooks_time_the_tower_then_the_projector_then_the_text(host):
    prepared = host.inputs.process(synthetic_image(*resolution_for((2, 2), SCHEME), 0))
    timer = HookTimer(CpuClock(), host.modules)
    with timer.attached(), torch.inference_mode():
        host.model(**prepared.forward, logits_to_keep=1)
    # The tower runs once on all tiles; the pixel shuffle sits between it and the projector.
    assert timer.log == [("vision", "start"), ("vision", "end"), ("projector", "start"), ("projector", "end"),
                         ("llm_prefill", "start"), ("llm_prefill", "end"), ("lm_head", "start"), ("lm_head", "end")]
    times = timer.read()
    assert times.calls == {"vision": 1, "projector": 1, "llm_prefill": 1, "lm_head": 1}


# ----- inputs --------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [(1, 1), (2, 3)])
def test_inputs_lay_out_the_image_span_as_the_processor_does(host, target):
    rows, cols = target
    height, width = resolution_for(target, SCHEME)
    prepared = host.inputs.process(synthetic_image(height, width, 0))
    crops = crops_of(rows, cols)
    span = [START] + [CONTEXT] * (256 * crops) + [END]
    assert prepared.forward["input_ids"].tolist() == [[PROMPT_IDS[0], *span, *PROMPT_IDS[1:]]]
    assert set(prepared.forward) == {"input_ids", "pixel_values"} and set(prepared.vision) == {"pixel_values"}
    assert prepared.forward["pixel_values"].shape == (crops, 3, 448, 448)
    assert (prepared.crops, prepared.image_tokens, prepared.sequence_tokens) == (crops, 256 * crops, 256 * crops + 2)
    assert prepared.seq_len == 256 * crops + 2 + len(PROMPT_IDS) and prepared.grids == target
    assert prepared.source == "image-processor+layout"


def test_pixel_values_are_the_tiles_then_the_thumbnail(host):
    image = synthetic_image(*resolution_for((1, 2), SCHEME), 3)
    prepared = host.inputs.process(image)
    processor = host.inputs.image_processor
    canvas = processor(images=[image], size={"height": 448, "width": 896}, crop_to_patches=False,
                       return_tensors="pt")["pixel_values"][0]
    whole = processor(images=[image], crop_to_patches=False, return_tensors="pt")["pixel_values"][0]
    pixels = prepared.forward["pixel_values"]
    # The tiles: the left and right halves of the image resized to the 1x2 canvas; then the thumbnail, the
    # whole image at 448 x 448.
    assert torch.allclose(pixels[0], canvas[:, :, :448], atol=1e-5)
    assert torch.allclose(pixels[1], canvas[:, :, 448:], atol=1e-5)
    assert torch.allclose(pixels[2], whole, atol=1e-5)
    assert not torch.allclose(pixels[0], pixels[1], atol=0.1)


def test_decode_steps_continue_the_positions(host):
    """Prefill plus forced decode steps through the cache give the logits of one forward over the whole text."""
    model, inputs = host.model, host.inputs
    prepared = inputs.process(synthetic_image(*resolution_for((1, 2), SCHEME), 1))
    with torch.inference_mode():
        out = model(**prepared.forward, **inputs.prefill_kwargs(True))
        stepped = [out.logits[0, -1]]
        for step in range(3):
            out = inputs.decode_step(model, out, step, prepared.seq_len)
            stepped.append(out.logits[0, -1])
        forced = torch.tensor([list(inputs.decode_ids[:3])])
        whole = {**prepared.forward, "input_ids": torch.cat([prepared.forward["input_ids"], forced], 1)}
        expected = model(**whole).logits[0, -4:]
        # The image features matter: the same ids without the pixels give other logits.
        blind = model(input_ids=whole["input_ids"]).logits[0, -4:]
    assert torch.allclose(torch.stack(stepped), expected, atol=1e-4)
    assert not torch.allclose(blind, expected, atol=1e-4)


def test_vision_only_runs_the_tower_the_shuffle_and_the_projector(host):
    prepared = host.inputs.process(synthetic_image(*resolution_for((2, 2), SCHEME), 0))
    with torch.inference_mode():
        out = host.inputs.vision_only(host.model, prepared.vision)
        embedded = host.model.model.get_placeholder_mask(
            prepared.forward["input_ids"], host.model.model.get_input_embeddings()(prepared.forward["input_ids"]),
            out.pooler_output)
    hidden = host.model.config.text_config.hidden_size
    assert out.pooler_output.shape == (5, 256, hidden)  # 4 tiles + thumbnail, 16x16 shuffled features each
    assert out.last_hidden_state.shape == (5, 32 * 32 + 1, host.model.config.vision_config.hidden_size)
    assert int(embedded[..., 0].sum()) == 5 * 256  # one placeholder per feature


# ----- measuring -----------------------------------------------------------------------------------


def test_measured_counts_equal_the_prediction(swept):
    for (rows, cols), records in swept.items():
        height, width = resolution_for((rows, cols), SCHEME)
        predicted = geometry(height, width, SCHEME)
        assert len(records) == 2
        for r in records:
            assert r.status == "ok", r.error
            assert (r.height, r.width, r.profile, r.model) == (height, width, "internvl3", TINY)
            assert (r.crops, r.crops_actual) == (predicted.crops, crops_of(rows, cols))
            assert (r.image_tokens, r.image_tokens_actual) == (predicted.image_tokens, 256 * crops_of(rows, cols))
            assert r.sequence_tokens == predicted.sequence_tokens == r.image_tokens_actual + 2
            assert r.seq_len == r.image_tokens_actual + 2 + len(PROMPT_IDS)
            extra = json.loads(r.extra)
            assert extra["architecture"] == "internvl3" and extra["inputs"] == "image-processor+layout"
            assert extra["prompt_tokens"] == len(PROMPT_IDS)


def covered(r) -> float:
    """The share of the forward the hooks time: tower, projector (siblings), LLM blocks and head."""
    return stages_sum(r) / r.t_total_ms


def test_stages_are_positive_nest_in_the_total_and_cover_it(swept):
    for target, records in swept.items():
        for r in records:
            for name in ("t_vision_ms", "t_projector_ms", "t_llm_prefill_ms", "t_lm_head_ms", "t_total_ms",
                         "t_vision_only_ms", "t_prefill_step_ms", "t_preprocess_ms"):
                assert getattr(r, name) > 0, (target, name)
            assert (r.vision_calls, r.projector_calls) == (1, 1)
            assert stages_sum(r) <= r.t_total_ms
        assert max(covered(r) for r in records) > 0.75, (target, [covered(r) for r in records])  # least disturbed
        # What the hooks miss is a fixed 2-5 ms of glue on this CPU (embedding, pixel shuffle, scatter, the
        # causal mask, hook overhead): from four tiles and the thumbnail on, the stages cover at least 90%.
        if crops_of(*target) >= 5:
            coverage = max(covered(r) for r in records)  # the least disturbed repeat: load only adds time
            assert coverage >= 0.9, (target, coverage)


def test_more_tiles_cost_more_time(swept):
    small, large = swept[(1, 1)], swept[(3, 4)]
    assert large[0].crops_actual == 13 * small[0].crops_actual
    for name in ("t_vision_ms", "t_llm_prefill_ms"):
        assert statistics.median(getattr(r, name) for r in large) > statistics.median(getattr(r, name) for r in small)


def test_decode_and_block_spans_through_the_host(host):
    [r] = host.measure(MeasureConfig(tiling_rows=1, tiling_cols=2, warmup=0, repeats=1, decode_tokens=2,
                                     block_spans=True))
    assert r.status == "ok", r.error
    assert r.t_ttft_ms >= r.t_prefill_step_ms > 0 and r.t_tpot_ms > 0
    assert len(r.t_llm_blocks_ms) == 2 and len(r.t_vision_blocks_ms) == 2


def test_size_that_gives_another_target_is_a_failed_record(host):
    [failed] = host.measure(MeasureConfig(tiling_rows=2, tiling_cols=3, height=672, width=672, repeats=1))
    assert failed.status == "failed" and failed.error_type == "GeometryMismatchError"
    assert "2x3 at 672x672" in failed.error and "gives tiling 2x2" in failed.error
    assert (failed.height, failed.width, failed.tiling_rows, failed.tiling_cols) == (672, 672, 2, 3)


def test_processor_unlike_the_scheme_is_a_failed_record_with_both_numbers(host):
    """An image processor allowing fewer tiles than the scheme must not give a row: the counts are the processor's."""
    from transformers import GotOcr2ImageProcessor

    original = host.inputs.image_processor
    host.inputs.image_processor = GotOcr2ImageProcessor(**{**SCHEME.processor_kwargs(), "max_patches": 6})
    try:
        [failed] = host.measure(MeasureConfig(tiling_rows=3, tiling_cols=4, warmup=0, repeats=1))
    finally:
        host.inputs.image_processor = original
    assert failed.status == "failed" and failed.error_type == "GeometryMismatchError"
    assert "tilings predicts 13 crops, 3328 image tokens and 3330 sequence tokens" in failed.error
    # At most 6 tiles, the closest ratio to 4:3 is 2x3: 6 tiles plus the thumbnail.
    assert "the processor produced 7 crops, 1792 image tokens and 1794 image sequence tokens" in failed.error


# ----- schemes the model takes or refuses --------------------------------------------------------


def test_check_fits_refuses_other_tiles_patches_and_schemes():
    config = MODELS[TINY].config()
    check_scheme_fits(config, SCHEME)
    raw = json.loads(config.to_json_string())  # a local checkpoint's config.json, as plain JSON
    check_scheme_fits(raw, SCHEME)
    with pytest.raises(ValueError, match="uses 336 px tiles but the model's vision tower takes 448x448"):
        check_scheme_fits(raw, ClosestAspect(name="small", tile_size=336))
    with pytest.raises(ValueError, match="uses patch_size 16 but the model's vision tower takes patch_size 14"):
        check_scheme_fits(config, ClosestAspect(name="p16", tile_size=448, patch_size=16))
    with pytest.raises(ValueError, match="counts 64 tokens per tile but the model makes 256"):
        check_scheme_fits(raw, ClosestAspect(name="t64", tokens_per_tile=64))
    for other in ("molmo2", "llava-onevision"):
        with pytest.raises(ValueError, match=f"'{other}' is not a closest-aspect tile scheme"):
            check_scheme_fits(config, PROFILES[other])


def test_host_refuses_a_scheme_the_model_cannot_take():
    with pytest.raises(ValueError, match="not a closest-aspect tile scheme"):
        ModelHost(TINY, device="cpu", profile="molmo2")
    with pytest.raises(ValueError, match="336 px tiles"):
        ModelHost(TINY, device="cpu", profile=ClosestAspect(name="small", tile_size=336))


# ----- checkpoints by path -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """The tiny model saved as real files: with its image processor config only, with the released kind of
    preprocessor config (crop_to_patches false, cropping forced by InternVLProcessor), and with a full processor."""
    root = tmp_path_factory.mktemp("internvl")
    for name in ("image-processor", "released", "full"):
        build().save_pretrained(root / name)
    internvl_image_processor(SCHEME).save_pretrained(root / "image-processor")
    released = internvl_image_processor(SCHEME)
    released.crop_to_patches = False
    released.save_pretrained(root / "released")
    config = root / "released" / "preprocessor_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "processor_class": "InternVLProcessor"}))
    _processor(internvl_image_processor(SCHEME)).save_pretrained(root / "full")
    return root


def _processor(image_processor):
    """A word-level tokenizer built here (no download) naming InternVL's image tokens at the tiny model's ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import InternVLProcessor, PreTrainedTokenizerFast
    from transformers.models.internvl.video_processing_internvl import InternVLVideoProcessor

    specials = {"<img>": START, "</img>": END, "<IMG_CONTEXT>": CONTEXT, "<video>": 1003, "<|endoftext|>": 1005,
                "<|im_end|>": 1006}
    tokenizer = Tokenizer(models.WordLevel(vocab={f"w{i}": i for i in range(1000)} | specials, unk_token="w0"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="w0", eos_token="<|im_end|>",
        extra_special_tokens={"start_image_token": "<img>", "end_image_token": "</img>",
                              "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"})
    return InternVLProcessor(image_processor=image_processor, tokenizer=fast, video_processor=InternVLVideoProcessor(),
                             image_seq_length=256)


@pytest.mark.parametrize("kind", ["image-processor", "released"])
def test_local_checkpoint_with_only_an_image_processor(saved, kind):
    path = str(saved / kind)
    host = ModelHost(path, device="cpu")
    assert (host.source, host.architecture) == ("pretrained", "internvl3")
    # The released configs store crop_to_patches false; InternVLProcessor crops anyway, and so does the scheme.
    assert host.profile == SCHEME and host.inputs.processor is None and host.inputs.crop_to_patches
    [r] = host.measure(MeasureConfig(tiling_rows=2, tiling_cols=2, warmup=0, repeats=1))
    assert r.status == "ok", r.error
    assert r.model == path and json.loads(r.extra)["inputs"] == "image-processor+layout"
    assert (r.crops_actual, r.image_tokens_actual) == (r.crops, r.image_tokens) == (5, 5 * 256)


def test_local_checkpoint_with_the_full_processor(saved):
    """With a tokenizer the checkpoint's own processor lays out the tokens; the counts must still agree."""
    host = ModelHost(str(saved / "full"), device="cpu")
    assert host.inputs.processor is not None and host.profile == SCHEME
    [r] = host.measure(MeasureConfig(tiling_rows=1, tiling_cols=2, warmup=0, repeats=1))
    assert r.status == "ok", r.error
    assert json.loads(r.extra)["inputs"] == "processor"
    assert r.image_tokens_actual == r.image_tokens == 3 * 256 and r.seq_len > r.sequence_tokens
    prepared = host.inputs.process(synthetic_image(r.height, r.width, 0))
    ids = prepared.forward["input_ids"][0].tolist()
    start = ids.index(START)
    assert ids[start:start + 3 * 256 + 2] == [START] + [CONTEXT] * (3 * 256) + [END]
    assert prepared.sequence_tokens == 3 * 256 + 2 and prepared.grids == (1, 2)
    assert set(prepared.forward) == {"input_ids", "pixel_values"}  # no attention mask: one unpadded sequence
