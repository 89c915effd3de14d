"""The typed ``guard`` node of the config (stored in Hydra's ConfigStore by the spine).

Defaults equal ``conf/guard/default.yaml`` (a test checks it); the why of each value is written there.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any


class GuardAction(str, Enum):
    warn = "warn"  # log the trip (metrics.jsonl, guard_events.jsonl, curves.png), keep training
    stop = "stop"  # end the run with an error naming the trip and the last good checkpoint
    rollback = "rollback"  # reload the last good checkpoint, lower the lr, reshuffle, continue


@dataclass
class GuardConfig:
    enabled: bool = True
    action: GuardAction = GuardAction.rollback
    # fnmatch patterns of the reward means watched for a drop (TRL logs rewards/<name>/mean).
    reward_keys: list[str] = field(default_factory=lambda: ["rewards/*/mean"])
    reward_drop: float = 0.3
    spike_keys: list[str] = field(default_factory=lambda: ["kl", "grad_norm"])
    spike_factor: float = 5.0
    patience: int = 3
    window: int = 20
    min_history: int = 10
    nonfinite_keys: list[str] = field(default_factory=lambda: ["loss", "grad_norm"])
    max_rollbacks: int = 2
    lr_factor: float = 0.5
    save_on_interrupt: bool = True


class GuardConfigError(ValueError):
    pass


def as_guard_config(cfg: Any) -> GuardConfig:
    """A GuardConfig from an OmegaConf node, a mapping or a GuardConfig; validated."""
    if isinstance(cfg, GuardConfig):
        values = {f.name: getattr(cfg, f.name) for f in fields(GuardConfig)}
    else:
        if cfg is None:
            cfg = {}
        try:
            from omegaconf import DictConfig, OmegaConf

            if isinstance(cfg, DictConfig):
                cfg = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
        except ImportError:  # pragma: no cover
            pass
        unknown = sorted(set(cfg) - {f.name for f in fields(GuardConfig)})
        if unknown:
            raise GuardConfigError(f"guard: unknown key(s) {unknown}")
        values = dict(cfg)
    out = GuardConfig(**values)
    try:
        out.action = GuardAction(getattr(out.action, "value", out.action))
    except ValueError:
        raise GuardConfigError(f"guard.action={out.action!r}: expected warn, stop or rollback") from None
    for key in ("reward_keys", "spike_keys", "nonfinite_keys"):
        setattr(out, key, [str(k) for k in getattr(out, key)])
    if out.patience < 1 or out.window < 1 or out.min_history < 1:
        raise GuardConfigError("guard.patience, guard.window and guard.min_history must be >= 1")
    if out.min_history > out.window:
        raise GuardConfigError(f"guard.min_history={out.min_history} exceeds guard.window={out.window}")
    if not 0 < out.lr_factor <= 1:
        raise GuardConfigError(f"guard.lr_factor={out.lr_factor}: must be in (0, 1]")
    if out.max_rollbacks < 0:
        raise GuardConfigError("guard.max_rollbacks must be >= 0")
    return out
