"""Which parts train under model.train_type=full (mmr1.models.parts): the seed's frozen vision tower and merger."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from mmr1.models.parts import FreezeError, apply_freeze, freeze_parts


def _vlm() -> torch.nn.Module:
    return torch.nn.ModuleDict({"model": torch.nn.ModuleDict({
        "language_model": torch.nn.Linear(2, 2),
        "visual": torch.nn.ModuleDict({"blocks": torch.nn.Linear(2, 2), "merger": torch.nn.Linear(2, 2)})}),
        "lm_head": torch.nn.Linear(2, 3)})


def _cfg(train_type: str, tower: bool, aligner: bool):
    return OmegaConf.create({"train_type": train_type, "freeze_vision_tower": tower, "freeze_aligner": aligner})


@pytest.mark.parametrize(("tower", "aligner"), [(True, True), (True, False), (False, True), (False, False)])
def test_each_flag_freezes_its_part_only(tower, aligner):
    model = _vlm()
    apply_freeze(model, _cfg("full", tower, aligner))
    trains = {n: p.requires_grad for n, p in model.named_parameters()}
    assert trains["model.visual.blocks.weight"] is not tower and trains["model.visual.merger.weight"] is not aligner
    assert trains["model.language_model.weight"] and trains["lm_head.weight"]


def test_lora_leaves_the_choice_to_peft():
    model = _vlm()
    assert apply_freeze(model, _cfg("lora", True, True)) is None
    assert all(p.requires_grad for p in model.parameters())


def test_a_model_without_the_part_asked_to_freeze_names_the_key():
    text_only = torch.nn.ModuleDict({"model": torch.nn.ModuleDict({"language_model": torch.nn.Linear(2, 2)})})
    with pytest.raises(FreezeError, match="model.freeze_vision_tower"):
        freeze_parts(text_only, freeze_vision_tower=True, freeze_aligner=False)
    assert freeze_parts(text_only, freeze_vision_tower=False, freeze_aligner=False)["language_model"] == (6, 6)
    no_merger = torch.nn.ModuleDict({"visual": torch.nn.Linear(2, 2), "language_model": torch.nn.Linear(2, 2)})
    with pytest.raises(FreezeError, match="model.freeze_aligner"):
        freeze_parts(no_merger, freeze_vision_tower=False, freeze_aligner=True)
