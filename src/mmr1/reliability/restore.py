"""The state Trainer and TRL do not restore themselves when a run resumes from a checkpoint.

What Trainer restores on resume: weights, optimizer, scheduler, scaler, RNG (python, numpy, torch),
the step counter, and the data position (it skips the batches already seen). What it does not, and
this module does:

- TRL's generation cycle: its micro-step counter (decides when to generate) restarts at
  0 and its buffered inputs (the rollouts reused by ``num_iterations > 1`` / gradient accumulation)
  is lost; a checkpoint taken mid-cycle then regenerates and shifts the schedule (TRL PR 3148). We
  save the buffer with the checkpoint when mid-cycle and restore both.
- The data order of later epochs: TRL's ``RepeatSampler`` draws one ``randperm`` per epoch from its
  own generator, seeded at construction; a resumed run in epoch e would replay epoch 0's order. We
  advance the fresh sampler's generator by the epochs already trained.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from mmr1.internals import (
    generation_state,
    repeat_sampler,
    resync_vllm,
    set_generation_state,
    wrap_checkpoint_load,
)
from mmr1.reliability.checkpoints import guard_saves

log = logging.getLogger("mmr1.reliability")

GRPO_STATE = "mmr1_grpo_state_rank{rank}.pt"


# --- model weights ------------------------------------------------------------------------------

def install_weight_loader(trainer: Any) -> None:
    """Make Trainer's resume load the checkpoint's weights for real.

    transformers 5 saves Qwen2.5-VL (and every model with a conversion mapping) under its legacy key
    names (``save_pretrained(save_original_format=True)``: ``model.layers.*``, ``visual.*``) while the
    module is ``model.language_model.*`` / ``model.visual.*``; ``Trainer._load_from_checkpoint`` then
    calls ``load_state_dict(strict=False)`` on the raw keys: every weight is "missing", a warning is
    printed, and training goes on from the *initial* weights with the checkpoint's optimizer state.
    ``from_pretrained`` applies the mapping, so the plain single-model case loads through it, strictly.
    Upstream: transformers#43701 (open; the fix PR #44366 was closed unmerged); pinned by
    tests/reliability/test_private_hooks.py, which fails once the installed transformers loads them itself.
    DeepSpeed, FSDP and PEFT keep Trainer's own loaders (their checkpoints are not ``save_pretrained``).

    Also installs ``checkpoints.guard_saves`` (the one trainer hook ``run_training`` sets up before any
    save): a save that runs out of disk stops the run with an error naming the folder.
    """
    guard_saves(trainer)

    def wrap(original: Any) -> Any:
        def load(resume_from_checkpoint: str, model: Any = None) -> None:
            plain = model is None and not (trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled
                                           or hasattr(trainer.model, "peft_config"))
            if not plain:
                return original(resume_from_checkpoint, model)
            load_weights(trainer.model, resume_from_checkpoint)

        return load

    wrap_checkpoint_load(trainer, wrap)


def load_weights(model: Any, checkpoint: str | Path) -> None:
    """Checkpoint weights into ``model`` in place, every key accounted for (raises otherwise)."""
    loaded = type(model).from_pretrained(str(checkpoint), dtype=next(model.parameters()).dtype, device_map="cpu")
    result = model.load_state_dict(loaded.state_dict(), strict=True)
    del loaded
    log.info("loaded weights from %s (%s)", checkpoint, result)


# --- TRL generation-cycle state -------------------------------------------------------------------

def _generate_every(trainer: Any) -> int:
    return int(trainer.args.steps_per_generation) * int(getattr(trainer, "num_iterations", 1))


def save_grpo_state(trainer: Any, ckpt: Path) -> None:
    """Mid-cycle only: the buffered rollouts the next micro-steps reuse (per rank)."""
    state = generation_state(trainer)
    if state is None:
        return
    step, buf = state
    if buf is None or step % _generate_every(trainer) == 0 or not ckpt.is_dir():
        return  # the next micro-step generates anyway
    rank = int(getattr(trainer.args, "process_index", 0))
    torch.save({"step": step, "buffered_inputs": buf}, ckpt / GRPO_STATE.format(rank=rank))


def restore_grpo_state(trainer: Any, state: Any, checkpoint: str | None, train_dataloader: Any) -> None:
    """Put TRL's micro-step where the straight run had it, and reload the mid-cycle buffer if one was saved."""
    if generation_state(trainer) is None:
        return
    step, buf = _micro_steps(trainer, state.global_step, train_dataloader), None
    if checkpoint is not None:
        rank = int(getattr(trainer.args, "process_index", 0))
        f = Path(checkpoint) / GRPO_STATE.format(rank=rank)
        if f.is_file():
            saved = torch.load(f, map_location=trainer.args.device, weights_only=False)
            buf = saved["buffered_inputs"]
            if int(saved["step"]) != step:
                log.warning("GRPO state in %s was saved at micro-step %s, resuming at %s", f, saved["step"], step)
                step = int(saved["step"])
    set_generation_state(trainer, step, buf)
    if checkpoint is not None:
        resync_vllm(trainer)  # vLLM must receive the restored weights before generating


def _micro_steps(trainer: Any, global_step: int, dataloader: Any) -> int:
    ga = int(trainer.args.gradient_accumulation_steps)
    try:
        batches = len(dataloader)
    except TypeError:  # iterable dataset: no epochs to account for
        return global_step * ga
    per_epoch = max(batches // ga + int(batches % ga > 0), 1)
    epochs, rest = divmod(global_step, per_epoch)
    return epochs * batches + rest * ga


# --- data order of later epochs -----------------------------------------------------------------

def fast_forward_sampler(train_dataloader: Any, epochs_trained: int) -> bool:
    """Advance TRL's sampler generator past the permutations of the epochs already trained."""
    sampler = repeat_sampler(train_dataloader)
    if sampler is None or epochs_trained <= 0 or not getattr(sampler, "shuffle", False):
        return False
    for _ in range(epochs_trained):
        torch.randperm(sampler.num_samples, generator=sampler.generator)
    return True


def epochs_trained(trainer: Any, global_step: int, dataloader: Any) -> int:
    ga = int(trainer.args.gradient_accumulation_steps)
    try:
        batches = len(dataloader)
    except TypeError:
        return 0
    return global_step // max(batches // ga + int(batches % ga > 0), 1)

