"""`format`: ms-swift's R1 format reward on literal completions, plain and conversational."""

import pytest

from mmr1.rewards import get


def conv(text):
    return [{"role": "assistant", "content": text}]


CASES = [
    ("<think>two cubes and a ball</think><answer>3</answer>", 1.0),
    ("<think>a</think>\n\n<answer> 3 </answer>", 1.0),
    ("<think>multi\nline\nthinking</think>\n<answer>\nThe measure is 29 degrees.\n</answer>", 1.0),
    ("<think></think><answer></answer>", 1.0),
    # the seed's regex accepts extra tags inside the lazy spans (the reward hack seen in tiny runs)
    ("<think>a</think><answer>3</answer>2</answer>", 1.0),
    ("<answer>3</answer>", 0.0),  # no think
    ("<think>a</think>", 0.0),  # no answer
    ("<think>a</think><answer>3</answer>\n", 0.0),  # trailing newline: (?![\s\S]) is a strict end
    ("<think>a</think><answer>3</answer> trailing", 0.0),
    (" <think>a</think><answer>3</answer>", 0.0),  # leading space
    ("<think>a</think>text<answer>3</answer>", 0.0),  # only whitespace may separate the blocks
    ("<answer>3</answer><think>a</think>", 0.0),
    ("", 0.0),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_format_literals_plain_and_conversational(text, expected):
    fmt = get("format")
    assert fmt([text]) == [expected]
    assert fmt(completions=[conv(text)]) == [expected]


def test_format_batch_and_trl_kwargs():
    texts = [t for t, _ in CASES]
    out = get("format")(
        prompts=["p"] * len(texts),
        completions=texts,
        completion_ids=[[1]] * len(texts),
        trainer_state=None,
        solution=["x"] * len(texts),
    )
    assert out == [e for _, e in CASES]


# ms-swift v3.2.1's Format reward, verbatim (swift/plugin/orm.py:281-287 at tag v3.2.1): the seed's
# `--reward_funcs format`. Kept here as upstream wrote it, so that a change on either side shows.
def ms_swift_v3_2_1_format(completions, **kwargs):
    import re

    pattern = r'^<think>.*?</think>\s*<answer>.*?</answer>(?![\s\S])'  # noqa: Q000 - verbatim
    matches = [re.match(pattern, content, re.DOTALL | re.MULTILINE) for content in completions]
    return [1.0 if match else 0.0 for match in matches]


def test_format_equals_ms_swift_v3_2_1_on_every_case_and_their_variants():
    import random

    rng = random.Random(0)
    parts = ["<think>", "</think>", "<answer>", "</answer>", "a", "3", " ", "\n", "\t", "x y", ""]

    def bit() -> str:
        return "".join(rng.choice(parts) for _ in range(rng.randint(0, 3)))

    # The format's skeleton with noise in every gap (inside the spans, between, before and after them).
    texts = [t for t, _ in CASES] + [
        f"{rng.choice(['', bit()])}<think>{bit()}</think>{rng.choice(['', ' ', chr(10), bit()])}<answer>{bit()}"
        f"</answer>{rng.choice(['', '', bit()])}" for _ in range(2000)]
    texts += [t + tail for t in texts[:len(CASES)] for tail in ("\n", " ", "\r", "\u2028", "</answer>")]
    assert sum(ms_swift_v3_2_1_format(texts)) > 50  # the variants do hit the format, not only misses
    assert get("format")(texts) == ms_swift_v3_2_1_format(texts)
    assert [e for _, e in CASES] == ms_swift_v3_2_1_format([t for t, _ in CASES])  # the cases are upstream's
