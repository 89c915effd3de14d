"""``+preset=rehearsal``: an experiment's exact configuration, run for real on a CPU.

A dry run proves that a configuration composes; a rehearsal proves that it runs. Only what needs GPUs or
downloads is swapped, each swap recorded (key, experiment value, rehearsal value), printed at start and
written to ``rehearsal.json``:

- the weights: the embedded tiny Qwen2.5-VL in float32, keeping the experiment's processor limits
  (``model.min_pixels``/``max_pixels``) and its warm-start setting;
- vLLM: transformers generate with the same sampling settings and the same context rule
  (``rollout.max_model_len`` still ends completions, mmr1.trainer.grpo); or, with ``rehearsal.rollout=vllm``
  (vLLM's CPU build installed), vLLM itself in colocate mode: the experiment's server becomes an engine in this
  process, eager and with a 1 GiB KV cache, and vLLM enforces ``rollout.max_model_len``, the image limits and
  the sampling settings as on the GPUs;
- DeepSpeed: off; the launcher: this one process;
- the layout: the experiment's N trainer ranks become gradient accumulation in one process (N x
  ``gradient_accumulation_steps``; the eval batch N x as large), so each optimizer step sees the same
  generation batch (prompts x num_generations: ClevrCount 4 x 24, GeoQA and Open R1 12 x 8) and averages
  the same number of micro-batch losses of the same size (the seed's per-device bnpo normalisation);
- steps: ``rehearsal.max_steps`` optimizer steps, evaluating (one eval batch) and saving once at the end;
- data: a hub source becomes the task's offline stand-in (same columns and solution format); a
  ``dataset.source=local`` copy of the hub files is used as it is. A mixture: the same per task, the mixed
  set cut to the steps' rows (``dataset.limit``), the eval batch split across the tasks.

Everything else (rewards, prompts, loss, beta, epsilon, scale_rewards, num_iterations, lengths, sampling,
dataloader workers, logging) is the experiment's.

``+preset=cpu`` (``rehearsal.exact=false``) takes the same hardware swaps from here (weights, precision,
rollouts, DeepSpeed, processes, a hub source's stand-in) and shrinks batch, lengths and steps in its own YAML:
one home for what a CPU needs.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mmr1.config.typed import container
from mmr1.models.loading import EMBEDDED_MODEL

log = logging.getLogger("mmr1.config.rehearsal")
HUB_SOURCES = ("hf", "modelscope")


def _get(cfg: DictConfig, key: str) -> Any:
    value = OmegaConf.select(cfg, key)
    return getattr(value, "value", value)  # enums read back as their names


def apply_rehearsal(cfg: DictConfig) -> list[dict[str, Any]]:
    """Turn ``cfg`` (an experiment with ``rehearsal.enabled``) into its CPU rehearsal, in place; idempotent.

    Returns the swaps (``{"setting", "experiment", "rehearsal"}``: not "key", a name the secret redaction
    blanks), also kept in ``cfg.rehearsal.swaps``."""
    if not cfg.rehearsal.enabled or cfg.rehearsal.applied:
        return list(container(cfg.rehearsal)["swaps"])
    swaps: list[dict[str, Any]] = []

    def swap(key: str, value: Any) -> None:
        old = _get(cfg, key)
        if old != value:
            OmegaConf.update(cfg, key, value, merge=False)
            swaps.append({"setting": key, "experiment": old, "rehearsal": value})

    launcher = cfg.launcher
    world = (launcher.nproc_per_node or 1) * (launcher.nnodes or 1)
    _swap_hardware(cfg, swap)
    if cfg.rehearsal.exact:
        _keep_the_batch(cfg, swap, world)
    elif _get(cfg, "dataset.source") in HUB_SOURCES:  # +preset=cpu: its YAML sizes the stand-in
        swap("dataset.source", "synthetic")
    cfg.rehearsal.swaps = swaps
    cfg.rehearsal.applied = True
    return swaps


def _swap_hardware(cfg: DictConfig, swap: Any) -> None:
    """Weights, precision, rollouts, DeepSpeed, processes: what needs a GPU or a download (both presets)."""
    launcher = cfg.launcher
    swap("model.name_or_path", EMBEDDED_MODEL)
    swap("model.torch_dtype", "float32")
    swap("model.attn_implementation", None)
    if cfg.model.train_type == "qlora":  # bitsandbytes' 4-bit layers need a GPU; the adapters stay the experiment's
        swap("model.train_type", "lora")
    swap("trainer.bf16", False)
    _swap_rollout(cfg, swap)
    swap("deepspeed.enabled", False)
    swap("launcher.name", "local")
    swap("launcher.nproc_per_node", 1)
    if (launcher.nnodes or 1) != 1:
        swap("launcher.nnodes", 1)


def _keep_the_batch(cfg: DictConfig, swap: Any, world: int) -> None:
    """The rehearsal proper: the N-rank generation batch in one process, a few steps, data for exactly them."""
    t = cfg.trainer
    steps = int(cfg.rehearsal.max_steps)
    # The N-rank layout as accumulation in one process: same generation batch, same micro-batches.
    swap("trainer.gradient_accumulation_steps", t.gradient_accumulation_steps * world)
    swap("trainer.per_device_eval_batch_size", t.per_device_eval_batch_size * world)
    swap("trainer.max_steps", steps)
    if t.save_strategy == "steps":
        swap("trainer.save_steps", steps)
    evaluates = t.eval_strategy == "steps"
    if evaluates:
        swap("trainer.eval_steps", steps)
    # Data: enough rows for the steps (one generation batch serves num_iterations steps) and one eval batch.
    prompts_per_batch = t.per_device_train_batch_size * t.gradient_accumulation_steps // t.num_generations
    train_rows = prompts_per_batch * math.ceil(steps / t.num_iterations)
    eval_rows = t.per_device_eval_batch_size // (t.num_generations_eval or t.num_generations) if evaluates else 0
    tasks = list(cfg.dataset.tasks or ())
    if tasks:
        # A mixture (mmr1.data.mixture): the mixed set is cut to the rows the steps need, each task's share of
        # them from its stand-in, and the eval batch is split across the tasks' own held-out rows.
        swap("dataset.limit", train_rows)
        for task in tasks:
            if _get(cfg, f"dataset.tasks.{task}.source") in HUB_SOURCES:
                swap(f"dataset.tasks.{task}.source", "synthetic")
                swap(f"dataset.tasks.{task}.num_samples", train_rows)
            swap(f"dataset.tasks.{task}.eval_size", math.ceil(eval_rows / len(tasks)))
    else:
        if _get(cfg, "dataset.source") in HUB_SOURCES:
            swap("dataset.source", "synthetic")
            swap("dataset.num_samples", train_rows)
        swap("dataset.eval_size", eval_rows)


def _swap_rollout(cfg: DictConfig, swap: Any) -> None:
    """``rehearsal.rollout``: transformers generate, or vLLM colocate in this one process (the CPU build)."""
    choice = cfg.rehearsal.rollout
    if choice == "vllm":
        if cfg.rollout.backend != "vllm":
            raise ValueError(f"rehearsal.rollout=vllm rehearses an experiment's vLLM rollouts, and this one has "
                             f"rollout.backend={cfg.rollout.backend!r}")
        # One process owns the engine: the seed's server becomes colocate (same engine, same sampling settings).
        swap("rollout.vllm_mode", "colocate")
        # On a CPU: no CUDA graphs to capture, and a KV cache sized for the rehearsal's batch, not a share of RAM.
        swap("rollout.enforce_eager", True)
        if cfg.rollout.kv_cache_gib is None:
            swap("rollout.kv_cache_gib", 1)
        return
    if choice != "hf":
        raise ValueError(f"rehearsal.rollout must be 'hf' or 'vllm', got {choice!r}")
    swap("rollout.backend", "hf")
    swap("rollout.vllm_mode", None)
    # Long completions on a CPU: a preallocated KV cache instead of one concatenation per token
    # (same model, same sampling).
    swap("rollout.cache_implementation", "static")


def swap_table(swaps: list[dict[str, Any]]) -> str:
    rows = [("setting", "experiment", "rehearsal")] + [(s["setting"], repr(s["experiment"]), repr(s["rehearsal"]))
                                                   for s in swaps]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def announce(cfg: DictConfig) -> None:
    """Apply the rehearsal (if asked for) and print what it swapped; everything else is the experiment's."""
    if not cfg.rehearsal.enabled:
        return
    swaps = apply_rehearsal(cfg)
    what = ("the experiment's configuration on this CPU" if cfg.rehearsal.exact else
            "+preset=cpu: the experiment shrunk to a CPU pipeline check")
    print(f"mmr1 rehearsal: {what}, {len(swaps)} settings swapped (everything else as the experiment and the "
          f"preset have it):\n{swap_table(swaps)}", flush=True)
