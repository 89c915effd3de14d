"""The steps of a real run after ``trainer.setup.open_run``, in the order ``mmr1.train.train`` calls them:
checkpoint, data, policy, trainer, fit, finish. Each takes what the earlier ones returned; none reads global state."""

from __future__ import annotations

import dataclasses
import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig
from trl import GRPOConfig

from mmr1.config.grpo_args import has_accelerator
from mmr1.config.typed import typed_config
from mmr1.data import DataBundle, build_datasets
from mmr1.data.config import VideoConfig
from mmr1.data.preflight import Report, ToolBudget, data_skips_long_prompts, preflight
from mmr1.launch.deepspeed import cpu_state
from mmr1.models import load_model
from mmr1.models.lora import peft_config, trainable_share
from mmr1.models.parts import apply_freeze
from mmr1.models.policy import Policy, prepare_policy, warm_start
from mmr1.reliability.resume import resolve_resume
from mmr1.rewards.audit import audit_at_start
from mmr1.rollout.colocate import colocate_engine, sync_colocate_weights
from mmr1.rollout.tools.environment import environment_factory
from mmr1.rollout.tools.runner import ToolRunner
from mmr1.rollout.tools.settings import tool_response_tokens, tool_runner
from mmr1.rollout.tools.template import enable_tools
from mmr1.rollout.vision_tokens import banned_generation
from mmr1.tracking.curves import plot_curves
from mmr1.tracking.metrics import MetricsJsonlCallback, read_metrics
from mmr1.tracking.progress import install as install_progress
from mmr1.tracking.quiet import weight_bars_off
from mmr1.tracking.run_dir import write_json, write_run_info
from mmr1.tracking.summary import build_summary, warmstart_gate
from mmr1.tracking.wandb_run import setup_wandb
from mmr1.trainer.grpo import Mmr1GRPOTrainer
from mmr1.trainer.loop import RunResult, run_training
from mmr1.trainer.setup import Run

log = logging.getLogger("mmr1.train")


@dataclass
class Data:
    bundle: DataBundle
    policy: Policy  # the base model's path and processor (the warm-start waits until the data is known good)
    fit: Report  # the pre-flight: the longest prompt, the room it leaves, the rows skipped
    reward_audit: dict[str, Any] | None  # rank 0 only
    tools: ToolRunner | None  # rollout.tools, resolved (their workers start at the first call)


@dataclass
class Model:
    module: Any  # the transformers model, parts frozen as configured
    path: str  # the weights it was loaded from: the base model or its warm-started copy
    lora: Any  # peft.LoraConfig, or None for train_type=full


def checkpoint_to_resume(cfg: DictConfig, run: Run) -> str | None:
    """``resume=auto|never|PATH`` resolved before any weights load (None: a fresh start)."""
    return resolve_resume(cfg.resume, run.dir)


def load_data(cfg: DictConfig, run: Run) -> Data:
    """The datasets, every prompt measured against the length bounds, and the reward audit: all before weights."""
    policy = prepare_policy(cfg, warmstart=False, limits=run.limits)
    bundle = build_datasets(cfg.dataset, min_pixels=run.limits.min_pixels, max_pixels=run.limits.max_pixels,
                            seed=cfg.trainer.seed, video=cfg.model.video)
    # Every prompt, measured with its own image's tokens, against trainer.max_length and the rollout context;
    # over-long rows are named (or skipped, dataset.on_long_prompt).
    # rollout.tools: prompts list the tools (Qwen's tool format, mmr1.rollout.tools.template), and the completion
    # budget must hold max_tool_calls tool responses.
    runner = tool_runner(cfg, run.limits)
    schemas, budget = None, None
    if runner is not None:
        enable_tools(policy.processor)
        schemas = [spec.schema for spec in runner.specs]
        budget = ToolBudget(runner.settings.max_calls, tool_response_tokens(policy.processor, runner.settings))
    fit = preflight(policy.processor, bundle, max_length=cfg.trainer.max_length, context=cfg.rollout.max_model_len,
                    max_completion_length=cfg.trainer.max_completion_length,
                    skip=data_skips_long_prompts(cfg.dataset), tools=schemas, tool_budget=budget)
    audit = None
    if run.main:
        write_json(run.dir / "preflight.json", dataclasses.asdict(fit))  # the longest prompt, the rows skipped
        # Which wrong or degenerate completions the rewards pay, on this run's first rows: audit.json and a
        # warning; seconds, never fails the run.
        audit = audit_at_start(cfg, run.reward_funcs, bundle.train, run.dir)
    return Data(bundle=bundle, policy=policy, fit=fit, reward_audit=audit, tools=runner)


def load_policy(cfg: DictConfig, data: Data) -> Model:
    """The weights GRPO starts from (the warm-start, built once and cached), with what trains decided."""
    path = warm_start(cfg, data.policy).path
    module = load_model(path, cfg.model)
    apply_freeze(module, cfg.model)  # the seed froze the vision tower and merger (before the optimizer exists)
    return Model(module=module, path=path, lora=peft_config(cfg.model, module))  # TRL wraps LoRA itself


def build_trainer(cfg: DictConfig, run: Run, model: Model, data: Data) -> tuple[Mmr1GRPOTrainer,
                                                                                 MetricsJsonlCallback]:
    """TRL's GRPOTrainer with mmr1's hooks, its rollout engine, its progress bar and wandb."""
    processor = data.policy.processor
    # DeepSpeed on CPU ranks: accelerate's state on DeepSpeed's CPU accelerator (not in grpo_args.json).
    kwargs = {**run.grpo_kwargs, **cpu_state(cfg, run.grpo_kwargs.get("ddp_timeout", 1800))}
    # No completion may hold a vision token (mmr1.rollout.vision_tokens): banned at sampling, by each backend's way.
    kwargs["generation_kwargs"], vision_ids = banned_generation(cfg.rollout.backend, cfg.rollout.ban_vision_tokens,
                                                                model.module.config, processor,
                                                                kwargs.get("generation_kwargs"))
    metrics = MetricsJsonlCallback(run.dir)
    stats = data.bundle.stats
    if stats.get("skipped"):
        metrics.extra["data/skipped_rows"] = stats["skipped"]
    for split, n in stats.get("long_prompts_skipped", {}).items():
        metrics.extra[f"data/long_prompts_skipped_{split}"] = n
    colocate = cfg.rollout.backend == "vllm" and cfg.rollout.vllm_mode == "colocate"
    # rollout.tools: each call bounded in worker processes (the processor renders Qwen's tool format: load_data).
    tools: dict[str, Any] = {}
    if data.tools is not None:
        tools = {"tool_runner": data.tools, "environment_factory": environment_factory(data.tools)}
    # dtype, eager, KV cache, image limits, unexpanded prompts: what TRL does not give the engine.
    with colocate_engine(cfg, processor) if colocate else nullcontext():
        trainer = Mmr1GRPOTrainer(
            model=model.module,
            banned_token_ids=vision_ids,
            context_length=cfg.rollout.max_model_len,  # completions end where the rollout context does
            video=typed_config(VideoConfig, cfg.model.video, key="model.video"),  # clips' frame bounds
            dynamic_sampling=cfg.trainer.dynamic_sampling,  # zero-variance groups dropped and refilled
            dynamic_sampling_max_batches=cfg.trainer.dynamic_sampling_max_batches,
            reward_funcs=run.reward_funcs,
            args=GRPOConfig(**kwargs),
            train_dataset=data.bundle.train,
            eval_dataset=data.bundle.eval,
            processing_class=processor,
            callbacks=[metrics],
            peft_config=model.lora,
            **tools,
        )
    if colocate:
        # vLLM's CPU build repacks its weights (TRL's per-tensor sync cannot load them); no stale vision features.
        sync_colocate_weights(trainer, on_cpu=not has_accelerator())
    if model.lora is not None:
        trainable, total = trainable_share(trainer.model)
        log.info("LoRA: %d of %d parameters trainable (%.2f%%)", trainable, total, 100 * trainable / total)
    if cfg.deepspeed.enabled and not trainer.is_deepspeed_enabled:
        raise RuntimeError("deepspeed is enabled in the config but the Trainer is not running DeepSpeed "
                           f"(accelerate distributed type {trainer.accelerator.distributed_type})")
    install_progress(trainer)  # one bar with step, reward, ETA instead of a log dict per step
    if trainer.is_world_process_zero():
        setup_wandb(cfg, run.dir)  # offline without a key; grouped by sweep, named by overrides
    return trainer, metrics


def fit(trainer: Mmr1GRPOTrainer, metrics: MetricsJsonlCallback, cfg: DictConfig, run: Run,
        resume: str | None) -> RunResult:
    """Train to the end through resume, atomic checkpoints, the collapse guard and Ctrl-C; save final/."""
    # transformers' "Writing model shards" bar at every checkpoint would break the training bar.
    with weight_bars_off():
        outcome = run_training(trainer, cfg, run.dir, resume, metrics)
        if metrics.summary:  # runtime, samples/s, train_loss: the Trainer's own train_results.json
            trainer.save_metrics("train", metrics.summary, combined=False)
        # Every rank: under ZeRO-3 saving gathers the sharded weights (a collective); the Trainer writes on rank 0.
        trainer.save_model(str(run.dir / "final"))
    return outcome


def finish(trainer: Mmr1GRPOTrainer, cfg: DictConfig, run: Run, model: Model, data: Data, outcome: RunResult,
           started: float) -> dict[str, Any]:
    """final/'s processor, curves.png and run_info.json (with the summary main() prints); the last metrics row."""
    gate = warmstart_gate(model.path)  # the warm-start's greedy held-out accuracy: the starting reference
    rows = read_metrics(run.dir / "metrics.jsonl")
    if trainer.is_world_process_zero():
        data.policy.processor.save_pretrained(str(run.dir / "final"))
        plot_curves(run.dir / "metrics.jsonl", run.dir / "curves.png", events=outcome.events,
                    beta=cfg.trainer.beta, warmstart_gate=gate)
        info = {"status": outcome.status, "steps": trainer.state.global_step,
                "wall_time_s": round(time.time() - started, 1), "world_size": trainer.args.world_size}
        summary = build_summary(run.dir, **info, max_steps=trainer.state.max_steps, warmstart_gate=gate)
        write_run_info(run.dir, **info, model_path=model.path, summary=summary, reward_audit=data.reward_audit)
    return rows[-1] if rows else {}
