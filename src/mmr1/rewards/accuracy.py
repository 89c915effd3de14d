"""`external_r1v_acc`: the seed's `MultiModalAccuracyORM`, result for result, faster by design.

The seed scores an item 1.0 if `float(verify(parse(completion), parse(solution))) > 0`, else 1.0 if
the stripped text of the first `<answer>...</answer>` (or the whole stripped text) of both sides
is equal, else 0.0; any exception inside a branch counts as that branch failing. Its result is
"math-verify OR string match", so the order of the branches does not matter for the result, only
for the cost. Here:

- the string match runs first (microseconds; when it says 1.0, math-verify is never called);
- `parse(solution)` is memoised (GRPO repeats each solution `num_generations` times), and when it
  is empty the completion is not parsed at all (`verify(x, [])` is False for every x);
- identical (completion, solution) pairs in one call are scored once;
- through `build_reward_funcs`, the math-verify branch runs in parallel worker processes.

Argument order and defaults stay the seed's: `verify(parse(completion), parse(solution))` with
math-verify's default 5 s `signal.alarm` timeouts. Those alarms only work in a main thread: the
sandbox workers call them from their main thread, as the seed did. Called directly from another
thread, math-verify raises, the seed's `except Exception` swallows it, and only the string match
scores -- the seed's behaviour there too.

Known wrong answers of math-verify (its issues 14 and 60) are inherited on purpose: the
regression tests document them.

>>> external_r1v_acc(["<think>...</think><answer> 3 </answer>", "<answer>4</answer>"],
...                  solution=["<answer>3</answer>", "<answer>3</answer>"])
[1.0, 0.0]
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from typing import Any

from mmr1.rewards.registry import register
from mmr1.rewards.text import completion_text

# The seed's pattern: no DOTALL, so a multi-line answer does not match and the whole text is used.
_ANSWER = re.compile(r"<answer>(.*?)</answer>")


def _answer_or_whole(text: str) -> str:
    match = _ANSWER.search(text)
    return match.group(1).strip() if match else text.strip()


def string_match(content: Any, solution: Any) -> bool:
    """The seed's second branch, its exception handling included (non-strings score 0).

    >>> string_match("<think>x</think><answer> 3 </answer>", "<answer>3</answer>"), string_match(3, "3")
    (True, False)
    """
    try:
        return _answer_or_whole(content) == _answer_or_whole(solution)
    except Exception:  # noqa: BLE001 - the seed's `except Exception: pass`, kept for equal results
        return False


_SOLUTIONS: OrderedDict = OrderedDict()  # (type, solution) -> parse(solution), least recently used first
_SOLUTIONS_MAX = 4096
_SOLUTIONS_LOCK = threading.Lock()


def _parsed_solution(solution: Any) -> list:
    from math_verify import parse

    try:
        key = (type(solution), solution)
        hash(key)
    except TypeError:  # unhashable: no memo, same result
        return parse(solution)
    with _SOLUTIONS_LOCK:
        if key in _SOLUTIONS:
            _SOLUTIONS.move_to_end(key)
            return list(_SOLUTIONS[key])
    parsed = parse(solution)  # raises only where the seed's call raised too; then nothing is stored
    with _SOLUTIONS_LOCK:
        _SOLUTIONS[key] = list(parsed)
        while len(_SOLUTIONS) > _SOLUTIONS_MAX:
            _SOLUTIONS.popitem(last=False)
    return parsed


def math_match(content: Any, solution: Any) -> bool:
    """The seed's first branch: `float(verify(parse(content), parse(solution))) > 0`, exceptions False."""
    from math_verify import parse, verify

    try:
        target = _parsed_solution(solution)
        if not target:
            # verify(x, []) compares nothing and is False whatever x is, so the completion's parse
            # (the expensive call) cannot change the result. GeoQA's "<answer>29</answer>" parses to [].
            return False
        answer = parse(content)
        return float(verify(answer, target)) > 0  # the seed's argument order: completion first
    except Exception:  # noqa: BLE001 - the seed's `except Exception: pass`, kept for equal results
        return False


def score(content: Any, solution: Any) -> float:
    """One item, exactly the seed's value: string match OR math-verify."""
    return 1.0 if string_match(content, solution) or math_match(content, solution) else 0.0


# A few typical items, scored once when a worker starts: math-verify and sympy import much of
# themselves lazily, on the first fraction, percent or degree they meet; paying that at start keeps
# it out of the first items' timeout budget. (The benchmark warms the seed with the same list.)
WARMUP = [
    ("The answer is $\\frac{1}{2}$, i.e. \\boxed{0.5}", "<answer> 0.5 </answer>"),
    ("<think>x = 3^\\circ</think><answer> 29° </answer>", "$x = \\sqrt{3}$"),
    ("<answer> 28 </answer>", "<answer> 7.0% - 7.5% </answer>"),
    ("none of the above", "<answer> \\frac{12}{13} </answer>"),
    ("y = 2x + 1 and the set {1, 2}", "$\\{1, 2\\}$"),
]


def _shortcut(text: Any, item: dict) -> float | None:
    # Either branch giving 1.0 gives 1.0: a string match settles the item in the trainer process.
    return 1.0 if string_match(text, item.get("solution")) else None


@register("external_r1v_acc", columns=("solution",), shortcut=_shortcut, pure=True)
def external_r1v_acc(completions, solution, **kwargs) -> list[float]:
    """Accuracy against `solution`; completions as strings or conversational messages."""
    done: dict = {}
    rewards = []
    for completion, sol in zip(completions, solution):  # zip, as the seed: extra items are dropped
        content = completion_text(completion)
        try:
            key = (type(content), content, type(sol), sol)  # types too: 1 == 1.0 == True
            hash(key)
        except TypeError:
            key = None
        if key is None or key not in done:
            value = score(content, sol)
            if key is None:
                rewards.append(value)
                continue
            done[key] = value
        rewards.append(done[key])
    return rewards
