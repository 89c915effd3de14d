"""The typed `reward` node of the config (stored in Hydra's ConfigStore by the spine).

Every default and the why of each value live here; `conf/reward/*.yaml` set only what differs. Types and
unknown keys are checked by OmegaConf, values by `RewardConfig.__post_init__` (mmr1.config.typed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from mmr1.config.typed import typed_config


class RewardConfigError(ValueError):
    """A reward config that cannot work: raised at startup, naming the offending key and value."""


class OnAllZero(Enum):
    """What the watchdog does when a reward returns only zeros/failures for `all_zero_patience` calls."""

    warn = "warn"
    stop = "stop"


@dataclass
class RewardConfig:
    # The seed's rewards (`--reward_funcs external_r1v_acc format`): accuracy (the seed's MultiModalAccuracyORM,
    # result for result) and ms-swift's R1 format reward.
    funcs: list[str] = field(default_factory=lambda: ["external_r1v_acc", "format"])
    # None = every reward weighs 1.0 (TRL's default), as in the seed, which set no weights.
    weights: list[float] | None = None
    # Python files whose module registers more rewards (the seed's --external_plugins); the seed's accuracy
    # reward is built in, so none are needed for it.
    plugins: list[str] = field(default_factory=list)
    # Per-item wall clock. Twice math-verify's own 5 s alarm: its parse/verify time out first and give the
    # seed's result (0.0); the kill only fires on what that alarm cannot interrupt (C-level work, a hung
    # plugin). A normal item takes milliseconds.
    timeout_s: float = 10.0
    # Per-call wall clock: bounds the stall a batch of bad items can add to one GRPO step (items still
    # waiting when it runs out get failure_reward).
    batch_timeout_s: float = 60.0
    # Worker processes per training rank for the math-verify path; 2 keeps a rank's reward scoring off the
    # critical path without crowding the data-loader workers on the same cores.
    num_workers: int = 2
    # What a timed-out or raising item gets: 0.0, as the seed (its try/except gave 0.0); None makes TRL
    # ignore that reward for the item instead (it sums the others).
    failure_reward: float | None = 0.0
    # A reward giving only zeros/failures for this many consecutive calls is almost certainly broken (a
    # missing column, a wrong answer tag): warn loudly; `stop` aborts the run instead.
    on_all_zero: OnAllZero = OnAllZero.warn
    # 20 calls: long enough that an honestly hard start (GeoQA opens near 0.2 accuracy) does not trip it by
    # chance, short enough to catch a broken reward in minutes, not hours. 0 disables it.
    all_zero_patience: int = 20
    # The first failed items of a run written to run_dir/reward_failures.jsonl: enough to debug, not enough
    # to fill a disk when every item fails.
    max_failures_logged: int = 20
    # DAPO's overlong reward shaping (mmr1.rewards.overlong, conf/algorithm/dapo.yaml): the soft punish cache as a
    # fraction of trainer.max_completion_length (the paper's 4096 of 20480: 0.2); null: off.
    overlong_cache: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.on_all_zero, OnAllZero):  # built directly from Python with a string
            try:
                self.on_all_zero = OnAllZero(str(self.on_all_zero))
            except ValueError:
                raise RewardConfigError(f"reward.on_all_zero={self.on_all_zero!r}: expected one of "
                                        f"{[m.value for m in OnAllZero]}") from None
        self.funcs = [str(f) for f in self.funcs]
        self.plugins = [str(p) for p in self.plugins]
        self.weights = None if self.weights is None else [float(w) for w in self.weights]
        if not self.funcs:
            raise RewardConfigError("reward.funcs is empty: name at least one reward")
        if "soft_overlong" in self.funcs:
            raise RewardConfigError("reward.funcs names soft_overlong: set reward.overlong_cache instead (it is sized "
                                    "from trainer.max_completion_length and added to the training rewards)")
        dupes = sorted({f for f in self.funcs if self.funcs.count(f) > 1})
        if dupes:
            # TRL logs rewards/<name>/mean per function: two with one name would overwrite each other.
            raise RewardConfigError(f"reward.funcs names {dupes} more than once")
        if self.weights is not None and len(self.weights) != len(self.funcs):
            raise RewardConfigError(
                f"reward.weights has {len(self.weights)} values but reward.funcs has {len(self.funcs)} "
                f"({self.funcs}): give one weight per reward, or null for all 1.0"
            )
        for key in ("timeout_s", "batch_timeout_s"):
            if not getattr(self, key) > 0:
                raise RewardConfigError(f"reward.{key}={getattr(self, key)!r}: must be > 0 seconds")
        for key, low in (("num_workers", 1), ("all_zero_patience", 0), ("max_failures_logged", 0)):
            if int(getattr(self, key)) < low:
                raise RewardConfigError(f"reward.{key}={getattr(self, key)!r}: must be >= {low}")


@dataclass
class AuditConfig:
    """The reward audit (``python -m mmr1.rewards.audit``, mmr1.rewards.probes): adversarial completions built
    from real rows, scored by each reward of the experiment; also run, warn only, when training starts."""

    # Training runs it (seconds, warn only: its findings and its errors are logged, never raised).
    at_start: bool = True
    # Real rows whose gold solutions make the probes: a few cover a task's answer forms (a count, an angle, a
    # label) and keep it to about a second through the sandbox.
    rows: int = 3
    # The command exits 1 when a wrong or degenerate completion earns reward > 0 (a CI gate); training ignores it.
    strict: bool = False
    # The command, hub datasets only: null = the experiment's rows, or its offline stand-in (dataset.generator,
    # as +preset=rehearsal swaps it) when the hub cannot be reached; true = always the stand-in; false = never.
    stand_in: bool | None = None

    def __post_init__(self) -> None:
        if int(self.rows) < 1:
            raise RewardConfigError(f"audit.rows={self.rows!r}: must be >= 1 (rows of the dataset to probe)")


def as_audit_config(cfg: Any) -> AuditConfig:
    """A validated AuditConfig from an AuditConfig, an OmegaConf node, a plain mapping or None (the defaults).

    >>> as_audit_config({"rows": 2}).rows, as_audit_config(None).strict
    (2, False)
    """
    return typed_config(AuditConfig, cfg, key="audit", error=RewardConfigError)


def as_reward_config(cfg: Any) -> RewardConfig:
    """A validated RewardConfig from a RewardConfig, an OmegaConf node or a plain mapping.

    >>> as_reward_config({"funcs": ["format"], "on_all_zero": "stop"}).on_all_zero
    <OnAllZero.stop: 'stop'>
    """
    return typed_config(RewardConfig, cfg, key="reward", error=RewardConfigError)
