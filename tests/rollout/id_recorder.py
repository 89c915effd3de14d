"""A reward plugin that records what the trainer trains on: every completion's token ids, one JSON list a line,
appended to $MMR1_TEST_COMPLETION_IDS. It pays 0 (run with reward.all_zero_patience=0).

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
