"""The checkpoint loader mmr1 installs, pinned to the installed transformers: when upstream fixes what it works
around, the test fails and says to drop it (the other private accesses: tests/test_internals.py)."""

from __future__ import annotations

import torch
from transformers import AutoModelForImageTextToText, Trainer, TrainingArguments

from mmr1.models.tiny import tiny_qwen2_5_vl_path
from mmr1.reliability.restore import install_weight_loader


def _perturbed(model):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    return model


def test_trainer_resume_still_misses_qwen2_5_vl_weights_and_the_hook_loads_them(tmp_path):
    """transformers#43701 (open; PR #44366 closed): Trainer._load_from_checkpoint loads a Qwen2.5-VL
    checkpoint's legacy key names with strict=False, so every weight stays as it was. install_weight_loader
    replaces that loader; the first assertion fails once the installed transformers loads them itself."""
    ckpt = tiny_qwen2_5_vl_path()
    reference = AutoModelForImageTextToText.from_pretrained(str(ckpt), dtype=torch.float32)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    name, saved = next(iter(reference.state_dict().items()))

    bare = Trainer(model=_perturbed(AutoModelForImageTextToText.from_pretrained(str(ckpt), dtype=torch.float32)),
                   args=args)
    bare._load_from_checkpoint(str(ckpt))
    assert not torch.equal(bare.model.state_dict()[name], saved), (
        "transformers now restores Qwen2.5-VL checkpoints on resume: drop reliability.restore.install_weight_loader")

    hooked = Trainer(model=_perturbed(AutoModelForImageTextToText.from_pretrained(str(ckpt), dtype=torch.float32)),
                     args=args)
    install_weight_loader(hooked)
    hooked._load_from_checkpoint(str(ckpt))
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in hooked.model.state_dict().items())
