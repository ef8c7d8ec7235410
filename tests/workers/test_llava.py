"""LLaVA-OneVision (CPU): the tiny model measured end to end, its token layout against transformers' own
processor and model, the module map, scheme checks, the 7B architecture on meta, local checkpoints."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from tilings import PROFILES, geometry, resolution_for
from tilings.pinpoints import Pinpoints
from workers import MODELS, MeasureConfig, ModelHost, Record
from workers.inputs import PROMPT_IDS, synthetic_image
from workers.llava import (
    MODULE_MAP,
    TINY_IMAGE_TOKEN_ID,
    check_scheme_fits,
    image_processor_for,
    inputs_for,
)
from workers.models import build_on_meta, build_registered, count_parameters, materialize_
from workers.modulemap import resolves, split_paths
from workers.registry import ARCHITECTURES, detect_architecture
from workers.summary import FORWARD_STAGES as STAGES
from workers.summary import stages_sum
from workers.timers import CpuClock, HookTimer

CPU = torch.device("cpu")
OV = PROFILES["llava-onevision"]
# (crops, image tokens) of the exact-pinpoint images, from transformers' processor (729 + 729rc + 27r under the cap).
EXACT = {(1, 1): (2, 1485), (1, 2): (3, 2214), (2, 1): (3, 2241)}


@pytest.fixture(scope="module")
def host() -> ModelHost:
    return ModelHost("tiny-llava-onevision", device="cpu")


@pytest.fixture(scope="module")
def swept(host) -> dict[tuple[int, int], list[Record]]:
    return {t: host.measure(MeasureConfig(tiling_rows=t[0], tiling_cols=t[1], warmup=0, repeats=2)) for t in EXACT}


def test_registry_holds_the_family():
    arch = ARCHITECTURES["llava-onevision"]
    assert (arch.model_class, arch.model_types, arch.default_profile) == (
        "LlavaOnevisionForConditionalGeneration", ("llava_onevision",), "llava-onevision")
    assert {n: (MODELS[n].architecture, MODELS[n].profile, MODELS[n].weights)
            for n in ("tiny-llava-onevision", "llava-onevision-7b-arch")} == {
        "tiny-llava-onevision": ("llava-onevision", "llava-onevision", "seeded-init"),
        "llava-onevision-7b-arch": ("llava-onevision", "llava-onevision", "meta")}
    config = MODELS["tiny-llava-onevision"].config()
    assert config.image_token_id == TINY_IMAGE_TOKEN_ID < config.text_config.vocab_size
    assert max(PROMPT_IDS) < TINY_IMAGE_TOKEN_ID
    check_scheme_fits(config, OV)  # the tiny model is built for the preset


def test_tiny_weights_are_seeded():
    spec = MODELS["tiny-llava-onevision"]
    a, b, c = (build_registered(spec, device=CPU, dtype=torch.float32, attn_implementation=None, seed=s)
               for s in (0, 0, 1))
    for key in ("model.language_model.layers.0.self_attn.q_proj.weight", "model.image_newline",
                "model.vision_tower.encoder.layers.0.mlp.fc1.weight"):
        assert torch.equal(a.state_dict()[key], b.state_dict()[key]), key
        assert not torch.equal(a.state_dict()[key], c.state_dict()[key]), key
    assert not a.training and count_parameters(a) < 1_000_000


def test_records_carry_the_processors_counts_and_they_match_the_prediction(swept):
    for (rows, cols), records in swept.items():
        height, width = resolution_for((rows, cols), "llava-onevision")
        predicted = geometry(height, width, "llava-onevision")
        assert (height, width) == (384 * rows, 384 * cols)
        assert [r.repeat for r in records] == [0, 1]
        for r in records:
            assert r.status == "ok", r.error
            assert (r.crops_actual, r.image_tokens_actual) == EXACT[(rows, cols)]
            assert (r.crops, r.image_tokens, r.sequence_tokens) == (predicted.crops, predicted.image_tokens,
                                                                     predicted.image_tokens)
            assert (r.crops_actual, r.image_tokens_actual) == (r.crops, r.image_tokens)
            assert r.seq_len == r.image_tokens + len(PROMPT_IDS)  # <image> x N between the prompt ids
            assert json.loads(r.extra)["inputs"] == "image-processor+layout"
            assert json.loads(r.extra)["architecture"] == "llava-onevision"


def test_stages_are_positive_nested_and_cover_the_forward(swept):
    for records in swept.values():
        for r in records:
            assert all(getattr(r, s) > 0 for s in STAGES), [getattr(r, s) for s in STAGES]
            assert (r.vision_calls, r.projector_calls) == (1, 1)
            assert stages_sum(r) <= r.t_total_ms
            assert r.t_vision_only_ms > 0 and r.t_prefill_step_ms > 0
        # Other work on the machine only adds time: each config is judged on its least disturbed repeat.
        coverage = max(stages_sum(r) / r.t_total_ms for r in records)
        assert coverage >= 0.9, coverage
    every = [r for records in swept.values() for r in records]  # the step is the vision path plus the LLM
    assert sum(r.t_prefill_step_ms for r in every) > sum(r.t_vision_only_ms for r in every)


def test_hooks_fire_in_forward_order_and_blocks_resolve(host):
    model = host.model
    assert host.modules.vision == [model.model.vision_tower]
    assert host.modules.projector == [model.model.multi_modal_projector]
    assert host.modules.llm_blocks == list(model.model.language_model.layers) and len(host.modules.llm_blocks) == 2
    assert host.modules.lm_head == [model.lm_head]
    assert host.modules.vision_blocks == list(model.model.vision_tower.encoder.layers)
    assert len(host.modules.vision_blocks) == 2 and ARCHITECTURES["llava-onevision"].module_map is MODULE_MAP
    prepared = host.inputs.process(synthetic_image(384, 768, 0))
    timer = HookTimer(CpuClock(), host.modules)
    with timer.attached(), torch.inference_mode():
        host.model(**prepared.forward, logits_to_keep=1)
    assert [stage for stage, kind in timer.log if kind == "start"] == ["vision", "projector", "llm_prefill", "lm_head"]
    assert timer.log[1] == ("vision", "end") and timer.log[-1] == ("lm_head", "end")


def test_the_map_fits_llava_onevision_only(host):
    """Molmo2 names its vision tower, projector, LLM blocks and head alike; the SigLIP block list tells them apart."""
    molmo = build_registered(MODELS["tiny-molmo2"], device=CPU, dtype=torch.float32, attn_implementation=None, seed=0)
    required = [p for stage in MODULE_MAP.required for p in split_paths(getattr(MODULE_MAP, stage))]
    assert all(resolves(host.model, p) for p in required)
    assert [p for p in required if not resolves(molmo, p)] == ["model.vision_tower.encoder.layers"]


def test_detection_finds_llava_onevision(host):
    assert detect_architecture(host.model) == "llava-onevision"


def test_decode_through_the_cache(host):
    [r] = host.measure(MeasureConfig(tiling_rows=1, tiling_cols=1, warmup=0, repeats=1, decode_tokens=2))
    assert r.status == "ok", r.error
    assert r.t_ttft_ms >= r.t_prefill_step_ms > 0 and r.t_tpot_ms > 0


@pytest.mark.parametrize("size", [(768, 1000), (700, 1152), (1152, 1536), (899, 1024)])
def test_layout_counts_equal_prediction_and_model_features(host, size):
    """Unpadded (768x1000, 700x1152) and capped (3x4, 3x3) images: the processor's own count, the
    prediction and the features `pack_image_features` makes must all be the same number."""
    predicted = geometry(*size, "llava-onevision")
    prepared = host.inputs.process(synthetic_image(*size, 1))
    assert prepared.grids == tuple(predicted.tiling)
    assert (prepared.crops, prepared.image_tokens, prepared.sequence_tokens) == (
        predicted.crops, predicted.image_tokens, predicted.sequence_tokens)
    assert int((prepared.forward["input_ids"] == TINY_IMAGE_TOKEN_ID).sum()) == prepared.image_tokens
    with torch.inference_mode():
        features = host.model.model.get_image_features(**prepared.vision).pooler_output
    assert [f.shape[0] for f in features] == [prepared.image_tokens]
    rows, cols = predicted.tiling
    assert prepared.image_tokens < 729 + 729 * rows * cols + 27 * rows  # unpadding or the cap removed features


def test_a_size_that_picks_another_tiling_is_a_failed_record(host):
    [failed] = host.measure(MeasureConfig(tiling_rows=1, tiling_cols=3, height=384, width=384, repeats=1))
    assert (failed.status, failed.error_type) == ("failed", "GeometryMismatchError")
    assert "1x3" in failed.error and "gives tiling 1x1" in failed.error
    assert (failed.height, failed.width, failed.t_total_ms) == (384, 384, None)


def test_a_processor_unlike_the_scheme_is_a_failed_record_with_both_numbers(host):
    """A processor that only knows 1x1 and 2x2 turns the 1x2 image into 2x2 (5 crops): never a row."""
    original = host.inputs
    host.inputs = inputs_for(host.model.config, Pinpoints(name="two", pinpoints=((384, 384), (768, 768))))
    try:
        [failed] = host.measure(MeasureConfig(tiling_rows=1, tiling_cols=2, warmup=0, repeats=1))
    finally:
        host.inputs = original
    assert (failed.status, failed.error_type) == ("failed", "GeometryMismatchError")
    assert "tilings predicts 3 crops, 2214 image tokens" in failed.error
    assert "the processor produced 5 crops" in failed.error


def test_schemes_that_cannot_feed_the_model_are_refused():
    config = MODELS["tiny-llava-onevision"].config()
    raw = json.loads(config.to_json_string())
    check_scheme_fits(raw, OV)  # a config.json dict is read like the config object
    cases = [
        (PROFILES["molmo2"], "'molmo2' is not a pinpoint scheme"),
        (Pinpoints(name="t336", tile_size=336, base_tokens=576, pinpoints=((336, 336), (336, 672))),
         "uses 336 px tiles but the model's vision tower takes 384x384"),
        (replace(OV, name="p16", patch_size=16, base_tokens=576), "patch_size 16 but the model's vision tower uses 14"),
        (replace(OV, name="few", pinpoints=((384, 384), (384, 768))), "image_grid_pinpoints are"),
        (replace(OV, name="cap4", anyres_max=4), "anyres_max_4 but the model's vision_aspect_ratio is 'anyres_max_9'"),
    ]
    for scheme, message in cases:
        for cfg in (config, raw):
            with pytest.raises(ValueError, match=message):
                check_scheme_fits(cfg, scheme)
    with pytest.raises(ValueError, match="has vision_feature_select_strategy 'default' but the model's is 'full'"):
        check_scheme_fits(config, replace(OV, vision_feature_select_strategy="default"))
    with pytest.raises(ValueError, match="uses 384 px tiles but the model's vision tower takes 336x336"):
        check_scheme_fits({**raw, "vision_config": {**raw["vision_config"], "image_size": 336}}, OV)
    with pytest.raises(ValueError, match="not a pinpoint scheme"):
        ModelHost("tiny-llava-onevision", device="cpu", profile="molmo2")


def test_the_7b_architecture_on_meta_has_the_published_shapes():
    model = build_on_meta(MODELS["llava-onevision-7b-arch"])
    assert all(p.device.type == "meta" for p in model.parameters()) and model.dtype == torch.bfloat16
    assert 8.03e9 * 0.98 < count_parameters(model) < 8.03e9 * 1.02  # the hub's "8.03B params"
    text, vision = model.model.language_model, model.model.vision_tower
    assert len(text.layers) == 28 and len(vision.encoder.layers) == 26
    attn = text.layers[0].self_attn
    assert (attn.q_proj.weight.shape, attn.k_proj.weight.shape, attn.v_proj.weight.shape) == (
        (3584, 3584), (512, 3584), (512, 3584))
    assert text.layers[0].mlp.up_proj.weight.shape == (18944, 3584)
    assert text.embed_tokens.weight.shape == model.lm_head.weight.shape == (152128, 3584)
    assert vision.encoder.layers[0].mlp.fc1.weight.shape == (4304, 1152)
    assert vision.embeddings.position_embedding.weight.shape == (729, 1152)
    assert model.model.multi_modal_projector.linear_1.weight.shape == (3584, 1152)
    assert model.lm_head.weight is not text.embed_tokens.weight
    check_scheme_fits(model.config, OV)


def test_materialize_fills_every_buffer():
    model = materialize_(build_on_meta(MODELS["tiny-llava-onevision"], dtype=torch.float32), CPU, seed=3).eval()
    ids = model.model.vision_tower.embeddings.position_ids
    assert torch.equal(ids, torch.arange(ids.shape[-1]).expand(1, -1))


def _tokenizer(specials: list[str]):
    """A word-level tokenizer built here (no download), the specials at the tiny model's ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(TINY_IMAGE_TOKEN_ID)}
    vocab |= {s: TINY_IMAGE_TOKEN_ID + i for i, s in enumerate(specials)}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="w0"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="w0", eos_token="<|im_end|>",
                                   additional_special_tokens=specials)


CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|> {{ message['role'] }}\n{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|> assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory) -> Path:
    """The tiny model saved as real files: with its image processor only, and with a full processor."""
    from transformers import LlavaOnevisionProcessor, LlavaOnevisionVideoProcessor

    root = tmp_path_factory.mktemp("tiny-ov")
    model = build_registered(MODELS["tiny-llava-onevision"], device=CPU, dtype=torch.float32,
                             attn_implementation=None, seed=0)
    model.save_pretrained(root / "image-only")
    image_processor_for(OV).save_pretrained(root / "image-only")
    model.save_pretrained(root / "full")
    LlavaOnevisionProcessor(
        image_processor=image_processor_for(OV), video_processor=LlavaOnevisionVideoProcessor(),
        tokenizer=_tokenizer(["<image>", "<video>", "<|im_start|>", "<|im_end|>"]), chat_template=CHAT_TEMPLATE,
        **OV.llava_processor_kwargs(),
    ).save_pretrained(root / "full")
    return root


def test_local_checkpoint_with_only_an_image_processor(saved_tiny):
    host = ModelHost(str(saved_tiny / "image-only"), device="cpu")
    assert (host.source, host.architecture, host.profile) == ("pretrained", "llava-onevision", OV)
    assert host.inputs.processor is None
    [r] = host.measure(MeasureConfig(tiling_rows=2, tiling_cols=1, warmup=0, repeats=1))
    assert r.status == "ok", r.error
    assert (r.crops_actual, r.image_tokens_actual) == EXACT[(2, 1)]
    assert json.loads(r.extra)["inputs"] == "image-processor+layout"


def test_local_checkpoint_with_the_full_processor(saved_tiny):
    """transformers' processor (tokenizer and chat template) writes the tokens; its counts are the layout's."""
    host = ModelHost(str(saved_tiny / "full"), device="cpu")
    assert host.inputs.processor is not None and host.profile == OV
    [r] = host.measure(MeasureConfig(tiling_rows=1, tiling_cols=2, warmup=0, repeats=1))
    assert r.status == "ok", r.error
    assert json.loads(r.extra)["inputs"] == "processor"
    assert (r.crops_actual, r.image_tokens_actual, r.sequence_tokens) == (*EXACT[(1, 2)], EXACT[(1, 2)][1])
    # <|im_start|> user <image>xN Describe this image in detail. <|im_end|> <|im_start|> assistant: 10 around N
    assert r.seq_len == r.image_tokens + 10
    image = synthetic_image(700, 1152, 2)
    layout = inputs_for(host.model.config, OV).process(image)
    assert host.inputs.process(image).image_tokens == layout.image_tokens == geometry(700, 1152, OV).image_tokens
