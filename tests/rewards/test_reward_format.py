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
