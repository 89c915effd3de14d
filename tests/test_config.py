"""The config spine: every experiment composes, typos fail naming the key, and the dry run maps each seed
flag onto the exact GRPOConfig keyword it corresponds to."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from mmr1.config import CONF_DIR
from mmr1.config.grpo_args import build_grpo_kwargs, checkpointing_field
from mmr1.train import train
from testkit import EXPERIMENTS, compose_cfg, run_cli

# The seed's three commands (ms-swift docs/source_en/BestPractices/GRPO-Multi-Modal-Training.md), flag by flag.
COMMON = {
    "learning_rate": 1e-6, "beta": 0.001, "max_completion_length": 1024, "per_device_train_batch_size": 8,
    "per_device_eval_batch_size": 8, "gradient_accumulation_steps": 2, "num_train_epochs": 1,
    "save_strategy": "steps", "eval_strategy": "steps", "save_total_limit": 10, "logging_steps": 1,
    "dataloader_num_workers": 4, "temperature": 1.0, "log_completions": True, "bf16": True,
    "report_to": ["wandb"], "use_vllm": True, "vllm_importance_sampling_correction": False,
    # Left to ms-swift v3.2.1's defaults by the seed (conf/recipe/ms_swift_v3_2_1.yaml cites each file:line).
    "loss_type": "bnpo", "adam_beta1": 0.9, "adam_beta2": 0.999, "adam_epsilon": 1e-8, "weight_decay": 0.1,
    "lr_scheduler_type": "cosine", "top_k": 50, "top_p": 0.9, "epsilon": 0.2, "scale_rewards": "group",
    # (under the installed transformers' name for it: mmr1.config.grpo_args.checkpointing_field)
    checkpointing_field(): True, "seed": 42, "mask_truncated_completions": False,
}
SEED = {
    "clevr_count": {**COMMON, "save_steps": 1000, "eval_steps": 1000, "warmup_steps": 0.01, "num_generations": 24,
                    "num_iterations": 1, "repetition_penalty": 1.0, "vllm_max_model_length": 1024,
                    "max_grad_norm": 1.0},
    "geoqa": {**COMMON, "save_steps": 400, "eval_steps": 400, "warmup_steps": 0.05, "num_generations": 8,
              "num_iterations": 2, "repetition_penalty": 1.1, "max_grad_norm": 0.5},
    "openr1_mm": {**COMMON, "save_steps": 400, "eval_steps": 400, "warmup_steps": 0.05, "num_generations": 8,
                  "num_iterations": 2, "repetition_penalty": 1.1, "max_grad_norm": 0.5},
}
SEED_MAX_PIXELS = {"clevr_count": None, "geoqa": 401408, "openr1_mm": 262144}
SEED_DATASET = {"clevr_count": "clevr_count", "geoqa": "geoqa", "openr1_mm": "openr1_mm"}


@pytest.mark.parametrize("experiment", [None, *EXPERIMENTS])
def test_every_experiment_composes(experiment):
    cfg = compose_cfg([f"+experiment={experiment}"] if experiment else [])
    OmegaConf.resolve(cfg)
    assert cfg.reward.funcs == ["external_r1v_acc", "format"]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_dry_run_grpo_args_equal_the_seed(experiment, tmp_path):
    cfg = compose_cfg([f"+experiment={experiment}", "dry_run=true"], run_dir=tmp_path)
    train(cfg)
    args = json.loads((tmp_path / "grpo_args.json").read_text())
    for key, value in SEED[experiment].items():
        assert args[key] == value, f"{experiment}: {key} = {args[key]!r}, seed has {value!r}"
    saved = OmegaConf.load(tmp_path / "config.yaml")
    assert saved.model.name_or_path == "Qwen/Qwen2.5-VL-3B-Instruct"
    assert saved.model.max_pixels == SEED_MAX_PIXELS[experiment]
    assert saved.dataset.name == SEED_DATASET[experiment]
    assert saved.rollout.gpu_memory_utilization == 0.6
    assert saved.deepspeed.enabled and saved.deepspeed.stage == 3
    # The effective batch must split into whole groups across the seed's 6 trainer processes.
    assert (6 * args["per_device_train_batch_size"] * args["gradient_accumulation_steps"]) % args[
        "num_generations"] == 0


def test_dry_run_cli_writes_artifacts_and_needs_no_gpu_packages(tmp_path):
    run_dir = tmp_path / "d"
    proc = run_cli(["+experiment=geoqa", "dry_run=true", f"hydra.run.dir={run_dir}"])
    assert (run_dir / "config.yaml").exists() and (run_dir / "grpo_args.json").exists()
    assert "dry run" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == f"Run directory: {run_dir.resolve()}"


def test_typo_in_a_config_key_fails_naming_it():
    proc = run_cli(["optimizer.lrr=1", "dry_run=true"], check=False)
    assert proc.returncode != 0
    assert "lrr" in proc.stderr


def test_wrong_type_fails_naming_the_key():
    with pytest.raises(Exception, match="max_steps"):
        compose_cfg(["trainer.max_steps=many"])


def test_tiny_default_maps_trl_defaults_that_differ_from_the_seed():
    cfg = compose_cfg()
    args = build_grpo_kwargs(cfg, "/tmp/x")
    # TRL's defaults: loss_type="dapo", gradient_checkpointing=True, IS correction on. The tiny job sets each.
    assert args["loss_type"] == "grpo"
    # One name, the installed TrainingArguments' (activation_checkpointing where transformers renamed it).
    names = {"activation_checkpointing", "gradient_checkpointing"} & set(args)
    assert names == {checkpointing_field()} and args[checkpointing_field()] is False
    assert args["vllm_importance_sampling_correction"] is False
    assert args["logging_nan_inf_filter"] is False
    assert args["remove_unused_columns"] is False


def test_max_grad_norm_none_disables_clipping():
    cfg = compose_cfg(["optimizer.max_grad_norm=null"])
    assert build_grpo_kwargs(cfg, "/tmp/x")["max_grad_norm"] == 0.0


# Groups whose options are plain deltas over the typed schema (experiment/preset/recipe/sweep files are
# diffs across groups, checked by the tests above).
GROUPS = ["model", "dataset", "reward", "rollout", "optimizer", "trainer", "logger", "launcher", "deepspeed",
          "guard"]


@pytest.mark.parametrize("group", GROUPS)
def test_group_yamls_are_deltas_over_the_schema(group):
    """One home for defaults: a group option sets no key to the value it would have anyway."""
    from dataclasses import fields

    from mmr1.config import CONF_DIR
    from mmr1.config.schema import TrainConfig

    schema_type = {f.name: f for f in fields(TrainConfig)}[group].default_factory
    for path in sorted((Path(CONF_DIR) / group).glob("*.yaml")):
        yaml = OmegaConf.load(path)
        # A mixture's `task@tasks.task` entries compose other options under `tasks`; they are not parents.
        parents = [d for d in yaml.pop("defaults", []) if d != "_self_" and "@" not in d]
        # An option extending another (synthetic_count extends clevr_count) is a delta over its parent.
        base = compose_cfg([f"{group}={parents[0]}"])[group] if parents else OmegaConf.structured(schema_type)
        for key, value in _leaves(OmegaConf.to_container(yaml)):
            assert OmegaConf.select(base, key) != value, f"{path.name}: {key}={value!r} repeats the default"


def _defaults_as_overrides(defaults: list) -> list[str]:
    """An experiment's defaults list as command-line overrides (`/recipe: x` -> `+recipe=x`, `override /g: x`)."""
    out = []
    for entry in defaults:
        if entry == "_self_":
            continue
        if isinstance(entry, str):  # another experiment this one extends (`- tiny_count`)
            out.append(f"+experiment={entry}")
            continue
        (key, value), = entry.items()
        group = key.removeprefix("override ").lstrip("/")
        out.append(f"{group}={value}" if key.startswith("override ") else f"+{group}={value}")
    return out


@pytest.mark.parametrize("name", sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml")))
def test_experiments_are_diffs_over_what_they_compose(name):
    """An experiment sets no key to the value its recipe and group choices give it already."""
    yaml = OmegaConf.load(Path(CONF_DIR) / "experiment" / f"{name}.yaml")
    base = compose_cfg(_defaults_as_overrides(list(yaml.pop("defaults", []))))
    yaml.pop("hydra", None)  # Hydra's own settings (env_set) are not part of the job config
    repeats = [f"{key}={value!r}" for key, value in _leaves(OmegaConf.to_container(yaml))
               if OmegaConf.select(base, key) == value]
    assert not repeats, f"experiment/{name}.yaml repeats: {repeats}"


def _leaves(node, prefix=""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, f"{prefix}{k}.")
    else:
        yield prefix[:-1], node


def test_evaluate_schema_is_the_training_schema_plus_eval():
    """One registration of both schemas (the ``schema`` group): evaluate's ``eval`` node is typed, and the
    training config has no ``eval`` node to take a typo silently."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException

    from mmr1.config import CONF_DIR
    from mmr1.config.schema import EvalConfig

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("evaluate", overrides=["run_dir=/tmp/mmr1-unused", "eval.limit=3"])
        assert OmegaConf.get_type(cfg.eval) is EvalConfig and cfg.eval.limit == 3
        assert cfg.eval.batch_size == EvalConfig.batch_size  # the default comes from the dataclass alone
        with pytest.raises(ConfigCompositionException, match="limt"):
            compose("evaluate", overrides=["run_dir=/tmp/mmr1-unused", "eval.limt=3"])
        train_cfg = compose("train", overrides=["run_dir=/tmp/mmr1-unused"])
    assert "eval" not in train_cfg and cfg.optimizer == train_cfg.optimizer


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_seed_experiments_keep_ms_swift_v3_2_1_grpo_settings(experiment):
    """ms-swift v3.2.1: the vision tower and merger frozen for a full fine-tune (tuner_args.py:107-108), ZeRO-3's
    prefetch bucket 0 under GRPO (rlhf_args.py:193-196); the embedded default keeps both as they were."""
    from mmr1.launch.deepspeed import deepspeed_config

    cfg, default = compose_cfg([f"+experiment={experiment}"]), compose_cfg([])
    assert cfg.model.freeze_vision_tower and cfg.model.freeze_aligner and cfg.model.train_type == "full"
    assert not default.model.freeze_vision_tower and not default.model.freeze_aligner
    assert deepspeed_config(cfg.deepspeed)["zero_optimization"]["stage3_prefetch_bucket_size"] == 0
    assert deepspeed_config(compose_cfg(["deepspeed=zero3"]).deepspeed)["zero_optimization"][
        "stage3_prefetch_bucket_size"] == "auto"
