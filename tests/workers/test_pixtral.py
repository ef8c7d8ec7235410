"""Pixtral (LLaVA with a Pixtral tower) and Mistral 3: tiny models measured on the CPU, their token layout
against transformers' own PixtralProcessor and model, the module map, scheme checks, the full-size
architectures on meta, local checkpoints.

Every model is built from a config in code (no download): `tests/workers/conftest.py` sets ``HF_HUB_OFFLINE``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from tilings import PROFILES, geometry, resolution_for
from workers import MODELS, MeasureConfig, ModelHost
from workers.inputs import PROMPT_IDS, synthetic_image
from workers.models import build_on_meta, build_registered, count_parameters, materialize_
from workers.modulemap import resolves, split_paths
from workers.pixtral import MODULE_MAP, TINY_IDS, TINY_VOCAB, check_scheme_fits, image_processor_for, inputs_for
from workers.registry import ARCHITECTURES, detect_architecture
from workers.summary import FORWARD_STAGES as STAGES
from workers.summary import stages_sum
from workers.timers import CpuClock, HookTimer

CPU = torch.device("cpu")
TINY = {"pixtral": "tiny-pixtral", "mistral3": "tiny-mistral3"}
# Token grids measured (rows, cols): Pixtral's tokens are 16 px patches, Mistral 3's 2x2 patches of 14 px.
TARGETS = {"pixtral": [(16, 16), (24, 24)], "mistral3": [(8, 16), (16, 16)]}
IMG, BREAK, END = TINY_IDS["image_token_index"], TINY_IDS["image_break_token_id"], TINY_IDS["image_end_token_id"]


def build(name: str, seed: int = 0) -> torch.nn.Module:
    return build_registered(MODELS[name], device=CPU, dtype=torch.float32, attn_implementation=None, seed=seed)


@pytest.fixture(scope="module")
def hosts() -> dict[str, ModelHost]:
    return {profile: ModelHost(name, device="cpu") for profile, name in TINY.items()}


@pytest.fixture(scope="module")
def swept(hosts) -> dict[tuple[str, tuple[int, int]], list]:
    return {(profile, t): hosts[profile].measure(MeasureConfig(tiling_rows=t[0], tiling_cols=t[1], warmup=0,
                                                               repeats=2))
            for profile, targets in TARGETS.items() for t in targets}


# ----- registry, configs, shapes -----------------------------------------------------------------


def test_registered_specs_name_their_architecture_profile_and_weights():
    got = {n: (MODELS[n].architecture, MODELS[n].profile, MODELS[n].weights)
           for n in ("tiny-pixtral", "tiny-mistral3", "pixtral-12b-arch", "mistral3-24b-arch")}
    assert got == {"tiny-pixtral": ("pixtral", "pixtral", "seeded-init"),
                   "tiny-mistral3": ("mistral3", "mistral3", "seeded-init"),
                   "pixtral-12b-arch": ("pixtral", "pixtral", "meta"),
                   "mistral3-24b-arch": ("mistral3", "mistral3", "meta")}
    assert (ARCHITECTURES["pixtral"].model_class, ARCHITECTURES["pixtral"].model_types) == (
        "LlavaForConditionalGeneration", ("llava",))
    assert (ARCHITECTURES["mistral3"].model_class, ARCHITECTURES["mistral3"].model_types) == (
        "Mistral3ForConditionalGeneration", ("mistral3",))
    for profile, name in TINY.items():
        config = MODELS[name].config()
        assert config.image_token_id == IMG and max(PROMPT_IDS) < IMG < BREAK < END < TINY_VOCAB
        assert config.text_config.vocab_size == TINY_VOCAB
        check_scheme_fits(config, PROFILES[profile])  # each tiny model is built for its preset


@pytest.mark.parametrize("name", list(TINY.values()))
def test_tiny_weights_are_seeded(name):
    a, b, c = build(name, 0), build(name, 0), build(name, 1)
    for key in ("model.language_model.layers.0.self_attn.q_proj.weight", "model.multi_modal_projector.linear_1.weight",
                "model.vision_tower.transformer.layers.0.feed_forward.gate_proj.weight"):
        assert torch.equal(a.state_dict()[key], b.state_dict()[key]), key
        assert not torch.equal(a.state_dict()[key], c.state_dict()[key]), key
    assert not a.training and count_parameters(a) < 1_000_000


def test_the_full_size_architectures_on_meta_have_the_published_shapes():
    pixtral, mistral3 = build_on_meta(MODELS["pixtral-12b-arch"]), build_on_meta(MODELS["mistral3-24b-arch"])
    for model in (pixtral, mistral3):
        assert all(p.device.type == "meta" for p in model.parameters()) and model.dtype == torch.bfloat16
        text, vision = model.model.language_model, model.model.vision_tower
        assert len(text.layers) == 40 and len(vision.transformer.layers) == 24
        attn = text.layers[0].self_attn  # 32 query heads and 8 KV heads of 128 on a 5120 residual
        assert (attn.q_proj.weight.shape, attn.k_proj.weight.shape, attn.o_proj.weight.shape) == (
            (4096, 5120), (1024, 5120), (5120, 4096))
        assert text.embed_tokens.weight.shape == model.lm_head.weight.shape == (131072, 5120)
        assert model.lm_head.weight is not text.embed_tokens.weight
        assert vision.transformer.layers[0].feed_forward.gate_proj.weight.shape == (4096, 1024)
        assert 0.40e9 < count_parameters(vision) < 0.41e9  # the "400M parameter vision encoder"
    assert pixtral.model.vision_tower.patch_conv.weight.shape == (1024, 3, 16, 16)
    assert mistral3.model.vision_tower.patch_conv.weight.shape == (1024, 3, 14, 14)
    assert pixtral.model.language_model.layers[0].mlp.up_proj.weight.shape == (14336, 5120)  # Mistral-Nemo
    assert mistral3.model.language_model.layers[0].mlp.up_proj.weight.shape == (32768, 5120)
    assert mistral3.model.multi_modal_projector.patch_merger.merging_layer.weight.shape == (1024, 4096)
    assert mistral3.model.multi_modal_projector.linear_1.bias is None  # multimodal_projector_bias false
    assert pixtral.model.multi_modal_projector.linear_1.bias is not None  # Pixtral's adapter has biases
    assert count_parameters(pixtral) == 12_682_739_712  # "12B parameter decoder + 400M vision encoder"
    assert count_parameters(mistral3) == 24_011_361_280  # "24 billion parameters"
    assert 2 * count_parameters(mistral3) < 80e9 * 0.65  # bf16 weights: 48 GB, one 80 GB GPU holds them
    check_scheme_fits(pixtral.config, PROFILES["pixtral"])
    check_scheme_fits(mistral3.config, PROFILES["mistral3"])


@pytest.mark.parametrize("name", list(TINY.values()))
def test_materialize_gives_a_working_model(name):
    """The meta-device path the full-size models take: every buffer (the 2-D RoPE tables too) refilled."""
    model = materialize_(build_on_meta(MODELS[name], dtype=torch.float32), CPU, seed=3).eval()
    reference = build(name)
    for key, buffer in reference.named_buffers():
        assert torch.equal(dict(model.named_buffers())[key], buffer), key
    scheme = PROFILES[name.removeprefix("tiny-")]
    prepared = inputs_for(model.config, scheme).process(synthetic_image(*resolution_for((2, 3), scheme), 0))
    with torch.inference_mode():
        out = model(**prepared.forward, logits_to_keep=1)
    assert out.logits.shape == (1, 1, TINY_VOCAB) and torch.isfinite(out.logits).all()


# ----- the module map and the hooks --------------------------------------------------------------


def test_the_map_fits_these_towers_only(hosts):
    """Molmo2 and LLaVA-OneVision name their tower, projector, LLM blocks and head alike; the Pixtral block list
    (`transformer.layers`) tells them apart."""
    required = [p for stage in MODULE_MAP.required for p in split_paths(getattr(MODULE_MAP, stage))]
    for host in hosts.values():
        assert all(resolves(host.model, p) for p in required)
    for other in ("tiny-molmo2", "tiny-llava-onevision"):
        model = build(other)
        assert [p for p in required if not resolves(model, p)] == ["model.vision_tower.transformer.layers"]
    # One map for both: detection names the first architecture that fits, a loaded model knows its own.
    assert detect_architecture(hosts["pixtral"].model) == "pixtral"
    assert ARCHITECTURES["mistral3"].module_map is ARCHITECTURES["pixtral"].module_map is MODULE_MAP


@pytest.mark.parametrize("profile", list(TINY))
def test_hooks_time_the_tower_then_the_projector_then_the_text(hosts, profile):
    host = hosts[profile]
    model = host.model
    assert host.architecture == profile
    assert host.modules.vision == [model.model.vision_tower]
    assert host.modules.projector == [model.model.multi_modal_projector]
    assert host.modules.llm_blocks == list(model.model.language_model.layers) and len(host.modules.llm_blocks) == 2
    assert host.modules.lm_head == [model.lm_head]
    assert host.modules.vision_blocks == list(model.model.vision_tower.transformer.layers)
    assert hasattr(model.model.multi_modal_projector, "patch_merger") == (profile == "mistral3")
    prepared = host.inputs.process(synthetic_image(*resolution_for((3, 5), profile), 0))
    timer = HookTimer(CpuClock(), host.modules)
    with timer.attached(), torch.inference_mode():
        model(**prepared.forward, logits_to_keep=1)
    assert [stage for stage, kind in timer.log if kind == "start"] == ["vision", "projector", "llm_prefill", "lm_head"]
    assert timer.log[1] == ("vision", "end") and timer.log[-1] == ("lm_head", "end")


# ----- inputs against transformers' own processor and model ---------------------------------------


def _tokenizer():
    """A word-level tokenizer built here (no download), [IMG], [IMG_BREAK] and [IMG_END] at the tiny models' ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = {"[IMG]": IMG, "[IMG_BREAK]": BREAK, "[IMG_END]": END, "[INST]": 1003, "[/INST]": 1004}
    vocab = {f"w{i}": i for i in range(IMG)} | specials
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="w0"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="w0", bos_token="w1", eos_token="w2",
                                   additional_special_tokens=list(specials))


def _processor(profile: str, image_processor=None):
    """transformers' PixtralProcessor as a checkpoint ships it: its image processor states the vision patch."""
    from transformers import PixtralImageProcessor, PixtralProcessor

    scheme = PROFILES[profile]
    if image_processor is None:
        image_processor = PixtralImageProcessor(patch_size=scheme.patch_size,
                                                size={"longest_edge": scheme.longest_edge})
    return PixtralProcessor(image_processor=image_processor, tokenizer=_tokenizer(), chat_template=CHAT_TEMPLATE,
                            **scheme.pixtral_processor_kwargs())


CHAT_TEMPLATE = ("{{ bos_token }}{% for message in messages %}[INST]{% for c in message['content'] %}"
                 "{% if c['type'] == 'image' %}[IMG]{% else %} {{ c['text'] }}{% endif %}{% endfor %}[/INST]{% endfor %}")


@pytest.mark.parametrize("profile", list(TINY))
@pytest.mark.parametrize("size", [(97, 333), (1100, 700), (2, 1500)])
def test_layout_equals_the_processor_and_the_model_features(hosts, profile, size):
    """Off-target sizes (rounded up, scaled down, thin): the builder's span is PixtralProcessor's input_ids
    span, its counts are the prediction, and the model makes exactly one feature per [IMG]."""
    host = hosts[profile]
    predicted = geometry(*size, profile)
    image = synthetic_image(*size, 1)
    prepared = host.inputs.process(image)
    assert prepared.grids == tuple(predicted.tiling)
    assert (prepared.crops, prepared.image_tokens, prepared.sequence_tokens) == (
        1, predicted.image_tokens, predicted.sequence_tokens)
    ids = prepared.forward["input_ids"][0].tolist()
    assert ids[0] == PROMPT_IDS[0] and ids[-len(PROMPT_IDS) + 1:] == list(PROMPT_IDS[1:])
    out = _processor(profile)(text=["[IMG]"], images=[image], return_tensors="pt")
    assert ids[1:-len(PROMPT_IDS) + 1] == out["input_ids"][0].tolist()  # the same span, id for id
    assert torch.equal(prepared.vision["pixel_values"], out["pixel_values"])
    assert torch.equal(prepared.vision["image_sizes"], out["image_sizes"])
    with torch.inference_mode():
        features = host.model.model.get_image_features(**prepared.vision).pooler_output
    assert [f.shape[0] for f in features] == [predicted.image_tokens]


def test_vision_only_is_the_tower_and_the_projector(hosts):
    host = hosts["mistral3"]
    prepared = host.inputs.process(synthetic_image(224, 448, 0))
    with torch.inference_mode():
        out = host.inputs.vision_only(host.model, prepared.vision)
    assert out.last_hidden_state.shape == (1, 16 * 32, 64)  # the tower: one feature per 14 px patch
    assert [f.shape for f in out.pooler_output] == [(8 * 16, 64)]  # merged 2x2 and projected: one per token


# ----- measurements ----------------------------------------------------------------------------


def test_measured_counts_equal_the_prediction(swept):
    for (profile, (rows, cols)), records in swept.items():
        height, width = resolution_for((rows, cols), profile)
        factor = PROFILES[profile].factor
        assert (height, width) == (rows * factor, cols * factor)
        predicted = geometry(height, width, profile)
        assert [r.repeat for r in records] == [0, 1]
        for r in records:
            assert r.status == "ok", r.error
            assert (r.crops, r.image_tokens, r.sequence_tokens, r.encoder_patches) == (
                1, rows * cols, rows * (cols + 1), predicted.encoder_patches)
            assert (r.crops_actual, r.image_tokens_actual) == (r.crops, r.image_tokens)
            assert r.seq_len == r.sequence_tokens + len(PROMPT_IDS)
            assert json.loads(r.extra)["inputs"] == "image-processor+layout"
            assert json.loads(r.extra)["architecture"] == profile


def test_stages_are_positive_nest_in_the_total_and_cover_it(swept):
    for records in swept.values():
        for r in records:
            assert all(getattr(r, s) > 0 for s in STAGES), [getattr(r, s) for s in STAGES]
            assert (r.vision_calls, r.projector_calls) == (1, 1)
            assert stages_sum(r) <= r.t_total_ms
            assert r.t_vision_only_ms > 0 and r.t_prefill_step_ms > 0
    # The prefill step is the vision path plus the LLM: over all configs (one repeat alone is noise where
    # Mistral 3's 1,024-patch tower is 90% of the step).
    every = [r for records in swept.values() for r in records]
    assert sum(r.t_prefill_step_ms for r in every) > sum(r.t_vision_only_ms for r in every)
    # The untimed glue (embedding, feature scatter, masks) is a fixed ~2 ms here: at the larger grid
    # (Pixtral 576 tokens, Mistral 3 1,024 patches) the stages cover the forward.
    for profile, targets in TARGETS.items():
        records = swept[(profile, targets[-1])]
        coverage = max(stages_sum(r) / r.t_total_ms for r in records)
        assert coverage >= 0.85, (profile, targets[-1], coverage)


def test_decode_through_the_cache(hosts):
    [r] = hosts["pixtral"].measure(MeasureConfig(tiling_rows=2, tiling_cols=2, warmup=0, repeats=1, decode_tokens=2))
    assert r.status == "ok", r.error
    assert r.t_ttft_ms >= r.t_prefill_step_ms > 0 and r.t_tpot_ms > 0


def test_a_processor_unlike_the_scheme_is_a_failed_record_with_both_numbers(hosts):
    """A processor capped at 512 px scales the 512x768 image of 32x48 tokens to 341x512 px: never a row."""
    host = hosts["pixtral"]
    original = host.inputs
    host.inputs = inputs_for(host.model.config, replace(PROFILES["pixtral"], longest_edge=512))
    try:
        [failed] = host.measure(MeasureConfig(tiling_rows=32, tiling_cols=48, warmup=0, repeats=1))
    finally:
        host.inputs = original
    assert (failed.status, failed.error_type) == ("failed", "GeometryMismatchError")
    assert "tilings predicts 1 crops, 1536 image tokens and 1568 sequence tokens" in failed.error
    assert "the processor produced 1 crops, 704 image tokens and 726 image sequence tokens" in failed.error  # 22x32


# ----- schemes the model takes or refuses --------------------------------------------------------


def test_schemes_that_cannot_feed_the_model_are_refused():
    pixtral, mistral3 = MODELS["tiny-pixtral"].config(), MODELS["tiny-mistral3"].config()
    raw = json.loads(mistral3.to_json_string())  # a local checkpoint's config.json, read as plain JSON
    check_scheme_fits(raw, PROFILES["mistral3"])
    cases = [
        (pixtral, PROFILES["molmo2"], "'molmo2' is not a native-resolution scheme"),
        (pixtral, PROFILES["mistral3"], r"patch_size 14 but the model's vision tower uses 16 px patches; .*pixtral"),
        (mistral3, PROFILES["pixtral"], "patch_size 16 but the model's vision tower uses 14 px patches"),
        (raw, replace(PROFILES["mistral3"], merge_size=1), "merges 1x1 patches into a token but the model merges 2x2"),
        (pixtral, replace(PROFILES["pixtral"], merge_size=2), "merges 2x2 patches into a token but the model merges 1x1"),
    ]
    for config, scheme, message in cases:
        with pytest.raises(ValueError, match=message):
            check_scheme_fits(config, scheme)
    llava = json.loads(pixtral.to_json_string())
    with pytest.raises(ValueError, match="vision tower is 'clip_vision_model', not 'pixtral'"):
        check_scheme_fits({**llava, "vision_config": {"model_type": "clip_vision_model", "patch_size": 16}},
                          PROFILES["pixtral"])
    with pytest.raises(ValueError, match="vision_feature_select_strategy is 'default'"):
        check_scheme_fits({k: v for k, v in llava.items() if k != "vision_feature_select_strategy"},
                          PROFILES["pixtral"])
    with pytest.raises(ValueError, match="patch_size 16 but the model's vision tower uses 14"):
        ModelHost("tiny-mistral3", device="cpu", profile="pixtral")


# ----- checkpoints by path -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """The tiny models saved as real files: Pixtral with its image processor only, Mistral 3 with a checkpoint-like
    image processor (it states the 14 px patch, not the merge) and then with a full processor."""
    root = tmp_path_factory.mktemp("pixtral")
    build("tiny-pixtral").save_pretrained(root / "pixtral")
    image_processor_for(PROFILES["pixtral"]).save_pretrained(root / "pixtral")
    mistral3 = build("tiny-mistral3")
    mistral3.save_pretrained(root / "mistral3")
    _processor("mistral3").image_processor.save_pretrained(root / "mistral3")
    mistral3.save_pretrained(root / "full")
    _processor("mistral3").save_pretrained(root / "full")
    return root


@pytest.mark.parametrize("profile", list(TINY))
def test_local_checkpoint_with_only_an_image_processor(saved, profile):
    host = ModelHost(str(saved / profile), device="cpu")
    assert (host.source, host.architecture, host.inputs.processor) == ("pretrained", profile, None)
    assert host.profile == PROFILES[profile]  # Mistral 3: the 14 px patch from the file, the merge from the model
    [r] = host.measure(MeasureConfig(tiling_rows=4, tiling_cols=6, warmup=0, repeats=1))
    assert r.status == "ok", r.error
    assert json.loads(r.extra)["inputs"] == "image-processor+layout"
    assert (r.image_tokens_actual, r.sequence_tokens) == (24, 28)


def test_local_checkpoint_with_the_full_processor(saved):
    """transformers' processor (tokenizer and chat template) writes the tokens; its counts are the layout's."""
    host = ModelHost(str(saved / "full"), device="cpu")
    assert host.inputs.processor is not None and host.profile == PROFILES["mistral3"]
    [r] = host.measure(MeasureConfig(tiling_rows=4, tiling_cols=6, warmup=0, repeats=1))
    assert r.status == "ok", r.error
    assert json.loads(r.extra)["inputs"] == "processor"
    assert (r.image_tokens_actual, r.sequence_tokens) == (24, 28)
    # w1 [INST] [IMG]... [/INST]: the template's words around the image's 28 tokens
    assert r.seq_len == 28 + 3 + len("Describe this image in detail.".split())
    image = synthetic_image(300, 500, 2)
    assert host.inputs.process(image).forward["input_ids"][0].tolist().count(IMG) == \
        inputs_for(host.model.config, PROFILES["mistral3"]).process(image).image_tokens == \
        geometry(300, 500, "mistral3").image_tokens
