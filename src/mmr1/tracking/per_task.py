"""Per-task reward means of a task mixture (mmr1.data.mixture): ``rewards/<reward>/<task>/mean`` every step.

TRL logs ``rewards/<reward>/mean`` over the whole generation batch; a mixture's rows carry their ``task``, so
the same rewards split by task show which task a run learns (mmr1.trainer.grpo adds them to TRL's metrics,
evaluation's as ``eval_rewards/...``). A reward that returned None for a row (NaN) is left out of its
mean, as TRL leaves it out of its own.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence


def reward_key(reward: str, task: str) -> str:
    """The metric name of one reward's mean on one task (the task in the middle: TRL's prefix and suffix)."""
    return f"rewards/{reward}/{task}/mean"


def parse_key(key: str, prefix: str = "rewards/") -> tuple[str, str | None] | None:
    """(reward, task) of ``<prefix><reward>/<task>/mean``, (reward, None) of TRL's ``<prefix><reward>/mean``,
    None for any other key: readers of TRL's per-reward means must not take a task's for the reward's.

    >>> parse_key("rewards/format/mean"), parse_key("rewards/format/geoqa/mean"), parse_key("rewards/format/std")
    (('format', None), ('format', 'geoqa'), None)
    """
    if not (key.startswith(prefix) and key.endswith("/mean")):
        return None
    parts = key[len(prefix):-len("/mean")].split("/")
    if len(parts) == 1:
        return parts[0], None
    return (parts[0], parts[1]) if len(parts) == 2 else None


def task_names(rows: Sequence[dict], reward: str, prefix: str = "rewards/") -> list[str]:
    """The tasks with a logged mean of ``reward`` in ``rows``, sorted.

    >>> task_names([{"rewards/acc/b/mean": 1, "rewards/acc/a/mean": 0, "rewards/fmt/c/mean": 1}], "acc")
    ['a', 'b']
    """
    return sorted({p[1] for r in rows for k in r if (p := parse_key(k, prefix)) and p[0] == reward and p[1]})


def per_task_means(rewards: Sequence[Sequence[float]], tasks: Sequence[str],
                   names: Sequence[str]) -> dict[str, float]:
    """``{rewards/<name>/<task>/mean: mean}`` of ``rewards[i][j]`` (row i, reward j) grouped by ``tasks[i]``.

    >>> per_task_means([[1.0, 0.0], [0.0, 1.0], [1.0, float("nan")]], ["count", "geoqa", "count"], ["acc", "fmt"])
    {'rewards/acc/count/mean': 1.0, 'rewards/fmt/count/mean': 0.0, 'rewards/acc/geoqa/mean': 0.0, \
'rewards/fmt/geoqa/mean': 1.0}
    """
    if len(rewards) != len(tasks):
        raise ValueError(f"{len(rewards)} rows of rewards but {len(tasks)} task labels")
    sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for row, task in zip(rewards, tasks, strict=True):
        for name, value in zip(names, row, strict=True):
            if not math.isnan(value):
                acc = sums[reward_key(name, task)]
                acc[0] += value
                acc[1] += 1
    return {key: total / n for key, (total, n) in sums.items() if n}
