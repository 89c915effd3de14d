"""``run_training``: ``trainer.train`` wrapped in resume, atomic checkpoints, the guard and Ctrl-C.

A guard rollback is a resume: Trainer's own resume path reloads weights, optimizer, scheduler and
step from the last good checkpoint (the path the kill test proves exact); then the learning rate is
multiplied by ``guard.lr_factor`` and the data order and sampling RNG are reseeded, so the run does
not replay the batches that preceded the collapse. After ``guard.max_rollbacks`` it gives up: the
model gets the last good weights back and the run ends with status ``guard_gave_up``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, set_seed
from transformers.integrations.deepspeed import deepspeed_load_checkpoint

from mmr1.internals import insert_callbacks, load_checkpoint_weights, rewrap_for_deepspeed, scale_logged_lr, set_args
from mmr1.reliability.checkpoints import CheckpointCallback, clear_after, select_checkpoint
from mmr1.reliability.config import GuardAction, as_guard_config
from mmr1.reliability.guard import GuardCallback, Trip, append_event, curve_events, read_events
from mmr1.reliability.interrupt import InterruptCallback
from mmr1.reliability.restore import (
    epochs_trained,
    fast_forward_sampler,
    install_weight_loader,
    restore_grpo_state,
    save_grpo_state,
)
from mmr1.reliability.resume import resume_command
from mmr1.tracking.curves import plot_curves
from mmr1.tracking.run_dir import write_run_info
from mmr1.tracking.secrets import check_training_args

log = logging.getLogger("mmr1.reliability")
_SEED_STRIDE = 1000  # rollback n trains on seed + n * 1000: a new order, reproducible from the config


class GuardStop(RuntimeError):
    """guard.action=stop (or a rollback with no checkpoint to go back to) ended the run."""


@dataclass
class RunResult:
    status: str  # finished | guard_gave_up
    rollbacks: int = 0
    events: list[dict] = field(default_factory=list)


class _RestartCallback(TrainerCallback):
    """What Trainer's resume leaves out (see ``mmr1.reliability.resume``), plus a rollback's changes."""

    def __init__(self, trainer: Any):
        self.trainer = trainer
        self.checkpoint: str | None = None
        self.lr_scale = 1.0  # applied once, after Trainer loaded the scheduler state of the checkpoint
        self.reseed: int | None = None  # applied at the first step, after Trainer restored the RNG

    def on_train_begin(self, args, state, control, optimizer=None, lr_scheduler=None, train_dataloader=None,
                       **kwargs):
        restore_grpo_state(self.trainer, state, self.checkpoint, train_dataloader)
        if self.checkpoint is not None:
            fast_forward_sampler(train_dataloader, epochs_trained(self.trainer, state.global_step, train_dataloader))
        if self.lr_scale != 1.0:
            for group in optimizer.param_groups:
                group["lr"] *= self.lr_scale
                if "initial_lr" in group:
                    group["initial_lr"] *= self.lr_scale
            if hasattr(lr_scheduler, "base_lrs"):  # saved with later checkpoints: a resume keeps the lower lr
                lr_scheduler.base_lrs = [lr * self.lr_scale for lr in lr_scheduler.base_lrs]
            scale_logged_lr(lr_scheduler, self.lr_scale)  # what the Trainer logs for this step
            self.lr_scale = 1.0

    def on_step_begin(self, args, state, control, **kwargs):
        if self.reseed is not None:
            set_seed(self.reseed + int(getattr(args, "process_index", 0)))  # python, numpy, torch
            self.reseed = None


def run_training(trainer: Any, cfg: Any, run_dir: str | Path, resume: str | None, metrics_cb: Any) -> RunResult:
    """Train to the end (through rollbacks); exit 130/143 after a Ctrl-C/SIGTERM checkpoint."""
    run_dir = Path(run_dir)
    gcfg = as_guard_config(cfg.get("guard"))
    check_training_args(trainer.args)
    install_weight_loader(trainer)
    # Rotation moves from Trainer to mmr1's checkpoint callback (complete checkpoints only, rollback target kept).
    limit = trainer.args.save_total_limit
    set_args(trainer, save_total_limit=None)
    restart = _RestartCallback(trainer)
    guard = GuardCallback(gcfg, run_dir)
    interrupt = InterruptCallback(gcfg.save_on_interrupt)
    ckpt_cb = CheckpointCallback(limit, keep_before=guard.keep_before, save_extra=lambda p: save_grpo_state(trainer, p))
    insert_callbacks(trainer, metrics_cb, restart, guard)
    for cb in (ckpt_cb, interrupt):
        trainer.add_callback(cb)

    base_seed = int(trainer.args.seed)
    resume_step = _step_of(resume)
    rollbacks = sum(1 for e in read_events(run_dir) if e.get("event") == "rollback")
    earlier = sum(1 for e in read_events(run_dir) if e.get("event") == "rollback" and e["to_step"] < resume_step)
    set_args(trainer, seed=base_seed + earlier * _SEED_STRIDE)  # the data order the resumed trajectory had
    checkpoint = resume
    with interrupt.installed():
        while True:
            restart.checkpoint = checkpoint
            rewrap_for_deepspeed(trainer)  # a rollback's second train(): a fresh engine, loaded by the resume
            trainer.train(resume_from_checkpoint=checkpoint)
            if interrupt.fired:
                _exit_interrupted(trainer, interrupt, run_dir)
            trip, guard.pending = guard.pending, None
            if trip is None:
                return RunResult("finished", rollbacks, curve_events(run_dir))
            target, _ = select_checkpoint(run_dir, before_step=trip.streak_start)
            if gcfg.action == GuardAction.stop or target is None:
                _finish_curves(run_dir)
                why = "guard.action=stop" if gcfg.action == GuardAction.stop else "no complete checkpoint before it"
                raise GuardStop(f"{trip.describe()}. Run stopped ({why}). Last good checkpoint: {target}. "
                                f"Evidence: {run_dir / 'guard_events.jsonl'}, metrics.jsonl, curves.png.")
            to_step = _step_of(str(target))
            if rollbacks >= gcfg.max_rollbacks:
                if trainer.is_deepspeed_enabled:
                    # The live engine loads its own sharded states in place (as Trainer's load_best_model_at_end
                    # does); final/ is then gathered from them.
                    deepspeed_load_checkpoint(trainer.model_wrapped, str(target),
                                              load_module_strict=not hasattr(trainer.model, "peft_config"))
                else:
                    # End on the weights from before the trip, through install_weight_loader's loader.
                    load_checkpoint_weights(trainer, str(target))
                _event(trainer, run_dir, "gave_up", trip, target, to_step, rollbacks, gcfg)
                log.error("%s; gave up after %d rollback(s): final weights are %s's", trip.describe(),
                          rollbacks, target)
                return RunResult("guard_gave_up", rollbacks, curve_events(run_dir))
            rollbacks += 1
            _event(trainer, run_dir, "rollback", trip, target, to_step, rollbacks, gcfg)
            if trainer.is_world_process_zero():
                metrics_cb.truncate_after(to_step, archive=run_dir / "metrics_rolled_back.jsonl")
                clear_after(run_dir, to_step, f"rolled-back{rollbacks}")
            set_args(trainer, seed=base_seed + rollbacks * _SEED_STRIDE)
            restart.lr_scale = gcfg.lr_factor
            restart.reseed = trainer.args.seed
            guard.annotate = {"guard/rollbacks": rollbacks, "guard/rolled_back_from": trip.step}
            log.warning("guard: rolling back to %s (rollback %d of %d), lr x%s, seed %d", target, rollbacks,
                        gcfg.max_rollbacks, gcfg.lr_factor, trainer.args.seed)
            checkpoint = str(target)


def _step_of(checkpoint: str | None) -> int:
    if not checkpoint:
        return 0
    tail = Path(checkpoint).name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _event(trainer, run_dir: Path, kind: str, trip: Trip, target: Path, to_step: int, n: int, gcfg) -> None:
    if trainer.is_world_process_zero():
        append_event(run_dir, {"event": kind, "step": trip.step, "to_step": to_step, "checkpoint": str(target),
                               "rollbacks": n, "lr_factor": gcfg.lr_factor if kind == "rollback" else None})


def _finish_curves(run_dir: Path) -> None:
    try:
        plot_curves(run_dir / "metrics.jsonl", run_dir / "curves.png", events=curve_events(run_dir))
    except Exception as err:  # noqa: BLE001 - a plot must never hide why the run stopped
        log.warning("curves.png not drawn: %s", err)


def _exit_interrupted(trainer: Any, interrupt: InterruptCallback, run_dir: Path) -> None:
    step = trainer.state.global_step
    ckpt, _ = select_checkpoint(run_dir)
    if trainer.is_world_process_zero():
        _finish_curves(run_dir)
        write_run_info(run_dir, "interrupted", steps=step, checkpoint=str(ckpt) if ckpt else None)
        saved = f"checkpoint {ckpt}" if ckpt else "no checkpoint (guard.save_on_interrupt=false)"
        msg = (f"Interrupted at step {step}: {saved}.\nResume with:\n  {resume_command(run_dir)}")
        print(msg, flush=True)
        log.warning(msg)
    raise SystemExit(interrupt.exit_code())
