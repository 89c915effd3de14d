"""``dry_run=true``: what the real run would fail on later, its launch plan and its memory, printed; no weights."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from mmr1.config.checks import check_runnable
from mmr1.config.typed import container
from mmr1.data.mixture import describe_source
from mmr1.launch.memory import memory_summary
from mmr1.launch.run import write_launch_plan
from mmr1.models.lora import plan_lines
from mmr1.rollout.tools.registry import load_function
from mmr1.rollout.tools.settings import tool_settings

SHOWN = ["learning_rate", "beta", "loss_type", "num_generations", "per_device_train_batch_size",
         "gradient_accumulation_steps", "max_completion_length", "num_iterations", "max_grad_norm",
         "temperature", "repetition_penalty", "use_vllm", "vllm_mode"]


def dry_run(cfg: DictConfig, grpo_kwargs: dict[str, Any], limits: Any, run_dir: Any) -> None:
    check_runnable(cfg)  # dataset files, system prompt, run dir
    _, layout = write_launch_plan(cfg, run_dir)  # launch.json; a layout that cannot work fails here
    print(f"mmr1 dry run: model={cfg.model.name_or_path} dataset={cfg.dataset.name} "
          f"(source={describe_source(container(cfg.dataset, enum_to_str=True))}) "
          f"rewards={list(cfg.reward.funcs)} rollout={cfg.rollout.backend}"
          f"{'/' + cfg.rollout.vllm_mode if cfg.rollout.vllm_mode else ''} "
          f"deepspeed={'zero' + str(cfg.deepspeed.stage) if cfg.deepspeed.enabled else 'off'}")
    print(f"  image pixels: min={limits.min_pixels} max={limits.max_pixels}")
    tools = tool_settings(cfg, limits)  # rollout.tools' bounds, checked
    if tools is not None:
        for entry in tools.entries:  # a typo or a missing tool file fails here, naming the entry (schemas: at start-up)
            load_function(entry)
        print(f"  tools: {tools.entries} (at most {tools.max_calls} call(s) per completion, inside "
              f"max_completion_length; {tools.timeout_s:g} s per call, {tools.round_timeout_s:g} s per round)")
    for line in plan_lines(cfg.model, cfg.rollout):  # lora/qlora: the adapters, and vLLM's merged weight sync
        print(line)
    for k in SHOWN:
        if k in grpo_kwargs:
            print(f"  {k} = {grpo_kwargs[k]}")
    # Memory before money: per-GPU model states, activations and the vLLM share for the planned layout.
    print(memory_summary(cfg, max_pixels=limits.max_pixels, world_size=layout.world_size))
