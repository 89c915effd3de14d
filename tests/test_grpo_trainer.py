"""mmr1's GRPOTrainer subclass (mmr1.trainer.grpo), pinned to the installed TRL."""

from __future__ import annotations

import pandas as pd
import pytest
import wandb

from mmr1.trainer.grpo import cap_to_context, flat_messages

# A prompt as mmr1 builds it and TRL keeps it for log_completions (system turn as a list of text parts).
PROMPT = [
    {"role": "system", "content": [{"type": "text", "text": "A conversation between User and Assistant."}]},
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many items are there?"}]},
]


def test_cap_to_context_cuts_each_completion_to_its_room():
    prompts = [[0] * 1000, [0] * 300, [0] * 1024]
    completions = [[1] * 700, [1] * 700, [1] * 5]
    logprobs = [[-0.5] * 700, [-0.5] * 700, [-0.5] * 5]
    out, lps = cap_to_context(prompts, completions, logprobs, context=1024, max_completion_length=1024)
    assert [len(c) for c in out] == [24, 700, 0] and [len(lp) for lp in lps] == [24, 700, 0]
    # max_completion_length still binds when the context leaves more room.
    out, _ = cap_to_context(prompts[1:2], [[1] * 900], None, context=4096, max_completion_length=512)
    assert len(out[0]) == 512


def _table(prompts):
    from trl.trainer.utils import strip_images_from_messages

    df = pd.DataFrame({"step": [1] * len(prompts), "prompt": [strip_images_from_messages(p) for p in prompts],
                       "completion": [[{"role": "assistant", "content": "<answer> 3 </answer>"}]] * len(prompts)})
    return wandb.Table(dataframe=df)


def test_wandb_table_takes_flattened_vlm_prompts():
    # TRL 1.16 hands wandb the prompts as they are; wandb cannot type list content, and the seed's
    # --log_completions true --report_to wandb stopped at step 1. Flattened, the same table logs.
    with pytest.raises(TypeError, match="incompatible types"):
        _table([PROMPT, PROMPT])  # a logged step has many rows; the second no longer fits the first's type
    table = _table([flat_messages(PROMPT), flat_messages(PROMPT)])
    assert table.data[0][1][1]["content"] == "<image>How many items are there?"
