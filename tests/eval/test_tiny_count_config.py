"""+experiment=tiny_count keeps the recipe that made the tiny model learn (experiments/clevr_count/README.md)."""

from __future__ import annotations

from mmr1.config.grpo_args import build_grpo_kwargs, checkpointing_field
from mmr1.models import EMBEDDED_MODEL
from testkit import compose_cfg


def test_tiny_count_recipe(tmp_path):
    cfg = compose_cfg(["+experiment=tiny_count"], run_dir=tmp_path)
    assert cfg.model.name_or_path == EMBEDDED_MODEL and cfg.model.warmstart.enabled
    assert cfg.model.warmstart.gate_accuracy == 0.6 and cfg.dataset.name == "synthetic_count"
    assert cfg.dataset.eval_size > 0  # the held-out split mmr1.evaluate and the in-training eval use
    args = build_grpo_kwargs(cfg, tmp_path)
    expected = {"learning_rate": 1e-4, "lr_scheduler_type": "constant", "beta": 0.0, "loss_type": "grpo",
                "per_device_train_batch_size": 32, "num_generations": 8, "max_completion_length": 24,
                "mask_truncated_completions": True, checkpointing_field(): False, "eval_strategy": "steps"}
    assert {k: args[k] for k in expected} == expected
    assert args["per_device_eval_batch_size"] % args["num_generations"] == 0  # eval groups fit a batch
    assert args["max_steps"] % args["eval_steps"] == 0  # the last step is evaluated too
