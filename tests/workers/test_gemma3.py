"""The Gemma 3 family: the tiny model measured on the CPU, the full-size shapes on meta, inputs, loading.

Every model is built from a config in code (no download): `tests/workers/conftest.py`
sets ``HF_HUB_OFFLINE``. The tiny tower runs 4096 patches a view (the released geometry),
about 0.1 s a view: the tests measure few configs, with few repeats.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tilings import PROFILES, geometry, resolution_for
from tilings.panscan import PanScan
from workers import MODELS, MeasureConfig, ModelHost
from workers.gemma3 import (
    MAP,
    STAND_IN_BOS,
    STAND_IN_NEWLINES,
    STAND_IN_WORD,
    TINY_IDS,
    TINY_VOCAB,
    check_scheme_fits,
    gemma3_image_processor,
    ids_from_config,
    inputs_for,
    tower_geometry,
)
from workers.inputs import FORCED_TOKEN_IDS, synthetic_image
from workers.models import build_on_meta, build_registered, count_parameters, materialize_
from workers.registry import ARCHITECTURE_MAPS, detect_architecture, module_map_for
from workers.summary import stages_sum
from workers.timers import CpuClock, HookTimer

CPU = torch.device("cpu")
TINY = "tiny-gemma3"
SCHEME = PROFILES["gemma3"]
BOI, EOI, SOFT = TINY_IDS["boi_token_index"], TINY_IDS["eoi_token_index"], TINY_IDS["image_token_index"]
# "Describe this image in detail." in the stand-in tokenizer: one token per word.
PROMPT_WORDS = 5


def build(seed: int = 0) -> torch.nn.Module:
    return build_registered(MODELS[TINY], device=CPU, dtype=torch.float32, attn_implementation=None, seed=seed)


def view() -> list[int]:
    """One view as Gemma3Processor writes it: "\\n\\n<start_of_image>" + 256 soft tokens + "<end_of_image>\\n\\n"."""
    return [STAND_IN_NEWLINES, BOI] + [SOFT] * 256 + [EOI, STAND_IN_NEWLINES]


@pytest.fixture(scope="module")
def host() -> ModelHost:
    torch.set_num_threads(1)
    return ModelHost(TINY, device="cpu")


@pytest.fixture(scope="module")
def swept(host) -> dict[tuple[int, int], list]:
    """A column of two crops (three views), two repeats."""
    return {(2, 1): host.measure(MeasureConfig(tiling_rows=2, tiling_cols=1, warmup=0, repeats=2, config_id="g-2x1"))}


# ----- registry, configs, shapes -----------------------------------------------------------------


def test_registered_specs_name_their_architecture_profile_and_weights():
    got = {n: (MODELS[n].architecture, MODELS[n].profile, MODELS[n].weights) for n in (TINY, "gemma3-4b-arch")}
    assert got == {TINY: ("gemma3", "gemma3", "seeded-init"), "gemma3-4b-arch": ("gemma3", "gemma3", "meta")}
    config = MODELS[TINY].config()
    ids = ids_from_config(config)
    assert (ids.boi, ids.eoi, ids.image) == (BOI, EOI, SOFT)
    assert max(FORCED_TOKEN_IDS + (STAND_IN_BOS, STAND_IN_WORD, STAND_IN_NEWLINES)) < BOI
    assert SOFT < config.text_config.vocab_size == TINY_VOCAB
    # The processor's tokens per view are what the tiny tower makes: 896/14 = 64 patches a side, pooled 4x4 to 16x16.
    tower = tower_geometry(config)
    assert (tower.view_size, tower.patch_size, tower.tokens_per_view) == (896, 14, 256) == (
        SCHEME.view_size, SCHEME.patch_size, SCHEME.tokens_per_view)
    full = ids_from_config(MODELS["gemma3-4b-arch"].config())
    assert (full.boi, full.eoi, full.image) == (255_999, 256_000, 262_144)


def test_tiny_weights_are_seeded_and_the_head_is_tied():
    a, b, c = build(), build(), build(seed=1)
    for key in ("model.language_model.layers.0.self_attn.q_proj.weight",
                "model.vision_tower.encoder.layers.0.mlp.fc1.weight"):
        assert torch.equal(a.state_dict()[key], b.state_dict()[key])
        assert not torch.equal(a.state_dict()[key], c.state_dict()[key])
    assert not a.training and 100_000 < count_parameters(a) < 1_000_000
    assert a.lm_head.weight is a.model.language_model.embed_tokens.weight  # tied, as released
    assert a.model.multi_modal_projector.kernel_size == 4  # 64 patches a side -> 16 tokens a side


# Published total: google/gemma-3-4b-it's safetensors parameter count (4.30B).
PUBLISHED_4B = 4.30e9


def test_full_size_architecture_builds_on_meta_with_the_published_shapes():
    model = build_on_meta(MODELS["gemma3-4b-arch"])
    assert all(p.device.type == "meta" for p in model.parameters()) and model.dtype == torch.bfloat16
    assert abs(count_parameters(model) / PUBLISHED_4B - 1) < 0.005
    text = model.config.text_config
    assert (text.vocab_size, text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads,
            text.head_dim, text.sliding_window) == (262_208, 34, 8, 4, 256, 1024)
    assert text.layer_types.count("full_attention") == 5  # one global layer in six: layers 6, 12, ..., 30
    assert text.rope_parameters["full_attention"]["factor"] == 8.0
    layers = model.model.language_model.layers
    attn = layers[0].self_attn
    assert attn.q_proj.weight.shape == (8 * 256, 2560) and attn.k_proj.weight.shape == (4 * 256, 2560)
    assert len(layers) == 34 and layers[-1].mlp.up_proj.weight.shape == (10240, 2560)
    tower = model.model.vision_tower
    assert len(tower.encoder.layers) == 27
    assert tower.embeddings.patch_embedding.weight.shape == (1152, 3, 14, 14)
    assert tower.embeddings.position_embedding.weight.shape == (64 * 64, 1152)  # 896/14 patches a side, no CLS
    projector = model.model.multi_modal_projector
    assert projector.mm_input_projection_weight.shape == (1152, 2560) and projector.kernel_size == 4
    assert model.lm_head.weight is model.model.language_model.embed_tokens.weight
    # materialize_ recomputes these buffers (rotary tables, the embedding scale, SigLIP's position ids) and no other.
    holders = {type(m).__name__ for m in model.modules() if list(m.buffers(recurse=False))}
    assert holders == {"Gemma3RotaryEmbedding", "Gemma3TextScaledWordEmbedding", "SiglipVisionEmbeddings"}


def test_materialize_recomputes_the_buffers_and_gives_a_working_model():
    model = materialize_(build_on_meta(MODELS[TINY], dtype=torch.float32), CPU, seed=3).eval()
    reference = build()
    for key, buffer in reference.named_buffers():
        assert torch.equal(model.get_buffer(key), buffer), key
    assert model.get_buffer("model.language_model.embed_tokens.embed_scale") == 8.0  # sqrt(64)
    assert 0.015 < model.model.language_model.layers[0].mlp.up_proj.weight.std().item() < 0.025
    prepared = inputs_for(model.config, SCHEME).process(synthetic_image(*resolution_for((1, 1), SCHEME), 0))
    with torch.inference_mode():
        assert torch.isfinite(model(**prepared.forward, logits_to_keep=1).logits).all()


# ----- module map --------------------------------------------------------------------------------


def test_module_map_is_detected_and_resolves_to_the_right_modules():
    model = build_on_meta(MODELS[TINY])
    # LLaVA-OneVision's map fits too (every path of it exists here): the config's model_type decides.
    assert detect_architecture(model) == "gemma3"
    module_map, resolved = module_map_for(model)
    assert module_map == ARCHITECTURE_MAPS["gemma3"] == MAP
    assert resolved.vision == [model.model.vision_tower]
    assert resolved.projector == [model.model.multi_modal_projector]
    assert resolved.llm_blocks == list(model.model.language_model.layers) and len(resolved.llm_blocks) == 2
    assert resolved.lm_head == [model.lm_head]
    assert resolved.vision_blocks == list(model.model.vision_tower.encoder.layers)


def test_hooks_time_the_tower_then_the_projector_then_the_text(host):
    prepared = host.inputs.process(synthetic_image(*resolution_for((1, 1), SCHEME), 0))
    timer = HookTimer(CpuClock(), host.modules)
    with timer.attached(), torch.inference_mode():
        host.model(**prepared.forward, logits_to_keep=1)
    assert timer.log == [("vision", "start"), ("vision", "end"), ("projector", "start"), ("projector", "end"),
                         ("llm_prefill", "start"), ("llm_prefill", "end"), ("lm_head", "start"), ("lm_head", "end")]
    assert timer.read().calls == {"vision": 1, "projector": 1, "llm_prefill": 1, "lm_head": 1}


# ----- inputs --------------------------------------------------------------------------------------


def test_inputs_lay_out_the_views_and_the_crop_sentence_as_the_processor_does(host):
    one = host.inputs.process(synthetic_image(*resolution_for((1, 1), SCHEME), 0))
    words = [STAND_IN_WORD] * PROMPT_WORDS
    assert one.forward["input_ids"].tolist() == [[STAND_IN_BOS, *view(), *words]]
    three = host.inputs.process(synthetic_image(*resolution_for((1, 2), SCHEME), 0))
    # "Here is the original image " + view + " and here are some crops to help you see better " + 2 views.
    sentence = [STAND_IN_BOS] + [STAND_IN_WORD] * 5 + view() + [STAND_IN_WORD] * 10 + view() + view()
    ids = three.forward["input_ids"]
    assert ids.tolist() == [sentence + words]
    assert set(three.forward) == {"input_ids", "pixel_values", "token_type_ids"}
    assert torch.equal(three.forward["token_type_ids"], (ids == SOFT).long())  # the bidirectional image spans
    assert three.forward["pixel_values"].shape == (3, 3, 896, 896) and set(three.vision) == {"pixel_values"}
    assert (three.crops, three.image_tokens, three.sequence_tokens) == (3, 3 * 256, 3 * 258)
    assert three.seq_len == len(sentence) + PROMPT_WORDS and three.grids == (1, 2)
    assert three.source == one.source == "image-processor+layout"
    assert host.inputs.process(synthetic_image(*resolution_for((3, 1), SCHEME), 0)).grids == (3, 1)


def test_pixel_values_are_the_whole_image_then_the_crops(host):
    image = synthetic_image(*resolution_for((1, 2), SCHEME), 3)  # 896 x 1792: two crops of exactly 896 x 896
    pixels = host.inputs.process(image).forward["pixel_values"]
    plain = gemma3_image_processor(SCHEME)

    def alone(picture):
        return plain(images=[picture], do_pan_and_scan=False, return_tensors="pt")["pixel_values"][0]

    assert torch.allclose(pixels[0], alone(image), atol=1e-5)
    assert torch.allclose(pixels[1], alone(image.crop((0, 0, 896, 896))), atol=1e-5)
    assert torch.allclose(pixels[2], alone(image.crop((896, 0, 1792, 896))), atol=1e-5)
    assert not torch.allclose(pixels[1], pixels[2], atol=0.1)


def test_decode_steps_continue_the_positions(host):
    """Prefill plus forced decode steps through the cache give the logits of one forward over the whole text."""
    model, inputs = host.model, host.inputs
    prepared = inputs.process(synthetic_image(*resolution_for((1, 1), SCHEME), 1))
    with torch.inference_mode():
        out = model(**prepared.forward, **inputs.prefill_kwargs(True))
        stepped = [out.logits[0, -1]]
        for step in range(3):
            out = inputs.decode_step(model, out, step, prepared.seq_len)
            stepped.append(out.logits[0, -1])
        forced = torch.tensor([list(inputs.decode_ids[:3])])
        whole = {**prepared.forward, "input_ids": torch.cat([prepared.forward["input_ids"], forced], 1),
                 "token_type_ids": torch.cat([prepared.forward["token_type_ids"], torch.zeros_like(forced)], 1)}
        expected = model(**whole).logits[0, -4:]
    assert torch.allclose(torch.stack(stepped), expected, atol=1e-4)


def test_vision_only_runs_the_tower_and_the_pooling_projector(host):
    prepared = host.inputs.process(synthetic_image(*resolution_for((1, 2), SCHEME), 0))
    with torch.inference_mode():
        out = host.inputs.vision_only(host.model, prepared.vision)
        ids = prepared.forward["input_ids"]
        embedded = host.model.model.get_placeholder_mask(ids, host.model.model.get_input_embeddings()(ids),
                                                         out.pooler_output)
    config = host.model.config
    assert out.last_hidden_state.shape == (3, 64 * 64, config.vision_config.hidden_size)
    assert out.pooler_output.shape == (3, 256, config.text_config.hidden_size)
    assert int(embedded[..., 0].sum()) == 3 * 256  # one soft token per pooled feature


# ----- measuring -----------------------------------------------------------------------------------


def covered(r) -> float:
    """The share of the forward the hooks time: tower, projector (siblings), LLM blocks and head."""
    return stages_sum(r) / r.t_total_ms


def test_measured_counts_equal_the_prediction_and_the_stages_cover_the_forward(swept):
    for (rows, cols), records in swept.items():
        height, width = resolution_for((rows, cols), SCHEME)
        predicted = geometry(height, width, SCHEME)
        views = 1 + (0 if (rows, cols) == (1, 1) else rows * cols)
        assert len(records) == 2
        for r in records:
            assert r.status == "ok", r.error
            assert (r.height, r.width, r.profile, r.model) == (height, width, "gemma3", TINY)
            assert (r.crops, r.crops_actual, r.encoder_patches) == (predicted.crops, views, views * 4096)
            assert (r.image_tokens, r.image_tokens_actual) == (predicted.image_tokens, 256 * views)
            assert r.sequence_tokens == predicted.sequence_tokens == 258 * views
            extra = json.loads(r.extra)
            assert extra["architecture"] == "gemma3" and extra["inputs"] == "image-processor+layout"
            assert extra["prompt_tokens"] == r.seq_len - r.sequence_tokens > PROMPT_WORDS  # "\n\n"s, words, bos
            for name in ("t_vision_ms", "t_projector_ms", "t_llm_prefill_ms", "t_lm_head_ms", "t_vision_only_ms",
                         "t_prefill_step_ms", "t_preprocess_ms"):
                assert getattr(r, name) > 0, ((rows, cols), name)
            assert stages_sum(r) <= r.t_total_ms
    # Untimed: the embedding, the scatter and the masks (15-25 ms on this CPU): from three views on, under 15%.
    coverage = max(covered(r) for r in swept[(2, 1)])
    assert coverage >= 0.85, coverage


def test_size_that_gives_another_target_is_a_failed_record(host):
    [failed] = host.measure(MeasureConfig(tiling_rows=1, tiling_cols=2, height=896, width=896, repeats=1))
    assert failed.status == "failed" and failed.error_type == "GeometryMismatchError"
    assert "1x2 at 896x896" in failed.error and "gives tiling 1x1" in failed.error


def test_processor_unlike_the_scheme_is_a_failed_record_with_both_numbers(host):
    """A processor allowing fewer crops than the scheme must not give a row: the counts are the processor's."""
    original = host.inputs.call_kwargs
    host.inputs.call_kwargs = {**original, "pan_and_scan_min_ratio_to_activate": 2.5}  # 896 x 1792 is only 2:1
    try:
        [failed] = host.measure(MeasureConfig(tiling_rows=1, tiling_cols=2, warmup=0, repeats=1))
    finally:
        host.inputs.call_kwargs = original
    assert failed.status == "failed" and failed.error_type == "GeometryMismatchError"
    assert "tilings predicts 3 crops, 768 image tokens and 774 sequence tokens" in failed.error
    assert "the processor produced 1 crops, 256 image tokens and 258 image sequence tokens" in failed.error


# ----- schemes the model takes or refuses --------------------------------------------------------


def test_check_fits_refuses_other_views_patches_token_counts_and_schemes():
    config = MODELS[TINY].config()
    check_scheme_fits(config, SCHEME)
    raw = json.loads(config.to_json_string())  # a local checkpoint's config.json, as plain JSON
    check_scheme_fits(raw, SCHEME)
    with pytest.raises(ValueError, match="resizes views to 448 px but the model's vision tower takes 896x896"):
        check_scheme_fits(raw, PanScan(name="small", view_size=448))
    with pytest.raises(ValueError, match="uses patch_size 16 but the model's vision tower takes patch_size 14"):
        check_scheme_fits(config, PanScan(name="p16", view_size=896, patch_size=16))
    with pytest.raises(ValueError, match="counts 64 tokens per view but the model pools each view into 256"):
        check_scheme_fits(raw, PanScan(name="t64", tokens_per_view=64))
    with pytest.raises(ValueError, match="the projector pools 64x64 patches .* a square whose side divides 64"):
        check_scheme_fits({**raw, "mm_tokens_per_image": 144}, PanScan(name="t144", tokens_per_view=144))
    for other in ("internvl3", "llava-onevision"):
        with pytest.raises(ValueError, match=f"'{other}' is not a pan-and-scan scheme"):
            check_scheme_fits(config, PROFILES[other])


def test_host_refuses_a_scheme_the_model_cannot_take():
    with pytest.raises(ValueError, match="not a pan-and-scan scheme"):
        ModelHost(TINY, device="cpu", profile="internvl3")
    with pytest.raises(ValueError, match="448 px"):
        ModelHost(TINY, device="cpu", profile=PanScan(name="small", view_size=448))


# ----- checkpoints by path -----------------------------------------------------------------------


def _processor(image_processor):
    """A real Gemma3Processor with a word-level tokenizer built here (no download) naming the image tokens at the
    tiny model's ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import Gemma3Processor, PreTrainedTokenizerFast

    specials = {"<start_of_image>": BOI, "<end_of_image>": EOI, "<image_soft_token>": SOFT, "<eos>": 1}
    tokenizer = Tokenizer(models.WordLevel(vocab={f"w{i}": i for i in range(2, 900)} | specials, unk_token="w2"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="w2", eos_token="<eos>",
        extra_special_tokens={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                              "image_token": "<image_soft_token>"})
    return Gemma3Processor(image_processor=image_processor, tokenizer=fast, image_seq_length=256)


# google/gemma-3-4b-it's preprocessor_config.json as released: pan and scan left to the processor's call.
RELEASED_PREPROCESSOR_CONFIG = {
    "do_convert_rgb": None, "do_normalize": True, "do_pan_and_scan": None, "do_rescale": True, "do_resize": True,
    "image_mean": [0.5, 0.5, 0.5], "image_processor_type": "Gemma3ImageProcessor", "image_seq_length": 256,
    "image_std": [0.5, 0.5, 0.5], "pan_and_scan_max_num_crops": None, "pan_and_scan_min_crop_size": None,
    "pan_and_scan_min_ratio_to_activate": None, "processor_class": "Gemma3Processor", "resample": 2,
    "rescale_factor": 0.00392156862745098, "size": {"height": 896, "width": 896},
}


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """The tiny model saved as real files: with the released kind of preprocessor config (the pan-and-scan keys
    null), and with a full processor (a tokenizer that names the image tokens)."""
    root = tmp_path_factory.mktemp("gemma3")
    model = build()
    for name in ("released", "full"):
        model.save_pretrained(root / name)
    (root / "released" / "preprocessor_config.json").write_text(json.dumps(RELEASED_PREPROCESSOR_CONFIG))
    _processor(gemma3_image_processor(SCHEME)).save_pretrained(root / "full")
    return root


def test_local_checkpoint_with_the_released_preprocessor_config(saved):
    path = str(saved / "released")
    host = ModelHost(path, device="cpu")
    assert (host.source, host.architecture) == ("pretrained", "gemma3")
    # Its pan-and-scan settings are null: the scheme turns pan and scan on with Gemma3Processor's numbers.
    assert host.inputs.image_processor.do_pan_and_scan is None
    assert host.profile == SCHEME and not host.inputs.real_tokenizer
    [r] = host.measure(MeasureConfig(tiling_rows=1, tiling_cols=1, warmup=0, repeats=1))
    assert r.status == "ok", r.error
    assert r.model == path and json.loads(r.extra)["inputs"] == "image-processor+layout"
    prepared = host.inputs.process(synthetic_image(*resolution_for((2, 1), SCHEME), 0))
    assert (prepared.crops, prepared.image_tokens, prepared.grids) == (3, 3 * 256, (2, 1))


def test_local_checkpoint_with_the_full_processor(saved):
    """With a tokenizer the checkpoint's own processor writes the text; the counts must still agree."""
    host = ModelHost(str(saved / "full"), device="cpu")
    assert host.inputs.real_tokenizer and host.profile == SCHEME
    prepared = host.inputs.process(synthetic_image(*resolution_for((1, 2), SCHEME), 0))
    assert prepared.source == "processor"
    assert (prepared.crops, prepared.image_tokens, prepared.sequence_tokens) == (3, 3 * 256, 3 * 258)
    ids = prepared.forward["input_ids"][0].tolist()
    start = ids.index(BOI)
    assert ids[start:start + 258] == [BOI] + [SOFT] * 256 + [EOI]
    # The word-level tokenizer drops "\n\n" and reads each word as one token: 15 words of the sentence, 5 of the
    # prompt, none else.
    assert prepared.seq_len == 3 * 258 + 15 + PROMPT_WORDS
    assert torch.equal(prepared.forward["token_type_ids"][0], (prepared.forward["input_ids"][0] == SOFT).long())
