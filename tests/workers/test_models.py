"""The model registry and loading: tiny models, full-size architectures on meta, local paths, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tilings import PROFILES
from workers import MODELS, MeasureConfig, ModelHost
from workers.loading import resolve_profile
from workers.models import (
    build_on_meta,
    build_registered,
    count_parameters,
    materialize_,
    resolve_device,
    resolve_dtype,
)

CPU = torch.device("cpu")


def test_registry_holds_the_molmo_specs_with_their_profiles():
    molmo = {name: spec.profile for name, spec in MODELS.items() if spec.architecture == "molmo2"}
    assert molmo == {
        "tiny-molmo2": "molmo2", "tiny-molmo-v1": "molmo-v1", "molmo2-4b-arch": "molmo2", "molmo2-8b-arch": "molmo2"}
    # every registered model names a registered architecture and a tilings profile
    from tilings import PROFILES
    from workers.registry import ARCHITECTURES

    assert all(spec.architecture in ARCHITECTURES and spec.profile in PROFILES for spec in MODELS.values())
    assert MODELS["molmo2-8b-arch"].weights == "meta" and MODELS["tiny-molmo2"].weights == "seeded-init"


def test_tiny_weights_are_seeded():
    a = build_registered(MODELS["tiny-molmo2"], device=CPU, dtype=torch.float32, attn_implementation=None, seed=0)
    b = build_registered(MODELS["tiny-molmo2"], device=CPU, dtype=torch.float32, attn_implementation=None, seed=0)
    c = build_registered(MODELS["tiny-molmo2"], device=CPU, dtype=torch.float32, attn_implementation=None, seed=1)
    key = "model.language_model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(a.state_dict()[key], b.state_dict()[key])
    assert not torch.equal(a.state_dict()[key], c.state_dict()[key])
    assert a.config.image_col_id == 1003 and not a.training


@pytest.mark.parametrize(("name", "low", "high"), [("molmo2-4b-arch", 4.0e9, 5.2e9), ("molmo2-8b-arch", 8.0e9, 9.5e9)])
def test_full_size_architectures_build_on_meta(name, low, high):
    model = build_on_meta(MODELS[name])
    assert all(p.device.type == "meta" for p in model.parameters())
    assert model.dtype == torch.bfloat16
    assert low < count_parameters(model) < high
    text = model.config.text_config
    assert (text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads) == (36, 32, 8)
    assert model.config.vision_config.num_hidden_layers == 25


def test_materialize_gives_a_working_model_without_the_library_init():
    spec = MODELS["tiny-molmo2"]
    model = materialize_(build_on_meta(spec, dtype=torch.float32), CPU, seed=3).eval()
    reference = build_registered(spec, device=CPU, dtype=torch.float32, attn_implementation=None, seed=0)
    for name, buffer in reference.named_buffers():  # rotary tables recomputed, not left empty
        assert torch.equal(model.get_buffer(name), buffer), name
    norm = model.model.language_model.norm.weight
    assert torch.equal(norm, torch.ones_like(norm))
    weight = model.model.language_model.layers[0].mlp.up_proj.weight
    assert 0.015 < weight.std().item() < 0.025
    from workers.inputs import synthetic_image
    from workers.loading import load

    inputs = load("tiny-molmo2", device=CPU, dtype=torch.float32).inputs
    prepared = inputs.process(synthetic_image(378, 378, 0))
    with torch.inference_mode():
        logits = model(**prepared.forward, logits_to_keep=1).logits
    assert torch.isfinite(logits).all()


def test_device_and_dtype_defaults_and_errors():
    assert resolve_dtype(None, CPU) == torch.float32
    assert resolve_dtype(None, torch.device("cuda", 0)) == torch.bfloat16
    assert resolve_dtype("bf16", CPU) == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype 'int8'; use one of"):
        resolve_dtype("int8", CPU)
    if not torch.cuda.is_available():
        assert resolve_device(None) == CPU
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")


def test_bad_names_and_options_are_value_errors():
    with pytest.raises(ValueError, match="neither a registered model .*tiny-molmo2"):
        ModelHost("no-such-model-here", device="cpu")
    with pytest.raises(ValueError, match="--revision 'main' applies to hub models"):
        ModelHost("tiny-molmo2", device="cpu", revision="main")
    with pytest.raises(ValueError, match="336 px crops but the model's vision tower takes 378x378"):
        ModelHost("tiny-molmo2", device="cpu", profile="molmo-v1")
    with pytest.raises(ValueError, match="unknown profile 'molmo3'"):
        ModelHost("tiny-molmo2", device="cpu", profile="molmo3")


def test_profile_from_a_preprocessor_config_file(tmp_path):
    path = tmp_path / "preprocessor_config.json"
    path.write_text(json.dumps({"size": {"height": 378, "width": 378}, "max_crops": 6, "overlap_margins": [4, 4],
                                "patch_size": 14, "pooling_size": [2, 2]}))
    profile = resolve_profile(str(path))
    assert profile.max_crops == 6 and profile.crop_size == 378 and profile.name == "molmo2-custom"


def _tokenizer_and_processor(image_processor):
    """A word-level tokenizer built here (no download) with Molmo2's special tokens at the tiny model's ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import Molmo2Processor, Molmo2VideoProcessor, PreTrainedTokenizerFast

    specials = ["<im_start>", "<im_end>", "<im_patch>", "<im_col>", "<low_res_im_start>", "<frame_start>",
                "<frame_end>", "<im_low>", "<|image|>", "<|video|>", "<|endoftext|>"]
    vocab = {f"w{i}": i for i in range(1000)} | {s: 1000 + i for i, s in enumerate(specials)}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="w0"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="w0", eos_token="<|endoftext|>",
                                   additional_special_tokens=specials)
    return Molmo2Processor(image_processor=image_processor, video_processor=Molmo2VideoProcessor(), tokenizer=fast,
                           use_single_crop_col_tokens=False)


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory) -> Path:
    """The tiny Molmo2 saved as real files: weights, config and image processor config."""
    from transformers import Molmo2ImageProcessor

    root = tmp_path_factory.mktemp("tiny")
    model = build_registered(MODELS["tiny-molmo2"], device=CPU, dtype=torch.float32, attn_implementation=None, seed=0)
    model.save_pretrained(root / "image-only")
    image_processor = Molmo2ImageProcessor(**PROFILES["molmo2"].processor_kwargs())
    image_processor.save_pretrained(root / "image-only")
    model.save_pretrained(root / "full")
    _tokenizer_and_processor(image_processor).save_pretrained(root / "full")
    return root


def test_local_path_with_only_an_image_processor(saved_tiny):
    host = ModelHost(str(saved_tiny / "image-only"), device="cpu")
    assert (host.source, host.architecture, host.profile) == ("pretrained", "molmo2", PROFILES["molmo2"])
    assert host.inputs.processor is None
    [r] = host.measure(MeasureConfig(tiling_rows=1, tiling_cols=2, warmup=0, repeats=1))
    assert r.status == "ok", r.error
    assert r.model == str(saved_tiny / "image-only") and json.loads(r.extra)["inputs"] == "image-processor+layout"


def test_local_path_with_the_full_processor(saved_tiny):
    """With a tokenizer the model's own processor lays out the tokens; the counts must still agree."""
    host = ModelHost(str(saved_tiny / "full"), device="cpu")
    assert host.inputs.processor is not None and host.profile.low_res_col_tokens is False
    [r] = host.measure(MeasureConfig(tiling_rows=1, tiling_cols=3, warmup=0, repeats=1))
    assert r.status == "ok", r.error
    assert json.loads(r.extra)["inputs"] == "processor"
    assert r.image_tokens_actual == r.image_tokens and r.seq_len > r.sequence_tokens


def test_molmo_v1_checkpoint_needs_trust_remote_code(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "molmo", "architectures": ["MolmoForCausalLM"],
        "auto_map": {"AutoConfig": "config_molmo.MolmoConfig", "AutoModelForCausalLM": "modeling_molmo.MolmoForCausalLM"}}))
    with pytest.raises(ValueError, match="Molmo v1 checkpoint .* pass --trust-remote-code"):
        ModelHost(str(tmp_path), device="cpu")


def test_unsupported_model_type_is_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="model_type 'llama'; supported: 'molmo2'"):
        ModelHost(str(tmp_path), device="cpu")
