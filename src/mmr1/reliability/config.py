"""The typed ``guard`` node of the config (stored in Hydra's ConfigStore by the spine).

Every default and the why of each value live here; ``conf/guard/default.yaml`` only names the group.
Check thresholds against any run offline: ``python -m mmr1.reliability.guard replay RUN_DIR/metrics.jsonl
--set patience=2``. Types and unknown keys are checked by OmegaConf, values by ``__post_init__``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from mmr1.config.typed import typed_config


class GuardAction(str, Enum):
    warn = "warn"  # log the trip (metrics.jsonl, guard_events.jsonl, curves.png), keep training
    stop = "stop"  # end the run with an error naming the trip and the last good checkpoint
    # Reload the newest complete checkpoint from before the bad streak, lower the lr, reshuffle, continue
    # (how OPT-175B's logbook recovered from divergence).
    rollback = "rollback"


class GuardConfigError(ValueError):
    pass


@dataclass
class GuardConfig:
    """The collapse guard (mmr1.reliability.guard) and Ctrl-C behaviour. The seed's collapse: "a sharp drop
    in all rewards, a rapid increase in loss, grad_norm and KL divergence, with no subsequent recovery"."""

    enabled: bool = True
    action: GuardAction = GuardAction.rollback
    # fnmatch patterns of the reward means watched for a drop: the seed's two rewards and any plugin's
    # (TRL logs rewards/<name>/mean).
    reward_keys: list[str] = field(default_factory=lambda: ["rewards/*/mean"])
    # A drop of more than this (absolute; the seed's rewards are in [0, 1]) below the reward's running mean.
    # Healthy tiny runs: single-step drops reach 0.46 (99th percentile 0.19) but never together with an
    # off-scale gradient (README: false-trip measurement). 0.3 still sees an accuracy-only collapse from
    # GeoQA's ~0.3; the tiny model's real collapse takes format from ~0.97 to 0.
    reward_drop: float = 0.3
    # grad_norm and KL spike with the reward drop in the seed's collapse. KL is absent when beta = 0 (tiny
    # default); loss is not watched for spikes: GRPO's loss sits near 0 and changes sign.
    spike_keys: list[str] = field(default_factory=lambda: ["kl", "grad_norm"])
    # Off its running mean by this factor, either way: above (a spike; healthy tiny runs reach 8.6x on a
    # single step, 99th percentile 2.7x) or below 1/5 (a dead policy: the tiny model's real collapse at lr
    # 1e-3 emits one truncated string, every reward 0, gradient 0).
    spike_factor: float = 5.0
    # Consecutive logged steps with both a drop and a spike: one bad batch is noise, three is a trend
    # (llm-foundry's loss-spike callback waits > 4 steps at 2x; an AND of two signals needs fewer).
    patience: int = 3
    # Running means over the last 20 healthy steps: long enough to average out batch noise, short enough to
    # follow a reward that is still climbing.
    window: int = 20
    # No collapse verdict before 10 steps of history (the first steps of a run have no reference).
    min_history: int = 10
    # Non-finite values trip at once, whatever the streak (HF's NaN filter is off: see config/grpo_args.py).
    nonfinite_keys: list[str] = field(default_factory=lambda: ["loss", "grad_norm"])
    # Rollbacks before giving up (the run then ends on the last good weights, status guard_gave_up): a
    # collapse that comes back twice at a lower lr is a recipe problem, not bad luck.
    max_rollbacks: int = 2
    # lr x 0.5 per rollback: the usual first remedy for a divergence, still close to the recipe.
    lr_factor: float = 0.5
    # Ctrl-C / SIGTERM: finish the step, save a checkpoint, print the resume command (a second Ctrl-C stops
    # at once).
    save_on_interrupt: bool = True

    def __post_init__(self) -> None:
        try:
            self.action = GuardAction(getattr(self.action, "value", self.action))
        except ValueError:
            raise GuardConfigError(f"guard.action={self.action!r}: expected warn, stop or rollback") from None
        for key in ("reward_keys", "spike_keys", "nonfinite_keys"):
            setattr(self, key, [str(k) for k in getattr(self, key)])
        if self.patience < 1 or self.window < 1 or self.min_history < 1:
            raise GuardConfigError("guard.patience, guard.window and guard.min_history must be >= 1")
        if self.min_history > self.window:
            raise GuardConfigError(f"guard.min_history={self.min_history} exceeds guard.window={self.window}")
        if not 0 < self.lr_factor <= 1:
            raise GuardConfigError(f"guard.lr_factor={self.lr_factor}: must be in (0, 1]")
        if self.max_rollbacks < 0:
            raise GuardConfigError("guard.max_rollbacks must be >= 0")


def as_guard_config(cfg: Any) -> GuardConfig:
    """A validated GuardConfig from an OmegaConf node, a mapping, a GuardConfig or None (the defaults)."""
    return typed_config(GuardConfig, cfg, key="guard", error=GuardConfigError)
