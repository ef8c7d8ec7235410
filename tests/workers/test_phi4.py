"""Phi-4-multimodal (CPU): the tiny model measured end to end, its token layout against transformers' own
processor and model, the module map, scheme checks, the full-size architecture on meta, local checkpoints."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from tilings import PROFILES, geometry, resolution_for
from tilings.ceiling import CeilingGrid
from workers import MODELS, MeasureConfig, ModelHost, Record
from workers.inputs import PROMPT_IDS, synthetic_image
from workers.models import build_on_meta, build_registered, count_parameters, materialize_
from workers.modulemap import resolves, split_paths
from workers.phi4 import MODULE_MAP, TINY_IMAGE_TOKEN_ID, check_scheme_fits, image_processor_for, inputs_for
from workers.registry import ARCHITECTURES, detect_architecture
from workers.summary import FORWARD_STAGES as STAGES
from workers.summary import stages_sum
from workers.timers import CpuClock, HookTimer

CPU = torch.device("cpu")
PHI4 = PROFILES["phi4-mm"]
# (crops, image tokens) at the exact canvases, from transformers' processor: 273 + 256*r*c + 16*r.
EXACT = {(1, 1): (2, 545), (1, 2): (3, 801), (2, 1): (3, 817)}
EMBED = "model.embed_tokens_extend.image_embed"


@pytest.fixture(scope="module")
def host() -> ModelHost:
    return ModelHost("tiny-phi4-mm", device="cpu")


@pytest.fixture(scope="module")
def swept(host) -> dict[tuple[int, int], list[Record]]:
    return {t: host.measure(MeasureConfig(tiling_rows=t[0], tiling_cols=t[1], warmup=0, repeats=2)) for t in EXACT}


def test_registry_holds_the_family():
    arch = ARCHITECTURES["phi4-multimodal"]
    assert (arch.model_class, arch.model_types, arch.default_profile) == (
        "Phi4MultimodalForCausalLM", ("phi4_multimodal",), "phi4-mm")
    assert {n: (MODELS[n].architecture, MODELS[n].profile, MODELS[n].weights)
            for n in ("tiny-phi4-mm", "phi4-mm-arch")} == {
        "tiny-phi4-mm": ("phi4-multimodal", "phi4-mm", "seeded-init"),
        "phi4-mm-arch": ("phi4-multimodal", "phi4-mm", "meta")}
    config = MODELS["tiny-phi4-mm"].config()
    assert config.vision_config.image_token_id == TINY_IMAGE_TOKEN_ID < config.vocab_size
    assert max(PROMPT_IDS) < TINY_IMAGE_TOKEN_ID
    assert (config.vision_config.image_size, config.vision_config.patch_size) == (448, 14)  # the processor's 16x16
    check_scheme_fits(config, PHI4)  # the tiny model is built for the preset


def test_tiny_weights_are_seeded_and_small():
    spec = MODELS["tiny-phi4-mm"]
    a, b, c = (build_registered(spec, device=CPU, dtype=torch.float32, attn_implementation=None, seed=s)
               for s in (0, 0, 1))
    for key in ("model.layers.0.self_attn.qkv_proj.weight", f"{EMBED}.img_projection_up.weight",
                f"{EMBED}.img_processor.encoder.layers.0.mlp.fc1.weight"):
        assert torch.equal(a.state_dict()[key], b.state_dict()[key]), key
        assert not torch.equal(a.state_dict()[key], c.state_dict()[key]), key
    assert not a.training and count_parameters(a) < 400_000
    audio = a.model.embed_tokens_extend.audio_embed
    assert len(audio.encoder.encoders) == 1 and count_parameters(audio) < 12_000  # as small as its config allows


def test_records_carry_the_processors_counts_and_they_match_the_prediction(swept):
    for (rows, cols), records in swept.items():
        height, width = resolution_for((rows, cols), "phi4-mm")
        predicted = geometry(height, width, "phi4-mm")
        assert (height, width) == (448 * rows, 448 * cols)
        assert [r.repeat for r in records] == [0, 1]
        for r in records:
            assert r.status == "ok", r.error
            assert (r.crops_actual, r.image_tokens_actual) == EXACT[(rows, cols)]
            assert (r.crops, r.image_tokens, r.sequence_tokens) == (predicted.crops, predicted.image_tokens,
                                                                     predicted.image_tokens)
            assert r.seq_len == r.image_tokens + len(PROMPT_IDS)  # <|image|> x N between the prompt ids
            assert json.loads(r.extra)["inputs"] == "image-processor+layout"
            assert json.loads(r.extra)["architecture"] == "phi4-multimodal"


def test_stages_are_positive_nested_and_cover_the_forward(swept):
    for records in swept.values():
        for r in records:
            assert all(getattr(r, s) > 0 for s in STAGES), [getattr(r, s) for s in STAGES]
            assert (r.vision_calls, r.projector_calls) == (1, 3)  # pooling, up and down projections
            assert stages_sum(r) <= r.t_total_ms
            assert r.t_vision_only_ms > 0 and r.t_prefill_step_ms > 0
        coverage = max(stages_sum(r) / r.t_total_ms for r in records)
        assert coverage >= 0.85, coverage


def test_hooks_fire_in_forward_order_and_blocks_resolve(host):
    model = host.model
    embed = model.model.embed_tokens_extend.image_embed
    assert host.modules.vision == [embed.img_processor]
    assert host.modules.projector == [embed.image_token_compression, embed.img_projection_up,
                                      embed.img_projection_down]
    assert host.modules.llm_blocks == list(model.model.layers) and len(host.modules.llm_blocks) == 2
    assert host.modules.lm_head == [model.lm_head]
    assert host.modules.vision_blocks == list(embed.img_processor.encoder.layers)
    assert ARCHITECTURES["phi4-multimodal"].module_map is MODULE_MAP
    prepared = host.inputs.process(synthetic_image(448, 896, 0))
    timer = HookTimer(CpuClock(), host.modules)
    with timer.attached(), torch.inference_mode():
        host.model(**prepared.forward, logits_to_keep=1)
    assert [stage for stage, kind in timer.log] == [
        "vision", "vision", "projector", "projector", "projector", "projector", "projector", "projector",
        "llm_prefill", "llm_prefill", "lm_head", "lm_head"]
    assert timer.log[1] == ("vision", "end") and timer.log[-1] == ("lm_head", "end")


def test_the_map_fits_phi4_only_and_is_detected(host):
    required = [p for stage in MODULE_MAP.required for p in split_paths(getattr(MODULE_MAP, stage))]
    assert all(resolves(host.model, p) for p in required)
    assert detect_architecture(host.model) == "phi4-multimodal"
    llava = build_registered(MODELS["tiny-llava-onevision"], device=CPU, dtype=torch.float32,
                             attn_implementation=None, seed=0)
    assert not any(resolves(llava, p) for p in required if p != "lm_head")


def test_decode_through_the_cache(host):
    [r] = host.measure(MeasureConfig(tiling_rows=1, tiling_cols=1, warmup=0, repeats=1, decode_tokens=2))
    assert r.status == "ok", r.error
    assert r.t_ttft_ms >= r.t_prefill_step_ms > 0 and r.t_tpot_ms > 0


@pytest.mark.parametrize("size", [(448, 392), (400, 448), (896, 840), (20, 900)])
def test_padded_images_count_as_predicted_and_as_the_model_places_features(host, size):
    """Padding masked in width (448x392, 896x840: the pad family) and in height (400x448, 20x900): the
    processor's own count, the prediction and the features the image embedding scatters are one number."""
    predicted = geometry(*size, "phi4-mm")
    prepared = host.inputs.process(synthetic_image(*size, 1))
    assert prepared.grids == tuple(predicted.tiling)
    assert (prepared.crops, prepared.image_tokens, prepared.sequence_tokens) == (
        predicted.crops, predicted.image_tokens, predicted.sequence_tokens)
    rows, cols = predicted.tiling
    assert prepared.image_tokens < 273 + 256 * rows * cols + 16 * rows  # the mask removed features
    embed = host.model.model.embed_tokens_extend.image_embed
    features: list[int] = []
    handle = embed.img_projection_down.register_forward_hook(lambda m, a, out: features.append(out.shape[1]))
    try:
        with torch.inference_mode():
            host.inputs.vision_only(host.model, prepared.vision)
    finally:
        handle.remove()
    assert features == [prepared.image_tokens]


def test_a_size_that_picks_another_tiling_is_a_failed_record(host):
    [failed] = host.measure(MeasureConfig(tiling_rows=1, tiling_cols=3, height=448, width=448, repeats=1))
    assert (failed.status, failed.error_type) == ("failed", "GeometryMismatchError")
    assert "1x3" in failed.error and "gives tiling 1x1" in failed.error


def test_a_processor_unlike_the_scheme_is_a_failed_record_with_both_numbers(host):
    """A processor limited to 1 tile turns the 1x2 canvas into one padded tile (2 crops): never a row."""
    original = host.inputs
    host.inputs = inputs_for(host.model.config, replace(PHI4, name="one", dynamic_hd=1))
    try:
        [failed] = host.measure(MeasureConfig(tiling_rows=1, tiling_cols=2, warmup=0, repeats=1))
    finally:
        host.inputs = original
    assert (failed.status, failed.error_type) == ("failed", "GeometryMismatchError")
    assert "tilings predicts 3 crops, 801 image tokens" in failed.error
    assert "the processor produced 2 crops" in failed.error


def test_schemes_that_cannot_feed_the_model_are_refused():
    config = MODELS["tiny-phi4-mm"].config()
    raw = json.loads(config.to_json_string())
    check_scheme_fits(raw, PHI4)  # a config.json dict is read like the config object
    cases = [
        (PROFILES["llava-onevision"], "'llava-onevision' is not a ceiling-grid scheme"),
        (replace(PHI4, name="t336", tile_size=336), "uses 336 px tiles but the model's vision tower takes 448x448"),
        (replace(PHI4, name="p16", patch_size=16, tile_size=448 // 16 * 16), "has patch_size 16 but the model.s vision tower uses 14 px patches"),
    ]
    for scheme, message in cases:
        for cfg in (config, raw):
            with pytest.raises(ValueError, match=message):
                check_scheme_fits(cfg, scheme)
    small = {**raw, "vision_config": {**raw["vision_config"], "image_size": 224, "crop_size": 224}}
    with pytest.raises(ValueError, match="makes 8 pooled features a side, but Phi4MultimodalProcessor counts 16"):
        check_scheme_fits(small, CeilingGrid(name="t224", tile_size=224))
    with pytest.raises(ValueError, match="crop_size is 336"):
        check_scheme_fits({**raw, "vision_config": {**raw["vision_config"], "crop_size": 336}}, PHI4)
    with pytest.raises(ValueError, match="not a ceiling-grid scheme"):
        ModelHost("tiny-phi4-mm", device="cpu", profile="molmo2")


def test_the_full_size_architecture_on_meta_has_the_published_shapes():
    model = build_on_meta(MODELS["phi4-mm-arch"])
    assert all(p.device.type == "meta" for p in model.parameters()) and model.dtype == torch.bfloat16
    assert count_parameters(model) == 4_743_988_032  # text 3.84e9, image embedding 0.44e9, audio 0.47e9
    text, embed = model.model, model.model.embed_tokens_extend.image_embed
    assert len(text.layers) == 32 and len(embed.img_processor.encoder.layers) == 27
    attn = text.layers[0].self_attn
    assert (attn.qkv_proj.weight.shape, attn.o_proj.weight.shape) == ((3072 + 2 * 8 * 128, 3072), (3072, 3072))
    assert text.layers[0].mlp.gate_up_proj.weight.shape == (2 * 8192, 3072)
    assert model.lm_head.weight is text.embed_tokens.weight and text.embed_tokens.weight.shape == (200064, 3072)
    assert embed.img_processor.encoder.layers[0].mlp.fc1.weight.shape == (4304, 1152)
    assert embed.img_processor.embeddings.position_embedding.weight.shape == (1024, 1152)
    assert (embed.img_projection_up.weight.shape, embed.img_projection_down.weight.shape) == ((3072, 1152),
                                                                                             (3072, 3072))
    audio = model.model.embed_tokens_extend.audio_embed.encoder
    assert len(audio.encoders) == 24 and audio.encoders[0].feed_forward_in.gate_up_proj.weight.shape == (3072, 1024)
    assert model.config.rope_parameters["rope_type"] == "longrope"
    assert len(model.config.rope_parameters["long_factor"]) == 48 == int(128 * 0.75) // 2
    check_scheme_fits(model.config, PHI4)


def test_materialize_fills_every_buffer():
    model = materialize_(build_on_meta(MODELS["tiny-phi4-mm"], dtype=torch.float32), CPU, seed=3).eval()
    norm = model.model.embed_tokens_extend.audio_embed.encoder.encoder_embedding
    assert torch.equal(norm.global_mean, torch.zeros(8)) and torch.equal(norm.global_invstd, torch.ones(8))


def _tokenizer():
    """A word-level tokenizer built here (no download): words w0..w999, then the specials at the tiny model's ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|image|>", "<|audio|>", "<|user|>", "<|end|>", "<|assistant|>"]
    vocab = {f"w{i}": i for i in range(TINY_IMAGE_TOKEN_ID)}
    vocab |= {s: TINY_IMAGE_TOKEN_ID + i for i, s in enumerate(specials)}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="w0"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="w0", eos_token="<|end|>",
                                   extra_special_tokens={"image_token": "<|image|>", "audio_token": "<|audio|>"})


# A text template like Phi-4's: the image token is part of the user's text. Saved with the processor, it comes back
# on the tokenizer only (Phi4MultimodalProcessor.__init__ takes no chat_template of its own).
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|> {{ message['content'] }} <|end|> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory) -> Path:
    """The tiny model saved as real files: with its image processor only, and with a full processor."""
    from transformers import Phi4MultimodalFeatureExtractor, Phi4MultimodalProcessor

    root = tmp_path_factory.mktemp("tiny-phi4")
    model = build_registered(MODELS["tiny-phi4-mm"], device=CPU, dtype=torch.float32, attn_implementation=None,
                             seed=0)
    model.save_pretrained(root / "image-only")
    image_processor_for(PHI4).save_pretrained(root / "image-only")
    model.save_pretrained(root / "full")
    Phi4MultimodalProcessor(image_processor=image_processor_for(PHI4),
                            audio_processor=Phi4MultimodalFeatureExtractor(), tokenizer=_tokenizer(),
                            chat_template=CHAT_TEMPLATE).save_pretrained(root / "full")
    return root


def test_local_checkpoint_with_only_an_image_processor(saved_tiny):
    host = ModelHost(str(saved_tiny / "image-only"), device="cpu")
    assert (host.source, host.architecture, host.profile) == ("pretrained", "phi4-multimodal", PHI4)
    assert host.inputs.processor is None
    [r] = host.measure(MeasureConfig(tiling_rows=2, tiling_cols=1, warmup=0, repeats=1))
    assert r.status == "ok", r.error
    assert (r.crops_actual, r.image_tokens_actual) == EXACT[(2, 1)]
    assert json.loads(r.extra)["inputs"] == "image-processor+layout"


def test_local_checkpoint_with_the_full_processor(saved_tiny):
    """transformers' processor (tokenizer and chat template) writes the tokens; its counts are the layout's."""
    host = ModelHost(str(saved_tiny / "full"), device="cpu")
    assert host.inputs.processor is not None and host.profile == PHI4
    [r] = host.measure(MeasureConfig(tiling_rows=1, tiling_cols=2, warmup=0, repeats=1))
    assert r.status == "ok", r.error
    assert json.loads(r.extra)["inputs"] == "processor"
    assert (r.crops_actual, r.image_tokens_actual, r.sequence_tokens) == (*EXACT[(1, 2)], EXACT[(1, 2)][1])
    assert host.inputs.processor.chat_template is None and host.inputs.processor.tokenizer.chat_template
    # <|user|> <|image|>xN Describe this image in detail. <|end|> <|assistant|>: 8 around N
    assert r.seq_len == r.image_tokens + 8
    image = synthetic_image(448, 840, 2)
    layout = inputs_for(host.model.config, PHI4).process(image)
    assert host.inputs.process(image).image_tokens == layout.image_tokens == geometry(448, 840, PHI4).image_tokens
