"""Map the resolved mmr1 config onto the keyword arguments of ``trl.GRPOConfig``.

Every value the seed depends on is set explicitly, even where TRL's default happens to agree today:
TRL's defaults move between releases (``loss_type`` became "dapo", ``beta`` became 0, vLLM
importance-sampling correction became on), and a silent default change makes runs incomparable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

# mmr1 keys under `trainer` that are not GRPOConfig fields.
_MMR1_ONLY_TRAINER_KEYS = {"extra", "max_length"}


def _report_to(cfg: DictConfig) -> list[str] | str:
    return list(cfg.logger.report_to) or "none"


def build_grpo_kwargs(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Return the exact kwargs for ``GRPOConfig`` (JSON-serialisable; written to grpo_args.json)."""
    trainer = OmegaConf.to_container(cfg.trainer, resolve=True)
    assert isinstance(trainer, dict)
    extra = trainer.pop("extra", {}) or {}
    kwargs: dict[str, Any] = {k: v for k, v in trainer.items() if k not in _MMR1_ONLY_TRAINER_KEYS}

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
        kwargs["reward_weights"] = list(cfg.reward.weights)
    kwargs.update(_rollout_kwargs(cfg))
    if cfg.deepspeed.enabled:
        kwargs["deepspeed"] = str(Path(run_dir) / "deepspeed.json")
    kwargs.update(extra)
    return kwargs


def _rollout_kwargs(cfg: DictConfig) -> dict[str, Any]:
    r = cfg.rollout
    out: dict[str, Any] = {
        "use_vllm": r.backend == "vllm",
        "vllm_importance_sampling_correction": r.importance_sampling_correction,
    }
    if r.backend == "hf":
        return out
    if r.backend != "vllm":
        raise ValueError(f"rollout.backend must be 'hf' or 'vllm', got {r.backend!r}")
    if r.vllm_mode not in ("server", "colocate"):
        raise ValueError(f"rollout.vllm_mode must be 'server' or 'colocate' with vllm, got {r.vllm_mode!r}")
    out.update(vllm_mode=r.vllm_mode, vllm_max_model_length=r.max_model_len)
    if r.vllm_mode == "colocate":
        out.update(
            vllm_gpu_memory_utilization=r.gpu_memory_utilization,
            vllm_tensor_parallel_size=r.tensor_parallel_size,
            vllm_enable_sleep_mode=r.enable_sleep_mode,
        )
    else:
        # In server mode memory utilization / parallelism are arguments of `trl vllm-serve`.
        if r.server_base_url:
            out["vllm_server_base_url"] = r.server_base_url
        else:
            out.update(vllm_server_host=_client_host(r.server_host), vllm_server_port=r.server_port)
        out["vllm_server_timeout"] = r.server_timeout_s
    return out


def _client_host(bind_host: str) -> str:
    # The server binds 0.0.0.0; the trainers connect to it on this node.
    return "127.0.0.1" if bind_host in ("0.0.0.0", "::") else bind_host
