"""The benchmarks' answer extraction and comparison, as their authors' evaluation scripts do it.

A scorer is ``fn(completion, ground_truth) -> (extracted, correct)``. Each reproduces one script line for line,
failure cases included (they are the protocol too: a baseline was measured with them); the tests run each on the
edge cases its code implies, against a verbatim copy of R1-V's functions (tests/eval/test_benchmarks.py).
``reward`` (the training accuracy reward) is not here: it needs the reward functions, and mmr1.evaluate applies it
to every benchmark beside the authors' score.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from mmr1.data.catalog import Registry

Scorer = Callable[[str, Any], tuple[Any, bool]]
SCORERS: Registry[Scorer] = Registry("benchmark scorer")

# R1-V src/eval/test_qwen2vl_counting_superclevr.py:90 (Deep-Agent/R1-V@bbbbe3dc), extract_number_answer.
_R1V_NUMBER = re.compile(r"<answer>\s*(\d+)\s*</answer>")


@SCORERS.register("r1v_count")
def r1v_count(completion: str, ground_truth: Any) -> tuple[int | None, bool]:
    """R1-V's SuperCLEVR scorer (test_qwen2vl_counting_superclevr.py:88-95, 116): the first ``<answer>`` holding
    only digits and whitespace, as an int, equal to the ground truth. So ``3.0``, ``three``, ``3 objects``, no tags
    and an unclosed tag are all wrong, and of ``<answer>2</answer><answer>3</answer>`` the 2 counts.

    The authors' files hold ints; a ground truth written as a digit string elsewhere is read as that int (R1-V's
    ``int == str`` would score every row wrong, which no file of theirs exercises).
    """
    match = _R1V_NUMBER.search(completion)
    answer = int(match.group(1)) if match else None
    gold = int(ground_truth) if isinstance(ground_truth, str) and ground_truth.strip().isdigit() else ground_truth
    return answer, answer is not None and answer == gold


@SCORERS.register("r1v_math_verify")
def r1v_math_verify(completion: str, ground_truth: Any) -> tuple[str | None, bool]:
    """R1-V's GeoQA scorer (test_qwen2vl_geoqa.py:99-106): math-verify's ``parse`` of the WHOLE completion (the
    ``<think>`` text too, not the ``<answer>`` tag) with its default extraction, then ``verify(prediction,
    parse(ground_truth))`` — the two arguments in R1-V's order, which is the reverse of ``verify(gold, target)``.

    What follows from that, and is kept: math-verify takes a bare number only after whitespace, ``=`` or the start
    (``<answer>140</answer>`` yields nothing, ``<answer> 140 </answer>`` yields 140); the rightmost match wins, so
    a number in the reasoning can be graded instead of the answer; ground truths such as ``√{3}`` parse to nothing
    (never correct) and ``2√{3}`` to 2. R1-V pins math-verify 0.5.2; its two shipped GeoQA logs re-score
    identically under 0.5.2 and under the 0.9 mmr1 installs (754/754 rows each).
    """
    from math_verify import parse, verify

    model_answer = parse(completion)
    correct = bool(model_answer) and float(verify(model_answer, parse(str(ground_truth)))) > 0
    # R1-V logs str(model_answer[0]), None when parse found nothing (its IndexError branch).
    return (str(model_answer[0]) if model_answer else None), correct
