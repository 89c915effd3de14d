"""`build_reward_funcs`: from the `reward` config to the list TRL's GRPOTrainer takes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmr1.rewards.config import as_reward_config
from mmr1.rewards.overlong import NAME as OVERLONG
from mmr1.rewards.overlong import overlong_spec
from mmr1.rewards.registry import load_plugins, spec
from mmr1.rewards.sandbox import WorkerPool
from mmr1.rewards.watchdog import FailureLog, WatchedReward

FAILURES_FILE = "reward_failures.jsonl"


def build_reward_funcs(reward_cfg: Any, run_dir: Path | None = None, *,
                       max_completion_length: int | None = None) -> list[WatchedReward]:
    """Validate the config, load plugins, resolve every name and wrap each reward in the sandbox.

    Everything that can be wrong with the config fails here, at startup, with a `RewardConfigError`
    naming the key (`reward.funcs`, `reward.plugins`, ...) and the value. The workers start now, in
    the background, so they are warm by the first generation batch. The returned callables keep
    the configured names (TRL logs `rewards/<name>/mean`); `close()` on any of them, or
    `mmr1.rewards.shutdown()`, stops the workers (interpreter exit does too).

    ``max_completion_length``: a training run's; with ``reward.overlong_cache`` set, DAPO's soft overlong penalty
    (``mmr1.rewards.overlong``) is added last. Text-only scorers (the audit's probes, evaluation) leave it None.
    """
    cfg = as_reward_config(reward_cfg)
    plugins = load_plugins(cfg.plugins)  # files first: they may register names used in reward.funcs
    specs = {name: spec(name) for name in cfg.funcs}
    if cfg.overlong_cache is not None and max_completion_length is not None:
        specs[OVERLONG] = overlong_spec(max_completion_length, cfg.overlong_cache)
    pool = None
    if any(s.isolate for s in specs.values()):
        pool = WorkerPool(cfg.num_workers, plugins).start()
    failures = FailureLog(
        Path(run_dir) / FAILURES_FILE if run_dir is not None else None, cfg.max_failures_logged
    )
    return [WatchedReward(name, s, cfg, pool, failures) for name, s in specs.items()]
