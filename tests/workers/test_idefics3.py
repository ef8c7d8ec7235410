"""Idefics3 and SmolVLM (CPU): the tiny models measured end to end with their processor overrides, the token layout
against transformers' own processor and model, the module map, scheme checks, the full-size architectures on meta,
local checkpoints."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from tilings import PROFILES, Tiling
from tilings.overrides import point_geometry, processor_overrides
from workers import MODELS, MeasureConfig, ModelHost, Record
from workers.idefics3 import (
    FAKE_ID,
    GLOBAL_ID,
    MODULE_MAP,
    NEWLINE_ID,
    NEWLINE_PAIR_IDS,
    ROW_COL_BASE,
    TINY_IMAGE_TOKEN_ID,
    check_scheme_fits,
    image_processor_for,
    layout_ids,
    layout_text,
)
from workers.inputs import FORCED_TOKEN_IDS, PROMPT_IDS, synthetic_image
from workers.models import build_on_meta, build_registered, count_parameters, materialize_
from workers.modulemap import resolves, split_paths
from workers.registry import ARCHITECTURES, detect_architecture
from workers.summary import FORWARD_STAGES as STAGES
from workers.summary import stages_sum
from workers.timers import CpuClock, HookTimer

CPU = torch.device("cpu")
IDEFICS3, SMOLVLM = PROFILES["idefics3"], PROFILES["smolvlm"]
# (crops, image tokens, sequence tokens) of the targets, worked out from the processor's layout: tiles of
# (fake, row_col, 169), a "\n" per row, the last merged with the global image's "\n", then fake, global, 169, fake.
EXACT = {(1, 2): (3, 507, 2 * 171 + 1 + 172), (2, 1): (3, 507, 2 * 171 + 2 + 172), (1, 1): (1, 169, 172)}


@pytest.fixture(scope="module")
def host() -> ModelHost:
    return ModelHost("tiny-idefics3", device="cpu")


@pytest.fixture(scope="module")
def swept(host) -> dict[tuple[int, int], list[Record]]:
    return {t: host.measure(MeasureConfig(tiling_rows=t[0], tiling_cols=t[1], warmup=0, repeats=2)) for t in EXACT}


def test_registry_holds_both_families():
    for name, model_class, model_type in (("idefics3", "Idefics3ForConditionalGeneration", "idefics3"),
                                          ("smolvlm", "SmolVLMForConditionalGeneration", "smolvlm")):
        arch = ARCHITECTURES[name]
        assert (arch.model_class, arch.model_types, arch.default_profile, arch.module_map) == (
            model_class, (model_type,), name, MODULE_MAP)
    assert {n: (MODELS[n].architecture, MODELS[n].profile, MODELS[n].weights) for n in (
        "tiny-idefics3", "tiny-smolvlm", "idefics3-8b-arch", "smolvlm2-2.2b-arch")} == {
        "tiny-idefics3": ("idefics3", "idefics3", "seeded-init"), "tiny-smolvlm": ("smolvlm", "smolvlm", "seeded-init"),
        "idefics3-8b-arch": ("idefics3", "idefics3", "meta"), "smolvlm2-2.2b-arch": ("smolvlm", "smolvlm", "meta")}
    for name, scheme in (("tiny-idefics3", IDEFICS3), ("tiny-smolvlm", SMOLVLM)):
        config = MODELS[name].config()
        assert config.image_token_id == TINY_IMAGE_TOKEN_ID < config.text_config.vocab_size
        check_scheme_fits(config, scheme)  # the tiny models are built for the presets
    # the stand-ins for newlines and tags: apart from the prompt, the forced decode ids and the image token
    stand_ins = {NEWLINE_ID, *NEWLINE_PAIR_IDS[1], FAKE_ID, GLOBAL_ID, *range(ROW_COL_BASE, ROW_COL_BASE + 36)}
    assert len(stand_ins) == 40 and not stand_ins & {*PROMPT_IDS, *FORCED_TOKEN_IDS, TINY_IMAGE_TOKEN_ID}
    assert max(stand_ins) < TINY_IMAGE_TOKEN_ID


def test_records_carry_the_override_and_the_processors_counts(swept):
    for (rows, cols), records in swept.items():
        target = Tiling(rows, cols)
        size = (364 * rows, 364 * cols)
        predicted = point_geometry(IDEFICS3, target, *size)
        assert (predicted.crops, predicted.image_tokens, predicted.sequence_tokens) == EXACT[(rows, cols)]
        assert [r.repeat for r in records] == [0, 1]
        for r in records:
            assert r.status == "ok", r.error
            assert (r.height, r.width) == size
            assert json.loads(r.processor_overrides) == {"size": {"longest_edge": 364 * max(rows, cols)}}
            # the override reached the processor: it produced the predicted crops, not the default edge's 4-tile grid
            assert (r.crops_actual, r.image_tokens_actual) == (r.crops, r.image_tokens) == EXACT[(rows, cols)][:2]
            assert r.sequence_tokens == EXACT[(rows, cols)][2]
            assert r.seq_len == r.sequence_tokens + len(PROMPT_IDS)  # the image's span inside the prompt ids
            assert json.loads(r.extra)["inputs"] == "image-processor+layout"
            assert r.encoder_patches == r.crops * 26 * 26


def test_records_fit_the_arrow_schema_with_their_overrides(swept):
    schema = pytest.importorskip("store.schema")
    table = schema.records_to_table([r for records in swept.values() for r in records])
    assert table.schema == schema.SCHEMA and table.num_rows == 6
    assert set(table.column("processor_overrides").to_pylist()) == {
        '{"size":{"longest_edge":728}}', '{"size":{"longest_edge":364}}'}


def test_stages_are_positive_nested_and_cover_the_forward(swept):
    for records in swept.values():
        for r in records:
            assert all(getattr(r, s) > 0 for s in STAGES), [getattr(r, s) for s in STAGES]
            assert (r.vision_calls, r.projector_calls) == (1, 1)
            assert stages_sum(r) <= r.t_total_ms
            assert r.t_vision_only_ms > 0 and r.t_prefill_step_ms > 0
    # The prefill step is the vision path plus the LLM: over all configs (one repeat alone is noise where the
    # tower is most of the step).
    every = [r for records in swept.values() for r in records]
    assert sum(r.t_prefill_step_ms for r in every) > sum(r.t_vision_only_ms for r in every)
    coverage = max(stages_sum(r) / r.t_total_ms
                                 for records in swept.values() for r in records)
    assert coverage >= 0.85, coverage


def test_without_its_override_the_size_gives_another_grid_and_no_row(host):
    """An explicit empty override: the processor's default edge turns the 1x2 image into 2x4 (9 crops); a wrong
    one into another grid. Neither becomes a row."""
    [failed] = host.measure(MeasureConfig(tiling_rows=1, tiling_cols=2, warmup=0, repeats=1, processor_overrides={}))
    assert (failed.status, failed.error_type) == ("failed", "GeometryMismatchError")
    assert "gives tiling 2x4, not the configured one" in failed.error and failed.processor_overrides is None
    [wrong] = host.measure(MeasureConfig(tiling_rows=1, tiling_cols=2, warmup=0, repeats=1,
                                         processor_overrides={"size": {"longest_edge": 1092}}))
    # 364x728 at edge 1092: 1092 wide, 546 high, so 728 high after the tile rounding: 2x3
    assert wrong.status == "failed" and "gives tiling 2x3" in wrong.error
    assert json.loads(wrong.processor_overrides) == {"size": {"longest_edge": 1092}}


def test_the_processors_own_layout_and_the_model_agree_with_the_prediction(host):
    """Idefics3Processor.replace_image_token (a real processor, built with a tokenizer made here) writes the text the
    builder lays out; the model makes as many features as it has <image> tokens."""
    from transformers import Idefics3ImageProcessor, Idefics3Processor

    proc = Idefics3Processor(image_processor=Idefics3ImageProcessor(), tokenizer=_tokenizer(), image_seq_len=169)
    for rows, cols in ((0, 0), (1, 2), (2, 3), (6, 6)):
        text = proc.replace_image_token({"rows": [[rows]], "cols": [[cols]]}, 0)
        assert layout_text("idefics3", rows, cols, 169) == text
        grid = Tiling(rows, cols) if rows else Tiling(1, 1)
        ids = layout_ids(text, TINY_IMAGE_TOKEN_ID, 1)
        assert len(ids) == IDEFICS3.target_geometry(grid).sequence_tokens
        assert len(_tokenizer()(text, add_special_tokens=False)["input_ids"]) == len(ids)  # one token per tag
        assert len(layout_ids(text, TINY_IMAGE_TOKEN_ID, 2)) == len(ids) + (1 if rows else 0)
    for target in (Tiling(2, 3), Tiling(3, 1)):
        builder = host.inputs.with_processor_overrides(processor_overrides(IDEFICS3, target))
        prepared = builder.process(synthetic_image(*IDEFICS3.resolution_for(target), 1))
        assert prepared.grids == tuple(target)
        with torch.inference_mode():
            features = host.model.model.get_image_features(**prepared.vision).pooler_output
        assert [f.shape[0] for f in features] == [prepared.image_tokens] == [169 * (target.cells + 1)]


def test_smolvlm_measures_with_its_own_processor_and_layout():
    smol = ModelHost("tiny-smolvlm", device="cpu")
    [r] = smol.measure(MeasureConfig(tiling_rows=2, tiling_cols=1, warmup=0, repeats=1))
    assert r.status == "ok", r.error
    assert (r.profile, r.processor_overrides) == ("smolvlm", '{"size":{"longest_edge":768}}')
    assert (r.crops_actual, r.image_tokens_actual, r.sequence_tokens) == (3, 3 * 81, 2 * 83 + 2 + 84)
    assert type(smol.inputs.image_processor).__name__ == "SmolVLMImageProcessor"
    assert detect_architecture(smol.model) == "smolvlm"  # the same module paths: told apart by the model_type
    from transformers.models.smolvlm.processing_smolvlm import get_image_prompt_string

    assert layout_text("smolvlm", 2, 1, 81) == get_image_prompt_string(
        2, 1, 81, fake_token_around_image="<fake_token_around_image>", image_token="<image>",
        global_image_token="<global-img>")


def test_hooks_fire_in_forward_order_and_blocks_resolve(host):
    model = host.model
    assert host.modules.vision == [model.model.vision_model]
    assert host.modules.projector == [model.model.connector]
    assert host.modules.llm_blocks == list(model.model.text_model.layers) and len(host.modules.llm_blocks) == 2
    assert host.modules.lm_head == [model.lm_head]
    assert host.modules.vision_blocks == list(model.model.vision_model.encoder.layers)
    prepared = host.inputs.with_processor_overrides({"size": {"longest_edge": 728}}).process(
        synthetic_image(364, 728, 0))
    timer = HookTimer(CpuClock(), host.modules)
    with timer.attached(), torch.inference_mode():
        model(**prepared.forward, logits_to_keep=1)
    assert [stage for stage, kind in timer.log if kind == "start"] == ["vision", "projector", "llm_prefill", "lm_head"]
    assert timer.log[1] == ("vision", "end") and timer.log[-1] == ("lm_head", "end")
    assert detect_architecture(model) == "idefics3"


def test_the_map_fits_idefics3_only(host):
    llava = build_registered(MODELS["tiny-llava-onevision"], device=CPU, dtype=torch.float32,
                             attn_implementation=None, seed=0)
    required = [p for stage in MODULE_MAP.required for p in split_paths(getattr(MODULE_MAP, stage))]
    assert all(resolves(host.model, p) for p in required)
    assert not any(resolves(llava, p) for p in required[:3])


def test_decode_through_the_cache(host):
    [r] = host.measure(MeasureConfig(tiling_rows=1, tiling_cols=1, warmup=0, repeats=1, decode_tokens=2))
    assert r.status == "ok", r.error
    assert r.t_ttft_ms >= r.t_prefill_step_ms > 0 and r.t_tpot_ms > 0


def test_schemes_that_cannot_feed_the_model_are_refused():
    config = MODELS["tiny-idefics3"].config()
    raw = json.loads(config.to_json_string())
    check_scheme_fits(raw, IDEFICS3)  # a config.json dict is read like the config object
    cases = [
        (PROFILES["llava-onevision"], "'llava-onevision' is not a longest-edge scheme"),
        (SMOLVLM, "cuts 384 px tiles but the model's vision tower takes 364x364"),
        (replace(IDEFICS3, name="p16", patch_size=16), "patch_size 16 but the model's vision tower uses 14"),
        (replace(IDEFICS3, name="t81", tokens_per_tile=81), "writes 81 <image> tokens a crop but the model makes 169"),
    ]
    for scheme, message in cases:
        for cfg in (config, raw):
            with pytest.raises(ValueError, match=message):
                check_scheme_fits(cfg, scheme)
    with pytest.raises(ValueError, match="cannot fold"):
        check_scheme_fits({**raw, "scale_factor": 4}, IDEFICS3)
    with pytest.raises(ValueError, match="not a longest-edge scheme"):
        ModelHost("tiny-idefics3", device="cpu", profile="internvl3")


@pytest.mark.parametrize("name, params, shapes", [
    # vision 27 x 1152 / 4304 at 364 px (26 x 26 = 676 positions); Llama 3.1 8B with 8 KV heads; 128259 tokens
    ("idefics3-8b-arch", 8.46e9, {"layers": (27, 32), "positions": 676, "kv": 1024, "mlp": 14336,
                                  "embed": (128259, 4096), "connector": (4096, 1152 * 4)}),
    # vision 27 x 1152 at 384 px (27 x 27 = 729 positions); SmolLM2-1.7B, 32 KV heads; 49280 tokens; shuffle 3x3
    ("smolvlm2-2.2b-arch", 2.25e9, {"layers": (27, 24), "positions": 729, "kv": 2048, "mlp": 8192,
                                    "embed": (49280, 2048), "connector": (2048, 1152 * 9)}),
])
def test_the_full_size_architectures_on_meta_have_the_published_shapes(name, params, shapes):
    model = build_on_meta(MODELS[name])
    assert all(p.device.type == "meta" for p in model.parameters()) and model.dtype == torch.bfloat16
    assert params * 0.99 < count_parameters(model) < params * 1.01, count_parameters(model)
    vision, text = model.model.vision_model, model.model.text_model
    assert (len(vision.encoder.layers), len(text.layers)) == shapes["layers"]
    assert vision.embeddings.position_embedding.weight.shape == (shapes["positions"], 1152)
    assert vision.encoder.layers[0].mlp.fc1.weight.shape == (4304, 1152)
    assert text.layers[0].self_attn.k_proj.weight.shape[0] == shapes["kv"]
    assert text.layers[0].mlp.up_proj.weight.shape[0] == shapes["mlp"]
    assert text.embed_tokens.weight.shape == model.lm_head.weight.shape == shapes["embed"]
    assert model.lm_head.weight is not text.embed_tokens.weight
    assert model.model.connector.modality_projection.proj.weight.shape == shapes["connector"]
    check_scheme_fits(model.config, PROFILES[MODELS[name].profile])


def test_tiny_weights_are_seeded_and_materialize_fills_every_buffer():
    spec = MODELS["tiny-idefics3"]
    a, b, c = (build_registered(spec, device=CPU, dtype=torch.float32, attn_implementation=None, seed=s)
               for s in (0, 0, 1))
    key = "model.vision_model.encoder.layers.0.mlp.fc1.weight"
    assert torch.equal(a.state_dict()[key], b.state_dict()[key]) and not torch.equal(a.state_dict()[key],
                                                                                     c.state_dict()[key])
    assert not a.training and count_parameters(a) < 1_000_000
    model = materialize_(build_on_meta(spec, dtype=torch.float32), CPU, seed=3).eval()
    assert torch.equal(model.model.text_model.rotary_emb.inv_freq, a.model.text_model.rotary_emb.inv_freq)


# ----- local checkpoints ------------------------------------------------------------------------------
_SPECIALS = {"<image>": TINY_IMAGE_TOKEN_ID, "<fake_token_around_image>": 1001, "<global-img>": 1002,
             "<end_of_utterance>": 1003}


def _tokenizer():
    """A word-level tokenizer built here (no download): the image tags as special tokens inside the tiny vocabulary
    (``<image>`` at the model's id), ``"\\n"`` and ``"\\n\\n"`` as single tokens (as Llama 3's)."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    row_col = [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
    vocab = {f"w{i}": i for i in range(950)} | {t: 950 + k for k, t in enumerate([*row_col, "\n\n", "\n"])}
    vocab |= _SPECIALS
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="w0"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.add_tokens([AddedToken(n, normalized=False) for n in ("\n\n", "\n")])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="w0",
                                   additional_special_tokens=[*_SPECIALS, *row_col])


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory) -> Path:
    """The tiny Idefics3 saved as real files: with its image processor only, and with a full processor."""
    from transformers import Idefics3Processor

    root = tmp_path_factory.mktemp("tiny-idefics3")
    model = build_registered(MODELS["tiny-idefics3"], device=CPU, dtype=torch.float32, attn_implementation=None,
                             seed=0)
    for kind in ("image-only", "full"):
        model.save_pretrained(root / kind)
    image_processor_for("idefics3", IDEFICS3).save_pretrained(root / "image-only")
    Idefics3Processor(image_processor=image_processor_for("idefics3", IDEFICS3), tokenizer=_tokenizer(),
                      **IDEFICS3.text_processor_kwargs()).save_pretrained(root / "full")
    return root


def test_local_checkpoint_with_only_an_image_processor(saved_tiny):
    host = ModelHost(str(saved_tiny / "image-only"), device="cpu")
    assert (host.source, host.architecture, host.profile) == ("pretrained", "idefics3", IDEFICS3)
    assert host.inputs.processor is None
    [r] = host.measure(MeasureConfig(tiling_rows=2, tiling_cols=1, warmup=0, repeats=1))
    assert r.status == "ok", r.error
    assert (r.crops_actual, r.image_tokens_actual, r.sequence_tokens) == EXACT[(2, 1)]


def test_local_checkpoint_with_the_full_processor_counts_with_its_tokenizer(saved_tiny):
    """transformers' processor and the checkpoint's tokenizer write the tokens; the span they make (the processor's
    own mm_token_type_ids) is the predicted sequence count, with the override applied at the call."""
    host = ModelHost(str(saved_tiny / "full"), device="cpu")
    assert host.inputs.processor is not None and host.profile == IDEFICS3
    [r] = host.measure(MeasureConfig(tiling_rows=1, tiling_cols=2, warmup=0, repeats=1))
    assert r.status == "ok", r.error
    assert json.loads(r.extra)["inputs"] == "processor"
    assert (r.crops_actual, r.image_tokens_actual, r.sequence_tokens) == EXACT[(1, 2)]
    # "User:" is one unknown word and the prompt's five words follow the image: 6 tokens around the span
    assert r.seq_len == r.sequence_tokens + 6
