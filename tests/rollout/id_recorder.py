"""Reward plugins for the rollout tests. `record_completion_ids` records what the trainer trains on: every
completion's token ids, one JSON list a line, appended to $MMR1_TEST_COMPLETION_IDS. It pays 0 (run with
reward.all_zero_patience=0).

Loaded by path through `reward.plugins`; not collected by pytest (no `test_` prefix)."""

import json
import os

from mmr1.rewards import register


@register("record_completion_ids")
def record_completion_ids(completions, completion_ids, **kwargs):
    with open(os.environ["MMR1_TEST_COMPLETION_IDS"], "a") as f:
        for ids in completion_ids:
            f.write(json.dumps([int(t) for t in ids]) + "\n")
    return [0.0] * len(completions)


@register("pays_length")
def pays_length(completions, **kwargs):
    """The completion's length in characters / 100: a signal even a random model's completions differ on, so that
    GRPO's advantages (and so its updates) are not all zero."""
    return [len(c[0]["content"]) / 100 for c in completions]
