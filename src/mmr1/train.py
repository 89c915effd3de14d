"""Train: ``python -m mmr1.train [+experiment=NAME] [key=value ...]``.

``main`` is the thin Hydra entry point; ``train(cfg)`` does the work and can be called from Python
with a composed config (tests do). The trainer is TRL's ``GRPOTrainer``; mmr1 only assembles it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from mmr1.config import register_configs
from mmr1.config.grpo_args import build_grpo_kwargs
from mmr1.run_dir import prepare_run_dir, write_config, write_json
from mmr1.tracking.secrets import protect_run_dir

log = logging.getLogger("mmr1.train")
CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")

register_configs()


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one GRPO training job described by ``cfg``; return its final metrics."""
    from mmr1.data import resolve_pixel_limits
    from mmr1.launch import is_main_process, write_deepspeed_config, write_launch_plan
    from mmr1.rewards import build_reward_funcs

    started = time.time()
    from mmr1.rehearsal import apply_rehearsal

    rehearsal_swaps = apply_rehearsal(cfg)  # +preset=rehearsal (idempotent: main() applied it already)
    # Rank 0 alone checks and writes the run directory (the launching process created it for all ranks).
    main_rank = is_main_process()
    run_dir = prepare_run_dir(cfg.run_dir) if main_rank else Path(cfg.run_dir)
    # Scrub .hydra/, refuse secret-looking overrides, redact log output (mmr1.tracking.secrets).
    protect_run_dir(run_dir, scrub=main_rank)
    # Everything that can fail on config alone fails here, before weights, data or GPUs.
    reward_funcs = build_reward_funcs(cfg.reward, run_dir)
    limits = resolve_pixel_limits(cfg.model.max_pixels, cfg.model.min_pixels)
    grpo_kwargs = build_grpo_kwargs(cfg, run_dir)
    if main_rank:
        write_config(cfg, run_dir)
        write_json(run_dir / "grpo_args.json", grpo_kwargs)
        if cfg.rehearsal.enabled:
            write_json(run_dir / "rehearsal.json", rehearsal_swaps)  # key, experiment value, rehearsal value
        if cfg.deepspeed.enabled:
            write_deepspeed_config(cfg.deepspeed, run_dir)  # what grpo_kwargs["deepspeed"] points to
    if cfg.dry_run:
        write_launch_plan(cfg, run_dir)  # launch.json; a layout that cannot work fails here
        _print_summary(cfg, grpo_kwargs, limits, run_dir)
        return {}
    from mmr1.reliability import resolve_resume, run_training

    # Before any weights load: a run directory whose checkpoints are all broken fails here.
    resume = resolve_resume(cfg.resume, run_dir)

    from trl import GRPOConfig

    from mmr1.data import build_datasets
    from mmr1.data.preflight import data_skips_long_prompts, preflight
    from mmr1.grpo_trainer import Mmr1GRPOTrainer
    from mmr1.models import load_model, load_processor, resolve_model_path
    from mmr1.models.warmstart import maybe_warmstart
    from mmr1.tracking.curves import plot_curves
    from mmr1.tracking.metrics import MetricsJsonlCallback, read_metrics

    seed = cfg.trainer.seed
    model_path = resolve_model_path(cfg.model)
    processor = load_processor(model_path, min_pixels=limits.min_pixels, max_pixels=limits.max_pixels,
                               trust_remote_code=cfg.model.trust_remote_code)
    data = build_datasets(cfg.dataset, min_pixels=limits.min_pixels, max_pixels=limits.max_pixels, seed=seed)
    # Every prompt, measured with its own image's tokens, against trainer.max_length and the rollout context,
    # before any GPU work (mmr1.data.preflight); over-long rows are named (or skipped, dataset.on_long_prompt).
    context = cfg.rollout.max_model_len
    fit = preflight(processor, data, max_length=cfg.trainer.max_length, context=context,
                    max_completion_length=cfg.trainer.max_completion_length,
                    skip=data_skips_long_prompts(cfg.dataset))
    if main_rank:
        write_json(run_dir / "preflight.json", dataclasses.asdict(fit))  # longest prompt, completion cap, skipped rows
    model_path = maybe_warmstart(cfg, model_path, processor, limits)
    model = load_model(model_path, cfg.model)

    metrics_cb = MetricsJsonlCallback(run_dir)
    if data.stats.get("skipped"):
        metrics_cb.extra["data/skipped_rows"] = data.stats["skipped"]
    for split, n in data.stats.get("long_prompts_skipped", {}).items():
        metrics_cb.extra[f"data/long_prompts_skipped_{split}"] = n
    trainer = Mmr1GRPOTrainer(
        model=model,
        context_length=context,  # completions end where the rollout context does, on every backend
        reward_funcs=reward_funcs,
        args=GRPOConfig(**grpo_kwargs),
        train_dataset=data.train,
        eval_dataset=data.eval,
        processing_class=processor,
        callbacks=[metrics_cb],
    )
    from mmr1.tracking.progress import install as install_progress
    from mmr1.tracking.wandb_run import setup_wandb

    install_progress(trainer)  # one bar with step, reward, ETA instead of a log dict per step
    if trainer.is_world_process_zero():
        setup_wandb(cfg, run_dir)  # offline without a key; grouped by sweep, named by overrides
    # trainer.train inside resume, atomic checkpoints, the collapse guard and Ctrl-C (mmr1.reliability).
    outcome = run_training(trainer, cfg, run_dir, resume, metrics_cb)
    # Every rank: under ZeRO-3 saving gathers the sharded weights (a collective); the Trainer writes on rank 0.
    trainer.save_model(str(run_dir / "final"))
    if trainer.is_world_process_zero():
        processor.save_pretrained(str(run_dir / "final"))
        plot_curves(run_dir / "metrics.jsonl", run_dir / "curves.png", events=outcome.events)
    rows = read_metrics(run_dir / "metrics.jsonl")
    final = rows[-1] if rows else {}
    if trainer.is_world_process_zero():
        write_json(run_dir / "run_info.json", {
            "status": outcome.status, "steps": trainer.state.global_step,
            "wall_time_s": round(time.time() - started, 1),
            "world_size": trainer.args.world_size, "model_path": model_path,
        })
    return final


def _print_summary(cfg: DictConfig, grpo_kwargs: dict, limits, run_dir: Path) -> None:
    keys = ["learning_rate", "beta", "loss_type", "num_generations", "per_device_train_batch_size",
            "gradient_accumulation_steps", "max_completion_length", "num_iterations", "max_grad_norm",
            "temperature", "repetition_penalty", "use_vllm", "vllm_mode"]
    print(f"mmr1 dry run: model={cfg.model.name_or_path} dataset={cfg.dataset.name} "
          f"(source={OmegaConf.to_container(cfg.dataset, enum_to_str=True)['source']}) "
          f"rewards={list(cfg.reward.funcs)} rollout={cfg.rollout.backend}"
          f"{'/' + cfg.rollout.vllm_mode if cfg.rollout.vllm_mode else ''} "
          f"deepspeed={'zero' + str(cfg.deepspeed.stage) if cfg.deepspeed.enabled else 'off'}")
    print(f"  image pixels: min={limits.min_pixels} max={limits.max_pixels}")
    for k in keys:
        if k in grpo_kwargs:
            print(f"  {k} = {grpo_kwargs[k]}")


@hydra.main(config_path=CONF_DIR, config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    from mmr1.rehearsal import announce

    announce(cfg)  # +preset=rehearsal: swap what needs GPUs or downloads, before the launcher counts processes
    from mmr1.launch import is_main_process, launch
    from mmr1.reliability.lock import hold_run_dir

    # One run per directory: a second one fails here (RunDirLocked), outside the try, so it writes nothing there.
    run_lock = hold_run_dir(cfg)  # a rank mmr1 launched gets a no-op: its launching process holds the lock
    try:
        final = launch(cfg, train)  # here, or through `accelerate launch` (+ a vLLM server): mmr1.launch
    except Exception as err:
        from mmr1.sweep.status import record_failure

        if is_main_process():  # the launching process or global rank 0, not every rank
            record_failure(cfg.run_dir, err)  # run_info.json: failed + the error's first line, for the sweep report
        raise
    finally:
        run_lock.release()  # after record_failure, so that run_info.json is still written under the lock
    print(f"Run directory: {Path(cfg.run_dir).resolve()}")
    reward = final.get("reward")
    return float(reward) if isinstance(reward, (int, float)) else None


if __name__ == "__main__":
    main()
