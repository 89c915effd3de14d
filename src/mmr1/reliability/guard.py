"""Collapse guard: catch a GRPO collapse within a few steps instead of burning the rest of the budget.

The seed's math runs "might become unstable ... causing the model to collapse ... with no subsequent
recovery": the reward falls while loss, grad norm and KL spike. Per logged step the detector compares
each watched reward mean with its running mean over the last ``window`` healthy steps, and KL / grad
norm with theirs. A collapse is a reward drop beyond ``reward_drop`` *together with* a KL or grad-norm
off its scale by ``spike_factor`` x (a spike, or a fall to ~0: a dead policy has no gradient), for
``patience`` consecutive logged steps: either alone is ordinary GRPO noise (a hard batch, an easy
batch). A non-finite loss or grad norm trips at once (HF's
``logging_nan_inf_filter`` is off, so a NaN reaches us rather than a running average).

``CollapseDetector`` is pure (rows in, trips out) so it can replay any ``metrics.jsonl``:
``python -m mmr1.reliability.guard replay RUN_DIR/metrics.jsonl ...`` prints what the guard (with the
default or given thresholds) would have done: that is how the defaults were checked against healthy runs.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import math
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from mmr1.reliability.config import GuardAction, GuardConfig, as_guard_config
from mmr1.tracking.jsonl import as_number, read_metrics

log = logging.getLogger("mmr1.reliability")

EVENTS_FILE = "guard_events.jsonl"
_NOT_TRAIN_ROW = ("eval_", "train_runtime", "train_loss")


@dataclass
class Trip:
    step: int
    reason: str  # "collapse" | "nonfinite"
    streak_start: int  # first step of the bad streak: checkpoints from here on are suspect
    numbers: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        nums = ", ".join(f"{k}={v:.4g}" for k, v in self.numbers.items())
        return f"guard trip at step {self.step} ({self.reason}, streak from step {self.streak_start}): {nums}"


class CollapseDetector:
    def __init__(self, cfg: GuardConfig):
        self.cfg = cfg
        self.history: dict[str, deque] = {}
        self.streak: list[tuple[int, dict[str, float]]] = []

    def _ref(self, key: str) -> float | None:
        h = self.history.get(key)
        if h is None or len(h) < self.cfg.min_history:
            return None
        return sum(h) / len(h)

    def _remember(self, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.history.setdefault(k, deque(maxlen=self.cfg.window)).append(v)

    def streak_start(self) -> int | None:
        return self.streak[0][0] if self.streak else None

    def update(self, step: int, row: dict[str, Any]) -> Trip | None:
        for key in self.cfg.nonfinite_keys:
            v = as_number(row.get(key))
            if v is not None and not math.isfinite(v):
                self.streak.clear()
                return Trip(step, "nonfinite", step, {key: v})
        rewards = {k: v for k, raw in row.items() if any(fnmatch.fnmatchcase(k, p) for p in self.cfg.reward_keys)
                   if (v := as_number(raw)) is not None and math.isfinite(v)}
        if not rewards:
            return None  # a step without rollouts (num_iterations > 1 reuse): no verdict, streak unchanged
        spikes = {k: v for k in self.cfg.spike_keys if (v := as_number(row.get(k))) is not None and math.isfinite(v)}
        numbers: dict[str, float] = {}
        dropped = spiked = False
        for k, v in rewards.items():
            ref = self._ref(k)
            if ref is not None and ref - v > self.cfg.reward_drop:
                dropped = True
                numbers.update({k: v, f"{k}/running_mean": ref, f"{k}/drop": ref - v})
        for k, v in spikes.items():
            ref = self._ref(k)
            if ref is None:
                continue
            ratio = v / ref if ref > 0 else (math.inf if v > 0 else 1.0)
            # Either way off its scale: the seed's collapse spikes; a dead policy (every completion the
            # same truncated string, measured on the tiny model at lr 1e-3) has a gradient of ~0.
            if ratio > self.cfg.spike_factor or ratio < 1 / self.cfg.spike_factor:
                spiked = True
                numbers.update({k: v, f"{k}/running_mean": ref, f"{k}/ratio": ratio})
        values = {**rewards, **spikes}
        if not (dropped and spiked):
            for _, old in self.streak:  # a streak that broke was noise: it belongs to the reference
                self._remember(old)
            self.streak.clear()
            self._remember(values)
            return None
        self.streak.append((step, values))  # kept out of the reference: a collapse must not become the norm
        if len(self.streak) < self.cfg.patience:
            return None
        trip = Trip(step, "collapse", self.streak[0][0], numbers)
        self.streak.clear()
        return trip


def read_events(run_dir: str | Path) -> list[dict]:
    return read_metrics(Path(run_dir) / EVENTS_FILE)


def append_event(run_dir: str | Path, event: dict) -> None:
    with open(Path(run_dir) / EVENTS_FILE, "a") as f:
        f.write(json.dumps(event, default=str) + "\n")


def curve_events(run_dir: str | Path) -> list[dict]:
    """guard_events.jsonl as ``plot_curves(events=...)`` wants them."""
    out = []
    for e in read_events(run_dir):
        if e.get("event") == "trip":
            out.append({"step": e["step"], "label": f"guard: {e.get('reason')} -> {e.get('action')}"})
        elif e.get("event") in ("rollback", "gave_up"):
            out.append({"step": e["to_step"], "label": f"{e['event']} to step {e['to_step']}"})
    return out


class GuardCallback(TrainerCallback):
    """Runs the detector on every train log row; must sit before MetricsJsonlCallback so that the
    ``guard/*`` keys it adds to a trip's row land in metrics.jsonl."""

    def __init__(self, cfg: GuardConfig, run_dir: str | Path):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.detector = CollapseDetector(cfg)
        self.pending: Trip | None = None  # a trip that asked the run to stop (stop/rollback)
        self.annotate: dict[str, Any] = {}  # merged into the next train row (e.g. after a rollback)

    def keep_before(self) -> int | None:
        return self.detector.streak_start()

    def on_train_begin(self, args, state, control, **kwargs):
        # The running means continue across a resume: rebuilt from the rows the resumed run keeps.
        self.detector = CollapseDetector(self.cfg)
        self.pending = None
        for row in read_metrics(self.run_dir / "metrics.jsonl"):
            if row.get("step", 0) <= state.global_step and not any(k.startswith(_NOT_TRAIN_ROW) for k in row):
                self.detector.update(row["step"], row)
        self.detector.streak.clear()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not self.cfg.enabled or not logs or any(k.startswith(_NOT_TRAIN_ROW) for k in logs):
            return
        if self.annotate:
            logs.update(self.annotate)
            self.annotate = {}
        trip = self.detector.update(state.global_step, logs)
        if trip is None:
            return
        action = self.cfg.action.value
        logs.update({"guard/trip": 1, "guard/reason": trip.reason, "guard/streak_start": trip.streak_start,
                     **{f"guard/{k}": v for k, v in trip.numbers.items()}})
        if state.is_world_process_zero:
            append_event(self.run_dir, {"event": "trip", "action": action, **asdict(trip)})
        log.warning("%s; action=%s", trip.describe(), action)
        if self.cfg.action != GuardAction.warn:
            self.pending = trip
            control.should_training_stop = True
            control.should_save = False  # never checkpoint the collapsed state


def replay(paths: list[str], cfg: GuardConfig) -> dict[str, list[Trip]]:
    """What the guard would have done on each metrics.jsonl."""
    out = {}
    for p in paths:
        det = CollapseDetector(cfg)
        out[p] = [t for row in read_metrics(p) if (t := det.update(row.get("step", 0), row)) is not None]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mmr1.reliability.guard",
                                 description="Replay the collapse guard over metrics.jsonl files.")
    ap.add_argument("command", choices=["replay"])
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="guard overrides, e.g. patience=2")
    ns = ap.parse_args(argv)
    from omegaconf import OmegaConf

    # The same key=value grammar as Hydra's command line; a typo or a wrong type names guard.<key>.
    cfg = as_guard_config(OmegaConf.from_dotlist(ns.set))
    results = replay(ns.paths, cfg)
    steps = sum(len([1 for _ in open(p)]) for p in ns.paths)
    for p, trips in results.items():
        for t in trips:
            print(f"{p}: {t.describe()}")
    tripped = sum(1 for t in results.values() if t)
    print(f"{tripped}/{len(results)} runs tripped ({sum(map(len, results.values()))} trips in {steps} steps)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
