"""The R1 format reward (registered as `format`), as ms-swift's built-in `format` defines it."""

from __future__ import annotations

import re

from mmr1.rewards.registry import register
from mmr1.rewards.text import completion_text

# ms-swift's pattern and flags, verbatim. `(?![\s\S])` is "end of string" (unlike `$` it does not
# accept a trailing newline); MULTILINE changes nothing under `re.match` but is kept to stay the
# same object as the seed's. Note `.*?` under DOTALL spans extra tags: `<answer>3</answer>2</answer>`
# passes, as it did in the seed.
R1_FORMAT = re.compile(r"^<think>.*?</think>\s*<answer>.*?</answer>(?![\s\S])", re.DOTALL | re.MULTILINE)


# Runs in the trainer process: one compiled regex over a length-capped completion cannot hang,
# and a pipe round trip per item would cost more than the match.
@register("format", isolate=False, columns=(), pure=True)
def format_reward(completions, **kwargs) -> list[float]:
    """1.0 iff the whole completion is `<think>...</think>` then `<answer>...</answer>`.

    >>> format_reward(["<think>2 cubes, 1 ball</think>\\n<answer>3</answer>", "<answer>3</answer>"])
    [1.0, 0.0]
    >>> format_reward([[{"role": "assistant", "content": "<think>a</think><answer>b</answer>\\n"}]])
    [0.0]
    """
    return [1.0 if R1_FORMAT.match(completion_text(c)) else 0.0 for c in completions]
