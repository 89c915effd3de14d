"""``metrics.jsonl``: one JSON object per logging step, TRL's logged keys verbatim plus ``step``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from mmr1.tracking.jsonl import jsonable, read_metrics

# Logged once at the end of `Trainer.train` (train_runtime, train_loss, ...): a summary, not a step.
_SUMMARY_KEYS = {"train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss"}


class MetricsJsonlCallback(TrainerCallback):
    """Append TRL's train logs to ``metrics.jsonl``, eval logs to ``eval_metrics.jsonl``.

    On resume, rows at or after the resumed step are dropped first, so the file has exactly one row per
    logged step whatever happened between the checkpoint and the kill.
    """

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "metrics.jsonl"
        self.eval_path = self.run_dir / "eval_metrics.jsonl"
        self.extra: dict[str, Any] = {}  # merged into the next train row (e.g. data skip counts)
        # The end-of-train log (train_runtime, ...): a summary, not a step; train.py hands it to
        # Trainer.save_metrics, which writes train_results.json.
        self.summary: dict[str, Any] = {}

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.truncate_after(state.global_step)

    def truncate_after(self, step: int, archive: Path | None = None) -> None:
        """Drop rows after ``step``; a guard rollback keeps them, as evidence, in ``archive``."""
        for path in (self.path, self.eval_path):
            rows = read_metrics(path)
            kept = [r for r in rows if r.get("step", 0) <= step]
            if archive is not None and path == self.path and len(kept) != len(rows):
                with open(archive, "a") as f:
                    f.writelines(json.dumps(r) + "\n" for r in rows if r.get("step", 0) > step)
            if len(kept) != len(rows) or (path.exists() and not path.read_text().endswith("\n")):
                path.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        if _SUMMARY_KEYS & logs.keys():
            self.summary = {k: jsonable(v) for k, v in logs.items()}
            return
        row = {"step": state.global_step, **{k: jsonable(v) for k, v in logs.items()}}
        is_eval = any(k.startswith("eval_") for k in logs)
        if not is_eval and self.extra:
            row.update(self.extra)
        with open(self.eval_path if is_eval else self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
