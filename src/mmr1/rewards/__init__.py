"""Rewards: registry, the seed's rewards (`external_r1v_acc`, `format`) and the sandbox that runs them.

Public API (scripts outside the package use these names):

- `get(name)` -> the plain reward callable (registry name, dotted path, or from `plugins=`);
- `register(name, ...)` decorator for new rewards (plugins use it);
- `build_reward_funcs(reward_cfg, run_dir)` -> TRL reward functions behind the sandbox;
- `RewardConfig`, `RewardConfigError`, `shutdown()`.
"""

from mmr1.rewards.config import OnAllZero, RewardConfig, RewardConfigError
from mmr1.rewards.funcs import FAILURES_FILE, build_reward_funcs
from mmr1.rewards.registry import REWARDS, get, load_plugins, names, register
from mmr1.rewards.sandbox import SandboxError, WorkerPool, shutdown
from mmr1.rewards.text import completion_text
from mmr1.rewards.watchdog import RewardWatchdogError, WatchedReward

__all__ = [
    "FAILURES_FILE",
    "REWARDS",
    "WatchedReward",
    "OnAllZero",
    "RewardConfig",
    "RewardConfigError",
    "RewardWatchdogError",
    "SandboxError",
    "WorkerPool",
    "build_reward_funcs",
    "completion_text",
    "get",
    "load_plugins",
    "names",
    "register",
    "shutdown",
]
