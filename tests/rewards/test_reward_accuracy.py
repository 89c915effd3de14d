"""`external_r1v_acc` equals the seed's MultiModalAccuracyORM (benchmarks/seed_orm.py) result for result."""

import importlib.util
import random
import threading
from pathlib import Path

import pytest

from mmr1.rewards import get
from mmr1.rewards.accuracy import external_r1v_acc, string_match

SEED_FILE = Path(__file__).resolve().parents[2] / "benchmarks" / "seed_orm.py"


def _load_seed():
    spec = importlib.util.spec_from_file_location("mmr1_seed_orm_reference", SEED_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.MultiModalAccuracyORM()


seed = _load_seed()


def conv(text):
    return [{"role": "assistant", "content": text}]


LITERALS = [
    # (completion, solution, expected) -- expected is what the seed gives
    ("<think>2 cubes, 1 ball</think><answer>3</answer>", "<answer> 3 </answer>", 1.0),
    ("<answer> 3 </answer>", "<answer>3</answer>", 1.0),  # whitespace inside the tags
    ("<answer>4</answer>", "<answer> 3 </answer>", 0.0),
    ("The answer is \\frac{1}{2}", "0.5", 1.0),  # LaTeX vs decimal, via math-verify
    ("<answer>0.5</answer>", "<answer>\\frac{1}{2}</answer>", 0.0),  # math-verify reads neither inside tags
    ("<answer> 0.5 </answer>", "<answer> $\\frac{1}{2}$ </answer>", 1.0),
    ("<answer>29°</answer>", "<answer>29°</answer>", 1.0),  # degrees: string match
    ("<answer>29 degrees</answer>", "<answer>29°</answer>", 0.0),
    ("<answer>Alabama</answer>", "<answer>Alabama</answer>", 1.0),  # words
    ("<answer>alabama</answer>", "<answer>Alabama</answer>", 0.0),
    ("<answer>three</answer>", "<answer> 3 </answer>", 0.0),
    ("3", "<answer> 3 </answer>", 1.0),  # missing tags: the whole stripped text
    ("I think it is 3", "<answer> 3 </answer>", 1.0),  # ... and math-verify finds the 3
    ("<answer>3", "<answer>3</answer>", 0.0),  # unclosed tag
    ("", "<answer>3</answer>", 0.0),  # empty completion
    ("", "", 1.0),  # both empty: the seed's string branch says equal
    ("   ", "", 1.0),
    ("<answer>\n3\n</answer>", "<answer>3</answer>", 0.0),  # multi-line tag: no DOTALL, whole text compared
    (None, "<answer>3</answer>", 0.0),  # not a string: both branches raise -> 0.0
    ("<answer>3</answer>", 3, 0.0),  # an int solution: the seed's string branch raises -> 0.0
]


@pytest.mark.parametrize(("completion", "solution", "expected"), LITERALS)
def test_literals_match_the_seed(completion, solution, expected):
    assert seed([completion], [solution]) == [expected]
    assert external_r1v_acc([completion], solution=[solution]) == [expected]
    if isinstance(completion, str):
        assert get("external_r1v_acc")(completions=[conv(completion)], solution=[solution]) == [expected]


def test_math_verify_known_wrong_answers_are_kept():
    # math-verify issue 60: two different lines "verify" equal; issue 14: 1/2^99 == 1/2^98.
    # The seed inherits both; mmr1 reproduces the seed, so these stay 1.0 (documented, not fixed).
    cases = [("3*x-1*y+13=0", "3x + 4y + 14=0"), ("$\\frac{1}{2^{99}}$", "$\\frac{1}{2^{98}}$")]
    for completion, solution in cases:
        assert seed([completion], [solution]) == [1.0]
        assert external_r1v_acc([completion], solution=[solution]) == [1.0]


# (solutions, answers meaning the same, wrong answers): GRPO-like pairs, right and wrong in many forms.
TRUTHS = [
    (
        ["<answer> 3 </answer>", "<answer>3</answer>", "3"],
        ["3", " 3 ", "$3$", "\\boxed{3}", "3.0"],
        ["4", "2", "three", "3 objects"],
    ),
    (
        ["<answer>\\frac{1}{2}</answer>", "0.5", "$\\frac{1}{2}$", "<answer> 0.5 </answer>"],
        ["\\frac{1}{2}", "0.5", "1/2", "$0.5$", "\\dfrac{1}{2}", "$\\frac{1}{2}$"],
        ["\\frac{1}{3}", "0.25"],
    ),
    (
        ["<answer>29°</answer>", "29", "<answer> 29 </answer>", "$29^\\circ$"],
        ["29°", "29 degrees", "29", "$29^\\circ$", "29^{\\circ}", "\\angle ADC = 29"],
        ["58", "61°", "32"],
    ),
    (["<answer>Alabama</answer>", "Alabama"], ["Alabama", "alabama", "AL"], ["Texas", ""]),
    (["<answer>6.0% - 6.5%</answer>"], ["6.0% - 6.5%", "6.0%-6.5%", "6%"], ["5%", "7.0% - 7.5%"]),
    (
        ["$\\frac{\\sqrt{3}}{2}$", "<answer> $\\frac{\\sqrt{3}}{2}$ </answer>"],
        ["\\frac{\\sqrt{3}}{2}", "$\\frac{\\sqrt{3}}{2}$", "0.866", "\\sqrt{3}/2"],
        ["\\frac{1}{2}", "\\sqrt{3}"],
    ),
    (["", "  ", "<answer></answer>"], ["", " "], ["x", "0"]),
    (
        ["<answer>\n4\n</answer>", "<answer>three</answer>", "<answer> $\\boxed{12}$ </answer>"],
        ["4", "three", "$\\boxed{12}$", "12"],
        ["5", "eleven"],
    ),
]
WRAPS = [
    "<think>I count the objects one by one.</think><answer>{}</answer>",
    "<answer> {} </answer>",
    "{}",
    "The answer is {}.",
    "<think>reasoning\nover lines</think>\n<answer>\n{}\n</answer>",
    "<answer>{}",
    "<think>first guess <answer>7</answer></think><answer>{}</answer>",
    "<think>So the result is $\\boxed{{}}$.</think><answer> {} </answer>",
]


def generated_cases(n=300, seed_value=0):
    rng = random.Random(seed_value)
    cases = []
    for _ in range(n):
        solutions, right, wrong = rng.choice(TRUTHS)
        answer = rng.choice(right if rng.random() < 0.6 else wrong)
        cases.append((rng.choice(WRAPS).replace("{}", answer), rng.choice(solutions)))
    return cases


def test_generated_cases_match_the_seed():
    cases = generated_cases()
    completions, solutions = [c for c, _ in cases], [s for _, s in cases]
    expected = seed(completions, solutions)
    assert external_r1v_acc(completions, solution=solutions) == expected
    assert external_r1v_acc([conv(c) for c in completions], solution=solutions) == expected
    assert 0.1 < sum(expected) / len(expected) < 0.9  # the corpus exercises both outcomes


def test_outside_the_main_thread_it_still_equals_the_seed():
    # math-verify's signal.alarm raises there; the seed's except swallows it, leaving the string match.
    cases = generated_cases(40, seed_value=1)
    completions, solutions = [c for c, _ in cases], [s for _, s in cases]
    out = {}
    thread = threading.Thread(
        target=lambda: out.update(
            seed=seed(completions, solutions), mmr1=external_r1v_acc(completions, solution=solutions)
        )
    )
    thread.start()
    thread.join()
    assert out["mmr1"] == out["seed"]


def test_string_match_is_the_seeds_second_branch():
    assert string_match("<think>x</think><answer> 3 </answer>", "<answer>3</answer>")
    assert string_match("<answer>a</answer><answer>b</answer>", "a")  # the first tag only
    assert not string_match("<answer>\n3\n</answer>", "3")  # no DOTALL: the whole text is compared
    assert not string_match(None, "3")
