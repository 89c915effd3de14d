"""Train: ``python -m mmr1.train [+experiment=NAME] [key=value ...]``.

``main`` is the thin Hydra entry point; ``train(cfg)`` does the work and can be called from Python
with a composed config (tests do). The trainer is TRL's ``GRPOTrainer``; mmr1 only assembles it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from mmr1.config import CONF_DIR, register_configs
from mmr1.config.grpo_args import build_grpo_kwargs, has_accelerator
from mmr1.run_dir import prepare_run_dir, write_config, write_json, write_run_info
from mmr1.tracking.secrets import protect_run_dir
from mmr1.typed import container

log = logging.getLogger("mmr1.train")

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
    from mmr1.models.lora import check_train_type

    check_train_type(cfg.model, runtime=not cfg.dry_run)  # lora/qlora: peft, bitsandbytes + CUDA (qlora)
    if main_rank:
        write_config(cfg, run_dir)
        write_json(run_dir / "grpo_args.json", grpo_kwargs)
        if cfg.rehearsal.enabled:
            write_json(run_dir / "rehearsal.json", rehearsal_swaps)  # setting, experiment value, rehearsal value
        if cfg.deepspeed.enabled:
            write_deepspeed_config(cfg.deepspeed, run_dir)  # what grpo_kwargs["deepspeed"] points to
    if cfg.dry_run:
        from mmr1.checks import check_runnable

        check_runnable(cfg)  # what the real run would fail on later: dataset files, system prompt, run dir
        _, layout = write_launch_plan(cfg, run_dir)  # launch.json; a layout that cannot work fails here
        _print_summary(cfg, grpo_kwargs, limits, run_dir, world_size=layout.world_size)
        return {}
    from mmr1.reliability import resolve_resume, run_training

    # Before any weights load: a run directory whose checkpoints are all broken fails here.
    resume = resolve_resume(cfg.resume, run_dir)

    from trl import GRPOConfig

    from mmr1.data import build_datasets
    from mmr1.data.preflight import data_skips_long_prompts, preflight
    from mmr1.grpo_trainer import Mmr1GRPOTrainer
    from mmr1.models import load_model
    from mmr1.policy import prepare_policy, warm_start
    from mmr1.tracking.curves import plot_curves
    from mmr1.tracking.metrics import MetricsJsonlCallback, read_metrics
    from mmr1.tracking.quiet import weight_bars_off
    from mmr1.tracking.summary import build_summary, warmstart_gate

    seed = cfg.trainer.seed
    # The warm-start (minutes) waits until the data is known good.
    policy = prepare_policy(cfg, warmstart=False, limits=limits)
    processor = policy.processor
    data = build_datasets(cfg.dataset, min_pixels=limits.min_pixels, max_pixels=limits.max_pixels, seed=seed)
    # Every prompt, measured with its own image's tokens, against trainer.max_length and the rollout context,
    # before any GPU work (mmr1.data.preflight); over-long rows are named (or skipped, dataset.on_long_prompt).
    context = cfg.rollout.max_model_len
    fit = preflight(processor, data, max_length=cfg.trainer.max_length, context=context,
                    max_completion_length=cfg.trainer.max_completion_length,
                    skip=data_skips_long_prompts(cfg.dataset))
    if main_rank:
        # The longest prompt, the completion room it leaves, the rows skipped.
        write_json(run_dir / "preflight.json", dataclasses.asdict(fit))
    from mmr1.rewards.audit import audit_at_start

    # Which wrong or degenerate completions the rewards pay, on this run's first rows (mmr1.rewards.audit):
    # audit.json, a warning, run_info.json's reward_audit; seconds, warn only, never fails the run.
    reward_audit = audit_at_start(cfg, reward_funcs, data.train, run_dir) if main_rank else None
    policy = warm_start(cfg, policy)
    model_path = policy.path
    model = load_model(model_path, cfg.model)
    from mmr1.models.lora import peft_config
    from mmr1.models.parts import apply_freeze

    apply_freeze(model, cfg.model)  # full: the seed froze the vision tower and merger (before the optimizer exists)

    lora = peft_config(cfg.model, model)  # None for train_type=full; TRL wraps the model (mmr1.models.lora)

    from mmr1.launch.deepspeed import cpu_state

    # DeepSpeed on CPU ranks: accelerate's state on DeepSpeed's CPU accelerator (not in grpo_args.json).
    run_kwargs = {**grpo_kwargs, **cpu_state(cfg, grpo_kwargs.get("ddp_timeout", 1800))}
    from mmr1.rollout.vision_tokens import banned_generation

    # No completion may hold a vision token (mmr1.rollout.vision_tokens): banned at sampling, by each backend's setting.
    run_kwargs["generation_kwargs"], vision_ids = banned_generation(cfg.rollout.backend, cfg.rollout.ban_vision_tokens,
                                                                    model.config, processor,
                                                                    run_kwargs.get("generation_kwargs"))
    metrics_cb = MetricsJsonlCallback(run_dir)
    if data.stats.get("skipped"):
        metrics_cb.extra["data/skipped_rows"] = data.stats["skipped"]
    for split, n in data.stats.get("long_prompts_skipped", {}).items():
        metrics_cb.extra[f"data/long_prompts_skipped_{split}"] = n
    from contextlib import nullcontext

    from mmr1.rollout.vllm_engine import colocate_engine

    colocate = cfg.rollout.backend == "vllm" and cfg.rollout.vllm_mode == "colocate"
    # dtype, eager, KV cache, image limits, unexpanded prompts: what TRL does not give the engine.
    with colocate_engine(cfg, processor) if colocate else nullcontext():
        trainer = Mmr1GRPOTrainer(
            model=model,
            banned_token_ids=vision_ids,
            context_length=context,  # completions end where the rollout context does, on every backend
            # Zero-variance groups dropped and refilled (mmr1.dynamic_sampling); off by default.
            dynamic_sampling=cfg.trainer.dynamic_sampling,
            dynamic_sampling_max_batches=cfg.trainer.dynamic_sampling_max_batches,
            reward_funcs=reward_funcs,
            args=GRPOConfig(**run_kwargs),
            train_dataset=data.train,
            eval_dataset=data.eval,
            processing_class=processor,
            callbacks=[metrics_cb],
            peft_config=lora,
        )
    if colocate:
        from mmr1.rollout.vllm_engine import sync_colocate_weights

        # vLLM's CPU build repacks its weights (TRL's per-tensor sync cannot load them); no stale vision features.
        sync_colocate_weights(trainer, on_cpu=not has_accelerator())
    if lora is not None:
        from mmr1.models.lora import trainable_share

        trainable, total = trainable_share(trainer.model)
        log.info("LoRA: %d of %d parameters trainable (%.2f%%)", trainable, total, 100 * trainable / total)
    if cfg.deepspeed.enabled and not trainer.is_deepspeed_enabled:
        raise RuntimeError("deepspeed is enabled in the config but the Trainer is not running DeepSpeed "
                           f"(accelerate distributed type {trainer.accelerator.distributed_type})")
    from mmr1.tracking.progress import install as install_progress
    from mmr1.tracking.wandb_run import setup_wandb

    install_progress(trainer)  # one bar with step, reward, ETA instead of a log dict per step
    if trainer.is_world_process_zero():
        setup_wandb(cfg, run_dir)  # offline without a key; grouped by sweep, named by overrides
    # trainer.train inside resume, atomic checkpoints, the collapse guard and Ctrl-C (mmr1.reliability).
    # transformers' "Writing model shards" bar at every checkpoint would break the training bar (mmr1.tracking.quiet).
    with weight_bars_off():
        outcome = run_training(trainer, cfg, run_dir, resume, metrics_cb)
        if metrics_cb.summary:  # runtime, samples/s, train_loss: the Trainer's own train_results.json
            trainer.save_metrics("train", metrics_cb.summary, combined=False)
        # Every rank: under ZeRO-3 saving gathers the sharded weights (a collective); the Trainer writes on rank 0.
        trainer.save_model(str(run_dir / "final"))
    gate = warmstart_gate(model_path)  # the warm-start's greedy held-out accuracy: the starting reference
    if trainer.is_world_process_zero():
        processor.save_pretrained(str(run_dir / "final"))
        plot_curves(run_dir / "metrics.jsonl", run_dir / "curves.png", events=outcome.events,
                    beta=cfg.trainer.beta, warmstart_gate=gate)
    rows = read_metrics(run_dir / "metrics.jsonl")
    final = rows[-1] if rows else {}
    if trainer.is_world_process_zero():
        info = {"status": outcome.status, "steps": trainer.state.global_step,
                "wall_time_s": round(time.time() - started, 1), "world_size": trainer.args.world_size}
        # The summary is what main() prints before "Run directory: ..." (mmr1.tracking.summary).
        summary = build_summary(run_dir, **info, max_steps=trainer.state.max_steps, warmstart_gate=gate)
        write_run_info(run_dir, **info, model_path=model_path, summary=summary, reward_audit=reward_audit)
    return final


def _print_summary(cfg: DictConfig, grpo_kwargs: dict, limits, run_dir: Path, world_size: int | None = None) -> None:
    from mmr1.data.mixture import describe_source

    keys = ["learning_rate", "beta", "loss_type", "num_generations", "per_device_train_batch_size",
            "gradient_accumulation_steps", "max_completion_length", "num_iterations", "max_grad_norm",
            "temperature", "repetition_penalty", "use_vllm", "vllm_mode"]
    print(f"mmr1 dry run: model={cfg.model.name_or_path} dataset={cfg.dataset.name} "
          f"(source={describe_source(container(cfg.dataset, enum_to_str=True))}) "
          f"rewards={list(cfg.reward.funcs)} rollout={cfg.rollout.backend}"
          f"{'/' + cfg.rollout.vllm_mode if cfg.rollout.vllm_mode else ''} "
          f"deepspeed={'zero' + str(cfg.deepspeed.stage) if cfg.deepspeed.enabled else 'off'}")
    print(f"  image pixels: min={limits.min_pixels} max={limits.max_pixels}")
    from mmr1.models.lora import plan_lines

    for line in plan_lines(cfg.model, cfg.rollout):  # lora/qlora: the adapters, and vLLM's merged weight sync
        print(line)
    for k in keys:
        if k in grpo_kwargs:
            print(f"  {k} = {grpo_kwargs[k]}")
    from mmr1.launch.memory import memory_summary

    # Memory before money: per-GPU model states, activations and the vLLM share for the planned layout.
    print(memory_summary(cfg, max_pixels=limits.max_pixels, world_size=world_size))


@hydra.main(config_path=CONF_DIR, config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    from mmr1.tracking.quiet import install as quiet_install

    quiet_install()  # only the library warnings mmr1 itself causes (mmr1.tracking.quiet names each)
    from mmr1.rehearsal import announce

    announce(cfg)  # +preset=rehearsal: swap what needs GPUs or downloads, before the launcher counts processes
    from mmr1.launch import is_main_process, launch
    from mmr1.launch.layout import LAUNCHED_ENV
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
    if is_main_process() and os.environ.get(LAUNCHED_ENV) != "1":  # once: not from each rank mmr1 launched
        from mmr1.tracking.summary import print_ending

        print_ending(cfg.run_dir, with_summary=not cfg.dry_run)  # the summary, then "Run directory: ..." last
    reward = final.get("reward")
    return float(reward) if isinstance(reward, (int, float)) else None


if __name__ == "__main__":
    main()
