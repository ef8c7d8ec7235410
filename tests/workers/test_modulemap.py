"""The module map: detection per family, overrides, and the error text for a path that does not resolve."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from workers.modulemap import nearest_names, resolve
from workers.registry import ARCHITECTURE_MAPS, detect_architecture, module_map_for
from workers.timers import CpuClock, HookTimer


class _Block(nn.Module):
    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


def molmo_v1_shaped(*, tied: bool = False) -> nn.Module:
    """A small module tree named like Molmo v1's remote code (MolmoForCausalLM).

    A shape test: the remote code itself cannot be downloaded here, so this tree
    reproduces its module names (`model.vision_backbone.image_vit.transformer.resblocks`,
    `image_pooling_2d`, `image_projector`, `model.transformer.blocks`, `ff_out`) and a
    forward that calls them in the remote code's order.
    """

    class VisionTransformer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer = nn.Module()
            self.transformer.resblocks = nn.ModuleList([_Block() for _ in range(3)])

        def forward(self, x):
            for block in self.transformer.resblocks:
                x = block(x)
            return x

    class VisionBackbone(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.image_vit = VisionTransformer()
            self.image_pooling_2d = _Block()
            self.image_projector = _Block()

        def forward(self, images, image_masks=None):
            return self.image_projector(self.image_pooling_2d(self.image_vit(images))), None

    class Molmo(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer = nn.ModuleDict({"wte": nn.Embedding(16, 8), "ln_f": nn.LayerNorm(8)})
            self.transformer.update({"blocks": nn.ModuleList([_Block() for _ in range(4)])})
            if not tied:
                self.transformer.update({"ff_out": nn.Linear(8, 16)})
            self.vision_backbone = VisionBackbone()

        def forward(self, input_ids, images):
            x = self.transformer.wte(input_ids) + self.vision_backbone(images)[0].mean()
            for block in self.transformer.blocks:
                x = block(x)
            x = self.transformer.ln_f(x)
            return self.transformer.ff_out(x) if not tied else x @ self.transformer.wte.weight.T

    class MolmoForCausalLM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = Molmo()

        def forward(self, **kwargs):
            return self.model(**kwargs)

    return MolmoForCausalLM()


@pytest.fixture(scope="module")
def tiny_meta() -> nn.Module:
    from workers.models import MODELS, build_on_meta

    return build_on_meta(MODELS["tiny-molmo2"])


def test_molmo2_detected_with_its_known_paths(tiny_meta):
    module_map, resolved = module_map_for(tiny_meta)
    assert module_map == ARCHITECTURE_MAPS["molmo2"]
    assert resolved.vision == [tiny_meta.model.vision_tower]
    assert resolved.projector == [tiny_meta.model.multi_modal_projector]
    assert resolved.llm_blocks == list(tiny_meta.model.language_model.layers)
    assert resolved.lm_head == [tiny_meta.lm_head]
    assert len(resolved.vision_blocks) == 3
    assert resolved.paths["llm_blocks"] == "model.language_model.layers"


def test_molmo_v1_shape_detected():
    """Shape test against Molmo v1's remote-code module names (see `molmo_v1_shaped`)."""
    model = molmo_v1_shaped()
    assert detect_architecture(model) == "molmo-v1"
    _, resolved = module_map_for(model)
    backbone = model.model.vision_backbone
    assert resolved.vision == [backbone.image_vit]
    assert resolved.projector == [backbone.image_pooling_2d, backbone.image_projector]
    assert resolved.llm_blocks == list(model.model.transformer.blocks)
    assert resolved.lm_head == [model.model.transformer["ff_out"]]
    assert resolved.vision_blocks == list(backbone.image_vit.transformer.resblocks)


def test_molmo_v1_shape_with_tied_head_has_no_head_stage():
    """Shape test: a tied output embedding leaves no `ff_out` module; the head is then not timed."""
    _, resolved = module_map_for(molmo_v1_shaped(tied=True))
    assert resolved.lm_head == []
    assert resolved.paths["lm_head"] == ""


def test_molmo_v1_shape_hooks_fire_in_forward_order():
    """Shape test: on the v1 tree the timers pair the two projector modules and span the blocks."""
    model = molmo_v1_shaped()
    _, resolved = module_map_for(model)
    timer = HookTimer(CpuClock(), resolved)
    with timer.attached(), torch.inference_mode():
        model(input_ids=torch.zeros(1, 5, dtype=torch.long), images=torch.zeros(1, 8))
    times = timer.read()
    assert [s for s, _ in timer.log] == ["vision", "vision", "projector", "projector", "projector", "projector",
                                        "llm_prefill", "llm_prefill", "lm_head", "lm_head"]
    assert times.calls == {"vision": 1, "projector": 2, "llm_prefill": 1, "lm_head": 1}
    assert all(v is not None and v > 0 for v in times.ms.values())


def test_override_replaces_a_stage_and_accepts_several_paths(tiny_meta):
    overrides = {"vision": "model.vision_tower.layers.0,model.vision_tower.layers.1", "lm_head": ""}
    module_map, resolved = module_map_for(tiny_meta, overrides=overrides)
    layers = tiny_meta.model.vision_tower.layers
    assert resolved.vision == [layers[0], layers[1]]
    assert resolved.lm_head == []
    assert module_map.projector == ARCHITECTURE_MAPS["molmo2"].projector  # untouched stages keep their paths


def test_override_makes_an_unknown_layout_usable():
    model = nn.Module()
    model.encoder = _Block()
    model.decoder = nn.Module()
    model.decoder.layers = nn.ModuleList([_Block(), _Block()])
    with pytest.raises(ValueError, match="cannot tell the module layout"):
        module_map_for(model)
    _, resolved = module_map_for(model, architecture="molmo2", overrides={
        "vision": "encoder", "projector": "", "llm_blocks": "decoder.layers", "lm_head": "", "vision_blocks": ""})
    assert resolved.vision == [model.encoder] and len(resolved.llm_blocks) == 2


def test_unresolved_path_lists_the_nearest_names(tiny_meta):
    with pytest.raises(ValueError) as err:
        module_map_for(tiny_meta, overrides={"vision": "model.vision_towr"})
    text = str(err.value)
    assert "'model.vision_towr'" in text and "stage 'vision'" in text
    assert "model.vision_tower" in text
    assert "\n" not in text


def test_nearest_names_offers_the_siblings_where_the_path_went_wrong(tiny_meta):
    near = nearest_names(tiny_meta, "model.language_model.blocks")
    assert "model.language_model.layers" in near
    with pytest.raises(ValueError, match="model.language_model.layers"):
        resolve(tiny_meta, "model.language_model.blocks", "llm_blocks")


def test_bad_stage_name_and_non_list_blocks_are_rejected(tiny_meta):
    with pytest.raises(ValueError, match="allowed: vision, projector, llm_blocks, lm_head, vision_blocks"):
        module_map_for(tiny_meta, overrides={"llm": "model.language_model.layers"})
    with pytest.raises(ValueError, match="not a non-empty ModuleList"):
        module_map_for(tiny_meta, overrides={"llm_blocks": "model.language_model.norm"})
