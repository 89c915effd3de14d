"""The typed `reward` node of the config (stored in Hydra's ConfigStore by the spine).

Only OmegaConf-friendly types here (str, int, float, bool, Optional, List, Enum) so a typo or a
wrong type in `conf/reward/*.yaml` or on the command line fails at startup. The defaults equal
`conf/reward/r1v.yaml` (a test checks it); the why of each value is written there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any


class RewardConfigError(ValueError):
    """A reward config that cannot work: raised at startup, naming the offending key and value."""


class OnAllZero(Enum):
    """What the watchdog does when a reward returns only zeros/failures for `all_zero_patience` calls."""

    warn = "warn"
    stop = "stop"


@dataclass
class RewardConfig:
    funcs: list[str] = field(default_factory=lambda: ["external_r1v_acc", "format"])
    weights: list[float] | None = None
    plugins: list[str] = field(default_factory=list)
    timeout_s: float = 10.0
    batch_timeout_s: float = 60.0
    num_workers: int = 2
    failure_reward: float | None = 0.0
    on_all_zero: OnAllZero = OnAllZero.warn
    all_zero_patience: int = 20
    max_failures_logged: int = 20


def as_reward_config(cfg: Any) -> RewardConfig:
    """Accept a RewardConfig, an OmegaConf node (typed or not) or a plain mapping; validate it.

    >>> as_reward_config({"funcs": ["format"], "on_all_zero": "stop"}).on_all_zero
    <OnAllZero.stop: 'stop'>
    """
    if isinstance(cfg, RewardConfig):
        values = {f.name: getattr(cfg, f.name) for f in fields(RewardConfig)}
    else:
        try:
            from omegaconf import DictConfig, OmegaConf

            if isinstance(cfg, DictConfig):
                cfg = OmegaConf.to_container(cfg, resolve=True)
        except ImportError:  # pragma: no cover - omegaconf is a dependency; plain dicts still work
            pass
        if not isinstance(cfg, Mapping):
            raise RewardConfigError(f"reward: expected a mapping or RewardConfig, got {type(cfg).__name__}")
        known = {f.name for f in fields(RewardConfig)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise RewardConfigError(f"reward: unknown key(s) {unknown}; known keys: {sorted(known)}")
        values = dict(cfg)
    values["on_all_zero"] = _on_all_zero(values.get("on_all_zero", OnAllZero.warn))
    out = RewardConfig(**values)
    out.funcs = list(out.funcs)
    out.plugins = [str(p) for p in out.plugins]
    out.weights = None if out.weights is None else [float(w) for w in out.weights]
    _validate(out)
    return out


def _on_all_zero(value: Any) -> OnAllZero:
    if isinstance(value, OnAllZero):
        return value
    try:
        return OnAllZero(str(value))
    except ValueError:
        raise RewardConfigError(
            f"reward.on_all_zero={value!r}: expected one of {[m.value for m in OnAllZero]}"
        ) from None


def _validate(cfg: RewardConfig) -> None:
    if not cfg.funcs:
        raise RewardConfigError("reward.funcs is empty: name at least one reward")
    dupes = sorted({f for f in cfg.funcs if cfg.funcs.count(f) > 1})
    if dupes:
        # TRL logs rewards/<name>/mean per function: two with one name would overwrite each other.
        raise RewardConfigError(f"reward.funcs names {dupes} more than once")
    if cfg.weights is not None and len(cfg.weights) != len(cfg.funcs):
        raise RewardConfigError(
            f"reward.weights has {len(cfg.weights)} values but reward.funcs has {len(cfg.funcs)} "
            f"({cfg.funcs}): give one weight per reward, or null for all 1.0"
        )
    for key in ("timeout_s", "batch_timeout_s"):
        if not getattr(cfg, key) > 0:
            raise RewardConfigError(f"reward.{key}={getattr(cfg, key)!r}: must be > 0 seconds")
    for key, low in (("num_workers", 1), ("all_zero_patience", 0), ("max_failures_logged", 0)):
        if int(getattr(cfg, key)) < low:
            raise RewardConfigError(f"reward.{key}={getattr(cfg, key)!r}: must be >= {low}")
