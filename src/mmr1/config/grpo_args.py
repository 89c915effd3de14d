"""Map the resolved mmr1 config onto the keyword arguments of ``trl.GRPOConfig``.

Every value the seed depends on is set explicitly, even where TRL's default happens to agree today:
TRL's defaults move between releases (``loss_type`` became "dapo", ``beta`` became 0, vLLM
importance-sampling correction became on), and a silent default change makes runs incomparable.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from mmr1.config.typed import container

log = logging.getLogger("mmr1.config")

# mmr1 keys under `trainer` that are not GRPOConfig fields.
_MMR1_ONLY_TRAINER_KEYS = {"extra", "max_length", "dynamic_sampling", "dynamic_sampling_max_batches", "algorithm"}
# GRPOConfig fields mmr1 passes only when set: null means TRL's default, and grpo_args.json of a run that sets none
# of them stays what it was before mmr1 knew them.
_WHEN_SET = {"epsilon_high", "delta", "importance_sampling_level", "top_entropy_quantile"}


def client_host(bind_host: str) -> str:
    """Where trainer rank 0 finds the server: it binds 0.0.0.0, and rank 0 (the only rank TRL connects)
    runs on node 0 with it."""
    return "127.0.0.1" if bind_host in ("0.0.0.0", "::") else bind_host


def has_accelerator() -> bool:
    import torch

    return bool(torch.accelerator.is_available())


def checkpointing_field() -> str:
    """The installed TrainingArguments' name for gradient checkpointing.

    Newer transformers 5 releases renamed it ``activation_checkpointing`` (the old name warns, and TRL's _BaseConfig
    still defaults it to True; passing the new name sets both); older ones, such as 5.17 of the vLLM-on-CPU
    environment (scripts/vllm_cpu_env.sh), know only ``gradient_checkpointing``.
    """
    from transformers import TrainingArguments

    fields = TrainingArguments.__dataclass_fields__
    return "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"


def _sleep_mode(asked: bool) -> bool:
    """vLLM's sleep mode needs an accelerator ("Sleep mode is not supported on current platform" on a CPU):
    off there, said once, instead of vLLM's start-up error."""
    if asked and not has_accelerator():
        log.info("rollout.enable_sleep_mode: off on this CPU machine (vLLM's sleep mode needs an accelerator)")
        return False
    return asked


def _report_to(cfg: DictConfig) -> list[str] | str:
    return list(cfg.logger.report_to) or "none"


def build_grpo_kwargs(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Return the exact kwargs for ``GRPOConfig`` (JSON-serialisable; written to grpo_args.json)."""
    trainer = container(cfg.trainer)
    extra = trainer.pop("extra", {}) or {}
    check_algorithm(trainer)
    kwargs: dict[str, Any] = {k: v for k, v in trainer.items()
                              if k not in _MMR1_ONLY_TRAINER_KEYS and not (k in _WHEN_SET and v is None)}

    opt = cfg.optimizer
    kwargs.update(
        output_dir=str(run_dir),
        optim=opt.name,
        learning_rate=opt.lr,
        weight_decay=opt.weight_decay,
        adam_beta1=opt.adam_beta1,
        adam_beta2=opt.adam_beta2,
        adam_epsilon=opt.adam_epsilon,
        # HF Trainer clips only when max_grad_norm > 0: None (no clipping) maps to 0.0.
        max_grad_norm=0.0 if opt.max_grad_norm is None else opt.max_grad_norm,
        lr_scheduler_type=opt.lr_scheduler_type,
        # transformers 5 has no warmup_ratio: a float in [0, 1) given as warmup_steps is a ratio.
        warmup_steps=opt.warmup_ratio if opt.warmup_ratio > 0 else opt.warmup_steps,
        report_to=_report_to(cfg),
        # The dataset columns (solution, ...) must reach the reward functions.
        remove_unused_columns=False,
        # HF's default replaces NaN/inf losses in the logs by a running average: a diverged run would
        # look healthy in metrics.jsonl and to the collapse guard.
        logging_nan_inf_filter=False,
    )
    if cfg.reward.weights is not None:
        # DAPO's overlong penalty, added after the configured rewards (mmr1.rewards.overlong), weighs 1 as in the paper.
        kwargs["reward_weights"] = list(cfg.reward.weights) + ([1.0] if cfg.reward.overlong_cache is not None else [])
    if "gradient_checkpointing" in kwargs:
        kwargs[checkpointing_field()] = kwargs.pop("gradient_checkpointing")
    # Pinned host memory only helps copies to an accelerator; without one torch warns at every DataLoader.
    kwargs["dataloader_pin_memory"] = has_accelerator()
    # TRL 1.16 turns this on for VLMs in case of text-only batches (grpo_trainer.py:389-398), and DDP then warns
    # on every rank that nothing was unused. Every mmr1 row carries an image (mmr1.data.images: BadImage "no image").
    kwargs["ddp_find_unused_parameters"] = False
    kwargs.update(_rollout_kwargs(cfg))
    kwargs.update(_deepspeed_kwargs(cfg, run_dir))
    kwargs.update(extra)
    return kwargs


# TRL 1.16's loss formulations (trl/trainer/grpo_config.py `loss_type`), and those whose clipped surrogate reads
# epsilon_high and delta (trl/trainer/grpo_trainer.py `_compute_loss`: cispo reads epsilon_high as its cap and no
# delta; sapo and vespo read neither). tests/test_algorithms.py pins both against the installed TRL.
LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo")
CLIPPED = ("grpo", "bnpo", "dr_grpo", "dapo", "luspo")
# Losses that sum per-token terms: under sequence-level ratios they weight each sequence by its length instead of
# optimising GSPO's per-sequence objective (TRL only warns, trl/trainer/grpo_trainer.py, GRPOTrainer.__init__).
TOKEN_SUM = ("bnpo", "dr_grpo", "dapo", "cispo")


class AlgorithmError(ValueError):
    """A combination of the policy-optimisation keys that TRL refuses, ignores or turns into another objective."""


def check_algorithm(trainer: dict[str, Any]) -> None:
    """Refuse, at start and naming the keys, what TRL would refuse later or silently not do."""
    problems = _value_problems(trainer) + _combination_problems(trainer)
    if problems:
        raise AlgorithmError("the GRPO algorithm settings do not fit together:\n  - " + "\n  - ".join(problems))


def _value_problems(t: dict[str, Any]) -> list[str]:
    out = []
    if t["loss_type"] not in LOSS_TYPES:
        out.append(f"trainer.loss_type={t['loss_type']!r}: TRL knows {list(LOSS_TYPES)}")
    if t["scale_rewards"] not in ("group", "batch", "none"):
        out.append(f"trainer.scale_rewards={t['scale_rewards']!r}: one of group, batch, none")
    if t.get("importance_sampling_level") not in (None, "token", "sequence"):
        out.append(f"trainer.importance_sampling_level={t['importance_sampling_level']!r}: token or sequence")
    rho = t.get("top_entropy_quantile")
    if rho is not None and not 0.0 <= rho <= 1.0:
        out.append(f"trainer.top_entropy_quantile={rho}: a quantile in [0, 1]")
    return out


def _combination_problems(t: dict[str, Any]) -> list[str]:
    loss, eps, eps_high = t["loss_type"], t["epsilon"], t.get("epsilon_high")
    level, delta = t.get("importance_sampling_level"), t.get("delta")
    out = []
    if eps_high is not None and loss not in (*CLIPPED, "cispo"):
        out.append(f"trainer.epsilon_high={eps_high} does nothing with trainer.loss_type={loss!r}")
    elif eps_high is not None and loss != "cispo" and eps_high < eps:
        out.append(f"trainer.epsilon_high={eps_high} is below trainer.epsilon={eps}: clip-higher raises the upper "
                   "bound, it never lowers it")
    if delta is not None and loss not in CLIPPED:
        out.append(f"trainer.delta={delta} does nothing with trainer.loss_type={loss!r} (only {list(CLIPPED)} clip "
                   "the ratio)")
    elif delta is not None and delta <= 1 + (eps if eps_high is None else eps_high):
        out.append(f"trainer.delta={delta} must exceed 1 + the upper clip ({1 + (eps_high or eps)}): below it the "
                   "cap cuts into the clipped region (INTELLECT-2's two-sided clipping)")
    if level == "sequence" and loss in TOKEN_SUM:
        out.append(f"trainer.importance_sampling_level=sequence with trainer.loss_type={loss!r} weights each "
                   "sequence by its length instead of GSPO's per-sequence objective: use loss_type=grpo")
    if loss == "luspo" and level != "sequence":
        out.append("trainer.loss_type=luspo needs trainer.importance_sampling_level=sequence")
    if loss == "vespo" and level == "sequence":
        out.append("trainer.loss_type=vespo computes its own sequence weights: importance_sampling_level=token")
    return out


def _deepspeed_kwargs(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    ds = cfg.deepspeed
    if not ds.enabled:
        return {}
    # mmr1.launch writes this file (rank 0 / the launching process) before the Trainer reads it.
    out: dict[str, Any] = {"deepspeed": str(Path(run_dir) / "deepspeed.json")}
    if ds.stage == 3:
        out["ds3_gather_for_generation"] = ds.gather_for_generation
    return out


def _rollout_kwargs(cfg: DictConfig) -> dict[str, Any]:
    r = cfg.rollout
    out: dict[str, Any] = {
        "use_vllm": r.backend == "vllm",
        "vllm_importance_sampling_correction": r.importance_sampling_correction,
    }
    if r.get("tools"):  # its bounds are checked with the tools' (mmr1.rollout.tools.settings, the dry run too)
        out["max_tool_calling_iterations"] = int(r.max_tool_calls)
    if r.backend == "hf":
        if r.cache_implementation is not None:
            out["cache_implementation"] = r.cache_implementation
        return out
    if r.backend != "vllm":
        raise ValueError(f"rollout.backend must be 'hf' or 'vllm', got {r.backend!r}")
    if r.vllm_mode not in ("server", "colocate"):
        raise ValueError(f"rollout.vllm_mode must be 'server' or 'colocate' with vllm, got {r.vllm_mode!r}")
    out.update(vllm_mode=r.vllm_mode, vllm_max_model_length=r.max_model_len, vllm_model_impl=r.model_impl)
    if r.vllm_mode == "colocate":
        out.update(
            vllm_gpu_memory_utilization=r.gpu_memory_utilization,
            vllm_tensor_parallel_size=r.tensor_parallel_size,
            vllm_enable_sleep_mode=_sleep_mode(r.enable_sleep_mode),
        )
    else:
        # In server mode memory utilization / parallelism are arguments of `vllm serve`
        # (mmr1.launch.vllm_server); the trainers only need to find the server.
        if r.server_base_url:
            out["vllm_server_base_url"] = r.server_base_url
        else:
            out.update(vllm_server_host=client_host(r.server_host), vllm_server_port=r.server_port)
        out.update(vllm_server_timeout=r.server_timeout_s, vllm_group_port=r.group_port)
    return out
