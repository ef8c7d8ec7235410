"""Llama 3.2 Vision (Mllama) on the CPU: the tiny model measured end to end, its inputs against transformers' own
processor, the module map (the cross-attention layers inside the LLM stage), scheme checks, the 11B architecture on
meta, local checkpoints.

Every model is built from a config in code (no download): `tests/workers/conftest.py` sets ``HF_HUB_OFFLINE``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from tilings import PROFILES, geometry, resolution_for
from workers import MODELS, MeasureConfig, ModelHost, Record
from workers.inputs import PROMPT_IDS, synthetic_image
from workers.mllama import (
    MODULE_MAP,
    TINY_IMAGE_TOKEN_ID,
    check_scheme_fits,
    inputs_for,
    mllama_image_processor,
)
from workers.models import build_on_meta, build_registered, count_parameters, materialize_
from workers.modulemap import resolves, split_paths
from workers.registry import ARCHITECTURES, detect_architecture
from workers.summary import FORWARD_STAGES as STAGES
from workers.summary import stages_sum
from workers.timers import CpuClock, HookTimer

CPU = torch.device("cpu")
TINY = PROFILES["mllama-tiny"]
MLLAMA = PROFILES["mllama"]
TARGETS = [(1, 1), (1, 2), (2, 2)]


def build(seed: int = 0) -> torch.nn.Module:
    return build_registered(MODELS["tiny-mllama"], device=CPU, dtype=torch.float32, attn_implementation=None,
                            seed=seed)


@pytest.fixture(scope="module")
def host() -> ModelHost:
    return ModelHost("tiny-mllama", device="cpu")


@pytest.fixture(scope="module")
def swept(host) -> dict[tuple[int, int], list[Record]]:
    # 2 repeats: the coverage check takes the least disturbed one, so other work on the machine cannot fail it
    return {t: host.measure(MeasureConfig(tiling_rows=t[0], tiling_cols=t[1], warmup=0, repeats=2)) for t in TARGETS}


# ----- registry, configs, shapes -----------------------------------------------------------------


def test_registry_holds_the_family():
    arch = ARCHITECTURES["mllama"]
    assert (arch.model_class, arch.model_types, arch.default_profile, arch.module_map) == (
        "MllamaForConditionalGeneration", ("mllama",), "mllama", MODULE_MAP)
    assert {n: (MODELS[n].architecture, MODELS[n].profile, MODELS[n].weights)
            for n in ("tiny-mllama", "llama3.2-11b-vision-arch")} == {
        "tiny-mllama": ("mllama", "mllama-tiny", "seeded-init"),
        "llama3.2-11b-vision-arch": ("mllama", "mllama", "meta")}
    config = MODELS["tiny-mllama"].config()
    # <|image|> is the first embedding row past the vocabulary, as 128256 is in the release
    assert config.image_token_id == TINY_IMAGE_TOKEN_ID == config.text_config.vocab_size
    assert max(PROMPT_IDS) < config.text_config.bos_token_id
    check_scheme_fits(config, TINY)


def test_tiny_weights_are_seeded():
    a, b, c = build(0), build(0), build(1)
    for key in ("model.language_model.layers.1.cross_attn.k_proj.weight", "model.vision_model.class_embedding",
                "model.vision_model.transformer.layers.0.mlp.fc1.weight"):
        assert torch.equal(a.state_dict()[key], b.state_dict()[key]), key
        assert not torch.equal(a.state_dict()[key], c.state_dict()[key]), key
    assert not a.training and count_parameters(a) < 1_000_000


def test_the_11b_architecture_on_meta_has_the_published_shapes():
    model = build_on_meta(MODELS["llama3.2-11b-vision-arch"])
    assert all(p.device.type == "meta" for p in model.parameters()) and model.dtype == torch.bfloat16
    assert 10.6e9 < count_parameters(model) < 10.7e9  # the model card's "11B (10.6)"; 10,670,220,835 here
    text, vision = model.model.language_model, model.model.vision_model
    kinds = [type(layer).__name__ for layer in text.layers]
    assert len(kinds) == 40 and [i for i, k in enumerate(kinds) if k.startswith("MllamaCross")] == [
        3, 8, 13, 18, 23, 28, 33, 38]
    attn = text.layers[0].self_attn
    assert (attn.q_proj.weight.shape, attn.k_proj.weight.shape) == ((4096, 4096), (1024, 4096))
    assert text.layers[0].mlp.up_proj.weight.shape == (14336, 4096)
    assert text.embed_tokens.weight.shape == (128264, 4096) and model.lm_head.weight.shape == (128256, 4096)
    assert len(vision.transformer.layers) == 32 and len(vision.global_transformer.layers) == 8
    assert vision.transformer.layers[0].mlp.fc1.weight.shape == (5120, 1280)
    assert vision.patch_embedding.weight.shape == (1280, 3, 14, 14) and vision.num_patches == 1601  # 40x40 + CLS
    assert model.model.multi_modal_projector.weight.shape == (4096, 7680)  # 1280 x (1 + 5 intermediate layers)
    assert model.config.text_config.rope_parameters["rope_type"] == "llama3"
    assert model.lm_head.weight is not text.embed_tokens.weight
    check_scheme_fits(model.config, MLLAMA)


def test_materialize_gives_a_working_model():
    model = materialize_(build_on_meta(MODELS["tiny-mllama"], dtype=torch.float32), CPU, seed=3).eval()
    reference = build()
    for key, buffer in reference.named_buffers():
        assert torch.equal(model.get_buffer(key), buffer), key
    prepared = inputs_for(model.config, TINY).process(synthetic_image(560, 1120, 0))
    with torch.inference_mode():
        assert torch.isfinite(model(**prepared.forward, logits_to_keep=1).logits).all()


def test_materialize_recomputes_the_11b_llama3_rope_tables():
    """The 11B architecture is materialised, never initialised, on a GPU: its llama3 RoPE tables (not the tiny
    model's default ones) must come out as the library's own init makes them. Checked at toy widths."""
    def small_11b():
        config = MODELS["llama3.2-11b-vision-arch"].config()
        config.vision_config = MODELS["tiny-mllama"].config().vision_config
        text = config.text_config
        text.hidden_size, text.intermediate_size, text.num_attention_heads, text.num_key_value_heads = 64, 128, 4, 2
        text.num_hidden_layers, text.cross_attention_layers, text.vocab_size = 5, [3], 1024
        text.bos_token_id, text.eos_token_id, text.pad_token_id, config.image_token_index = 1000, 1001, 1002, 1024
        return config

    spec = dataclasses.replace(MODELS["llama3.2-11b-vision-arch"], config=small_11b)
    model = materialize_(build_on_meta(spec, dtype=torch.float32), CPU, seed=0)
    reference = build_registered(dataclasses.replace(spec, weights="seeded-init"), device=CPU, dtype=torch.float32,
                                 attn_implementation=None, seed=0)
    assert model.model.language_model.rotary_emb.rope_type == "llama3"
    for key, buffer in reference.named_buffers():
        assert torch.equal(model.get_buffer(key), buffer), key


# ----- measured end to end --------------------------------------------------------------------------


def test_records_carry_the_processors_counts_and_they_match_the_prediction(swept):
    for (rows, cols), records in swept.items():
        height, width = resolution_for((rows, cols), TINY)
        predicted = geometry(height, width, TINY)
        assert (height, width) == (560 * rows, 560 * cols) and [r.repeat for r in records] == [0, 1]
        for r in records:
            assert r.status == "ok", r.error
            assert (r.crops, r.image_tokens, r.sequence_tokens, r.encoder_patches) == (
                predicted.crops, predicted.image_tokens, predicted.sequence_tokens, predicted.encoder_patches)
            assert (r.crops_actual, r.image_tokens_actual) == (4, 1)  # 4 padded tiles, one <|image|>, any tiling
            assert r.seq_len == len(PROMPT_IDS) + 1
            assert json.loads(r.extra)["inputs"] == "image-processor+layout"
            assert json.loads(r.extra)["architecture"] == "mllama"


def test_stages_are_positive_nested_and_cover_the_forward(swept):
    for records in swept.values():
        for r in records:
            assert all(getattr(r, s) > 0 for s in STAGES), [getattr(r, s) for s in STAGES]
            assert (r.vision_calls, r.projector_calls) == (1, 1)
            assert stages_sum(r) <= r.t_total_ms
            assert r.t_vision_only_ms > 0 and r.t_prefill_step_ms > 0
        coverage = max(stages_sum(r) / r.t_total_ms for r in records)
        assert coverage >= 0.85, coverage


def test_the_llm_stage_spans_the_cross_attention_layers(host):
    """The blocks are the text tower's 3 layers, the middle one cross-attention; it runs inside the LLM span."""
    from transformers.models.mllama.modeling_mllama import MllamaCrossAttentionDecoderLayer

    model = host.model
    assert host.modules.vision == [model.model.vision_model]
    assert host.modules.projector == [model.model.multi_modal_projector]
    assert host.modules.llm_blocks == list(model.model.language_model.layers)
    assert [isinstance(b, MllamaCrossAttentionDecoderLayer) for b in host.modules.llm_blocks] == [False, True, False]
    assert host.modules.lm_head == [model.lm_head]
    assert host.modules.vision_blocks == list(model.model.vision_model.transformer.layers)
    prepared = host.inputs.process(synthetic_image(1120, 560, 0))
    timer = HookTimer(CpuClock(), host.modules, block_spans=True)
    ran: list[str] = []
    cross = host.modules.llm_blocks[1].register_forward_hook(lambda *_: ran.append(str(timer.log[-1])))
    try:
        with timer.attached(), torch.inference_mode():
            model(**prepared.forward, logits_to_keep=1)
    finally:
        cross.remove()
    assert timer.log == [("vision", "start"), ("vision", "end"), ("projector", "start"), ("projector", "end"),
                         ("llm_prefill", "start"), ("llm_prefill", "end"), ("lm_head", "start"), ("lm_head", "end")]
    assert ran == [str(("llm_prefill", "start"))]  # the cross-attention layer ran after the span opened, before it closed
    assert len(timer.read().llm_blocks_ms) == 3


def test_the_map_fits_mllama_only(host):
    required = [p for stage in MODULE_MAP.required for p in split_paths(getattr(MODULE_MAP, stage))]
    assert all(resolves(host.model, p) for p in required)
    for other in ("tiny-llava-onevision", "tiny-internvl3"):
        model = build_on_meta(MODELS[other], dtype=torch.float32)
        assert not any(resolves(model, p) for p in ("model.vision_model", "model.vision_model.transformer.layers"))
        assert detect_architecture(model) != "mllama"
    assert detect_architecture(host.model) == "mllama"


# ----- inputs --------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [(1, 1), (1, 3), (2, 2)])
def test_inputs_match_transformers_processor_and_cross_attend_from_the_image_token(host, target):
    """The layout's pixels, aspect ratio and cross-attention mask are exactly what `MllamaProcessor` makes of
    the same image and the same ids; the tokens from <|image|> on attend to the image's tiles only."""
    from transformers import MllamaProcessor

    prepared = host.inputs.process(synthetic_image(*resolution_for(target, TINY), 3))
    ids = prepared.forward["input_ids"][0].tolist()
    assert ids == [PROMPT_IDS[0], TINY_IMAGE_TOKEN_ID, *PROMPT_IDS[1:]]
    assert prepared.grids == target and (prepared.crops, prepared.image_tokens, prepared.sequence_tokens) == (4, 1, 1)
    mask = prepared.forward["cross_attention_mask"]
    cells = target[0] * target[1]
    assert mask.shape == (1, len(ids), 1, 4) and mask[0, 0].sum() == 0
    assert mask[0, 1:, 0].tolist() == [[1] * cells + [0] * (4 - cells)] * (len(ids) - 1)
    # transformers' processor on the same image and text: the first id stands for <|begin_of_text|>, the rest are
    # words of a tokenizer that maps w<i> -> i
    proc = MllamaProcessor(image_processor=mllama_image_processor(TINY), tokenizer=_tokenizer())
    text = " ".join(["<|begin_of_text|>", "<|image|>", *(f"w{i}" for i in ids[2:])])
    out = proc(images=[[synthetic_image(*resolution_for(target, TINY), 3)]], text=text, return_tensors="pt")
    assert out["input_ids"][0].tolist() == [proc.tokenizer.bos_token_id, *ids[1:]]
    for key in ("pixel_values", "aspect_ratio_ids", "aspect_ratio_mask", "cross_attention_mask"):
        assert torch.equal(torch.as_tensor(out[key]), prepared.forward[key]), key


def test_vision_states_are_the_same_size_at_every_tiling(host):
    """What the cross-attention layers attend to: 4 tiles x (10x10 + CLS) = 404 states of the text width."""
    shapes = set()
    for target in TARGETS + [(4, 1)]:
        prepared = host.inputs.process(synthetic_image(*resolution_for(target, TINY), 0))
        with torch.inference_mode():
            shapes.add(tuple(host.inputs.vision_only(host.model, prepared.vision).shape))
    assert shapes == {(4, 101, 64)} and 4 * 101 == TINY.cross_attention_tokens


def test_decode_through_the_cache(host):
    [r] = host.measure(MeasureConfig(tiling_rows=1, tiling_cols=2, warmup=0, repeats=1, decode_tokens=2))
    assert r.status == "ok", r.error
    assert r.t_ttft_ms >= r.t_prefill_step_ms > 0 and r.t_tpot_ms > 0


def test_a_size_that_picks_another_tiling_is_a_failed_record(host):
    [failed] = host.measure(MeasureConfig(tiling_rows=1, tiling_cols=3, height=560, width=560, repeats=1))
    assert (failed.status, failed.error_type) == ("failed", "GeometryMismatchError")
    assert "1x3" in failed.error and "gives tiling 1x1" in failed.error


def test_a_processor_unlike_the_scheme_is_a_failed_record_with_both_numbers(host):
    """A processor padding to 2 tiles sends 2 tiles where the scheme (and the model) expect 4: never a row."""
    original = host.inputs
    host.inputs = inputs_for(host.model.config, dataclasses.replace(TINY, name="two", max_image_tiles=2))
    try:
        [failed] = host.measure(MeasureConfig(tiling_rows=1, tiling_cols=2, warmup=0, repeats=1))
    finally:
        host.inputs = original
    assert (failed.status, failed.error_type) == ("failed", "GeometryMismatchError")
    assert "tilings predicts 4 crops, 1 image tokens" in failed.error and "the processor produced 2 crops" in failed.error


def test_schemes_that_cannot_feed_the_model_are_refused():
    config = MODELS["tiny-mllama"].config()
    raw = json.loads(config.to_json_string())
    check_scheme_fits(raw, TINY)  # a config.json dict is read like the config object
    cases = [
        (PROFILES["molmo2"], "'molmo2' is not a padded-canvas scheme"),
        (MLLAMA, "patch_size 14 but the model's vision tower takes 56"),
        (dataclasses.replace(TINY, tile_size=448), "uses 448 px tiles but the model's vision tower takes 560x560"),
        (dataclasses.replace(TINY, max_image_tiles=8), "max_image_tiles 8 but the model's vision tower embeds "
                                                       "max_num_tiles 4"),
    ]
    for scheme, message in cases:
        for cfg in (config, raw):
            with pytest.raises(ValueError, match=message):
                check_scheme_fits(cfg, scheme)
    with pytest.raises(ValueError, match="embeds only 3 supported_aspect_ratios"):
        check_scheme_fits({**raw, "vision_config": {**raw["vision_config"], "supported_aspect_ratios": [[1, 1]] * 3}},
                          TINY)
    with pytest.raises(ValueError, match="patch_size 14 but"):
        ModelHost("tiny-mllama", device="cpu", profile="mllama")


# ----- local checkpoints ----------------------------------------------------------------------------


def _tokenizer():
    """A word-level tokenizer built here (no download): w<i> -> i below the image id, then the specials."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|image|>", "<|python_tag|>", "<|begin_of_text|>"]
    vocab = {f"w{i}": i for i in range(TINY_IMAGE_TOKEN_ID)} | {s: TINY_IMAGE_TOKEN_ID + i for i, s in enumerate(specials)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="w0"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="w0", bos_token="<|begin_of_text|>",
                                   additional_special_tokens=specials)


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory) -> Path:
    """The tiny model saved as real files: with its image processor only, and with a full processor."""
    from transformers import MllamaProcessor

    root = tmp_path_factory.mktemp("tiny-mllama")
    model = build()
    for kind in ("image-only", "full"):
        model.save_pretrained(root / kind)
    mllama_image_processor(TINY).save_pretrained(root / "image-only")
    MllamaProcessor(image_processor=mllama_image_processor(TINY), tokenizer=_tokenizer()).save_pretrained(root / "full")
    return root


def test_local_checkpoint_with_only_an_image_processor(saved_tiny):
    host = ModelHost(str(saved_tiny / "image-only"), device="cpu")
    # the checkpoint's processor (560 px, 4 tiles) and the model's 56 px patches: the tiny preset's numbers
    assert (host.source, host.architecture) == ("pretrained", "mllama")
    assert host.profile == dataclasses.replace(TINY, name="mllama-custom") and host.inputs.processor is None
    [r] = host.measure(MeasureConfig(tiling_rows=2, tiling_cols=1, warmup=0, repeats=1))
    assert r.status == "ok", r.error
    assert (r.crops_actual, r.image_tokens_actual, r.seq_len) == (4, 1, len(PROMPT_IDS) + 1)
    assert json.loads(r.extra)["inputs"] == "image-processor+layout"


def test_local_checkpoint_with_the_full_processor(saved_tiny):
    """transformers' MllamaProcessor writes the ids: <|image|>, then <|begin_of_text|> and the prompt's words."""
    host = ModelHost(str(saved_tiny / "full"), device="cpu")
    assert host.inputs.processor is not None and host.inputs.image_token_id == TINY_IMAGE_TOKEN_ID
    [r] = host.measure(MeasureConfig(tiling_rows=1, tiling_cols=4, warmup=0, repeats=1))
    assert r.status == "ok", r.error
    assert json.loads(r.extra)["inputs"] == "processor"
    assert (r.crops_actual, r.image_tokens_actual, r.sequence_tokens) == (4, 1, 1)
    # <|image|> <|begin_of_text|> then the 5 words of "Describe this image in detail." (unknown: w0 each)
    assert r.seq_len == 2 + len("Describe this image in detail.".split())
