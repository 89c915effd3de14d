"""Test-only rewards, loaded through `reward.plugins=[this file]` (not collected: no `test_` prefix).

They run inline in the trainer process (`isolate=False`) and read TRL's `trainer_state`, so a test
can make a run slow or collapse at a chosen step through environment variables:

- `hash_reward`: a fixed pseudo-random score per completion text in [0, 1]: rewards that differ within
  a group, so GRPO has non-zero advantages and the weights actually move on an untrained tiny model.
  `MMR1_TEST_SLOW_FROM=k` makes every call from global step k on sleep `MMR1_TEST_SLOW_S` seconds after
  touching `MMR1_TEST_SENTINEL` (the test then knows the run sits inside a step).
- `collapse_reward`: `hash_reward` scaled to [0.5, 1] until step `MMR1_TEST_COLLAPSE_AT`, then a
  collapse: scores of 0 or -20 (the mean falls by ~10, and with `trainer.scale_rewards=none` the
  advantages, so the gradient, grow ~60x). `MMR1_TEST_COLLAPSE_ONCE=1` makes it healthy again once
  the step counter goes back (a rollback happened).
"""

import hashlib
import json
import os
import time
from pathlib import Path

from mmr1.rewards import register

_seen = {"max_step": -1, "rolled_back": False}


def _text(c) -> str:
    return c if isinstance(c, str) else c[0]["content"]


def _u(text: str) -> float:
    return int(hashlib.sha1(text.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def _step(kwargs) -> int:
    return int(getattr(kwargs.get("trainer_state"), "global_step", 0) or 0)


@register("hash_reward", isolate=False, pure=True)
def hash_reward(completions, **kwargs):
    slow_from = os.environ.get("MMR1_TEST_SLOW_FROM")
    if slow_from is not None and _step(kwargs) >= int(slow_from):
        sentinel = os.environ.get("MMR1_TEST_SENTINEL")
        if sentinel:
            Path(sentinel).write_text(str(_step(kwargs)))
        time.sleep(float(os.environ.get("MMR1_TEST_SLOW_S", "60")))
    trace = os.environ.get("MMR1_TEST_TRACE")
    if trace:  # what the run saw, to tell a data-order difference from a sampling one
        with open(trace, "a") as f:
            f.write(json.dumps({"step": _step(kwargs), "solution": list(kwargs.get("solution", [])),
                                "completions": [_text(c) for c in completions]}) + "\n")
    return [_u(_text(c)) for c in completions]


@register("collapse_reward", isolate=False, pure=True)
def collapse_reward(completions, **kwargs):
    step = _step(kwargs)
    if step < _seen["max_step"]:
        _seen["rolled_back"] = True
    _seen["max_step"] = max(_seen["max_step"], step)
    at = int(os.environ.get("MMR1_TEST_COLLAPSE_AT", "10**9"))
    healed = _seen["rolled_back"] and os.environ.get("MMR1_TEST_COLLAPSE_ONCE") == "1"
    if step >= at and not healed:
        return [0.0 if _u(_text(c)) < 0.5 else -20.0 for c in completions]
    return [0.5 + 0.5 * _u(_text(c)) for c in completions]


# `task_reward`: pays each row by the task it came from (the mixture's `task` column), so that per-task means are
# distinguishable and a mislabelled row shows: synthetic_count 0.25, synthetic_geoqa 0.5, synthetic_chart 0.75.
TASK_PAY = {"synthetic_count": 0.25, "synthetic_geoqa": 0.5, "synthetic_chart": 0.75}


@register("task_reward", isolate=False, pure=True)
def task_reward(completions, task=None, **kwargs):
    return [TASK_PAY.get(t, 0.0) for t in (task or [None] * len(completions))]
