"""The terminal progress bar: step / max_steps, ETA, and the reward -- one line, not a dict per step.

transformers' ``ProgressCallback`` prints every log dict (30 keys with ``logging_steps: 1``), which
buries the bar. ``install(trainer)`` swaps it for ``RewardProgressBar``: the same tqdm bar, with the
reward, accuracy, format, KL and completion length as its postfix, a one-line summary per evaluation,
and the sweep point (``[2/4] beta=0.001``) as its description inside a ``--multirun``.
"""

from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm
from transformers import ProgressCallback

from mmr1.tracking.per_task import parse_key

# Postfix fields: (short name, metrics key or a predicate picking one). Short, so the bar fits 100 columns.
_POSTFIX = [("reward", "reward"), ("kl", "kl"), ("len", "completions/mean_length")]


def _fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def reward_postfix(logs: dict, prefix: str = "") -> dict[str, str]:
    """``{"reward": "0.81", "acc": "0.44", "format": "1", ...}`` from one TRL log row."""
    out = {}
    for short, key in _POSTFIX[:1]:
        if prefix + key in logs:
            out[short] = _fmt(logs[prefix + key])
    for k, v in logs.items():  # per-reward means: rewards/<name>/mean (a mixture's per-task means left out)
        parsed = parse_key(k, prefix + "rewards/")
        if parsed is not None and parsed[1] is None:
            name = parsed[0]
            out["acc" if "acc" in name.lower() else name] = _fmt(v)
    for short, key in _POSTFIX[1:]:
        if prefix + key in logs:
            out[short] = _fmt(logs[prefix + key])
    return out


def sweep_point_desc() -> str | None:
    """``[2/4] beta=0.001`` inside a Hydra multirun, else None."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if not HydraConfig.initialized():
            return None
        hc = HydraConfig.get()
        if hc.mode != RunMode.MULTIRUN:
            return None
        num = int(hc.job.num)
        total = os.environ.get("MMR1_SWEEP_TOTAL")  # set by mmr1.sweep.callback.SweepReport
        name = os.path.basename(hc.runtime.output_dir).split("_", 1)[-1]
        return f"[{num + 1}/{total}] {name}" if total else f"[{num + 1}] {name}"
    except Exception:  # noqa: BLE001 - a label for the progress bar, never worth a failed run
        return None


class RewardProgressBar(ProgressCallback):
    def __init__(self, desc: str | None = None):
        super().__init__()
        self.desc = desc

    def on_train_begin(self, args, state, control, **kwargs):
        self.current_step = state.global_step  # a resumed run starts the bar where it left off
        if state.is_world_process_zero:
            # Redirected to a file (CI, nohup, SLURM): a refresh every 30 s, not 10 carriage returns a second.
            interactive = sys.stderr.isatty()
            self.training_bar = tqdm(total=state.max_steps, initial=state.global_step, desc=self.desc,
                                     dynamic_ncols=True, mininterval=0.1 if interactive else 30.0)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or self.training_bar is None or not logs:
            return
        if "train_runtime" in logs:
            return  # the end-of-training summary: train_results.json has it
        if any(k.startswith("eval_") for k in logs):
            fields = reward_postfix(logs, prefix="eval_")
            self.training_bar.write(f"eval @ step {state.global_step}: "
                                    + " ".join(f"{k}={v}" for k, v in fields.items()))
            return
        self.training_bar.set_postfix(reward_postfix(logs), refresh=False)


def install(trainer, desc: str | None = None) -> None:
    """Replace the Trainer's dict-printing progress bar with ``RewardProgressBar`` (if it shows one)."""
    handler = trainer.callback_handler
    if not any(isinstance(cb, ProgressCallback) for cb in handler.callbacks):
        return  # disable_tqdm=True: the Trainer prints logs instead, leave that alone
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(RewardProgressBar(desc if desc is not None else sweep_point_desc()))
