"""The first step of every run, dry or real: the run directory, the secrets guard, and everything that can fail on
the configuration alone (rewards, image limits, GRPO arguments, LoRA), written down before any weights or data.
No torch imported here: a dry run and the launching process stop after this step (only the dry run's memory estimate
builds a weightless model to count parameters)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from mmr1.config.grpo_args import build_grpo_kwargs
from mmr1.config.rehearsal import apply_rehearsal
from mmr1.data import PixelLimits, resolve_pixel_limits
from mmr1.launch.deepspeed import write_deepspeed_config
from mmr1.models.lora import check_train_type
from mmr1.rewards import WatchedReward, build_reward_funcs
from mmr1.tracking.ranks import is_main_process
from mmr1.tracking.run_dir import prepare_run_dir, write_config, write_json
from mmr1.tracking.secrets import protect_run_dir


@dataclass
class Run:
    """What the configuration resolved to, shared by every later step."""

    dir: Path
    main: bool  # global rank 0: the process that writes the run directory's files
    reward_funcs: list[WatchedReward]
    limits: PixelLimits  # one image resolution for data, trainer and rollout
    grpo_kwargs: dict[str, Any]  # trl.GRPOConfig's arguments, as grpo_args.json records them


def open_run(cfg: DictConfig) -> Run:
    """Check the configuration and record it in the run directory (config.yaml, grpo_args.json, deepspeed.json,
    rehearsal.json); a bad key, reward or layout fails here, naming it."""
    swaps = apply_rehearsal(cfg)  # +preset=rehearsal (idempotent: main() applied it already)
    main = is_main_process()
    # Rank 0 alone checks and writes the run directory (the launching process created it for all ranks).
    run_dir = prepare_run_dir(cfg.run_dir) if main else Path(cfg.run_dir)
    # Scrub .hydra/, refuse secret-looking overrides, redact log output (mmr1.tracking.secrets).
    protect_run_dir(run_dir, scrub=main)
    rewards = build_reward_funcs(cfg.reward, run_dir, max_completion_length=cfg.trainer.max_completion_length)
    run = Run(dir=run_dir, main=main, reward_funcs=rewards,
              limits=resolve_pixel_limits(cfg.model.max_pixels, cfg.model.min_pixels),
              grpo_kwargs=build_grpo_kwargs(cfg, run_dir))
    check_train_type(cfg.model, runtime=not cfg.dry_run)  # lora/qlora: peft, bitsandbytes + CUDA (qlora)
    if main:
        write_config(cfg, run_dir)
        write_json(run_dir / "grpo_args.json", run.grpo_kwargs)
        if cfg.rehearsal.enabled:
            write_json(run_dir / "rehearsal.json", swaps)  # setting, experiment value, rehearsal value
        if cfg.deepspeed.enabled:
            write_deepspeed_config(cfg.deepspeed, run_dir)  # what grpo_kwargs["deepspeed"] points to
    return run
