"""What a batch of tool-using completions did, as metrics (``tools/*``, beside TRL's ``tools/call_frequency`` and
``tools/failure_frequency``)."""

from __future__ import annotations

from typing import Any


def turns(completion: Any) -> int:
    """The model's turns in one completion (TRL's parsed messages: assistant turns between tool results).

    >>> turns([{"role": "assistant", "content": "a"}, {"role": "tool", "content": "x"}, {"role": "assistant"}])
    2
    >>> turns("<answer>3</answer>")
    1
    """
    if isinstance(completion, list):
        return max(1, sum(1 for m in completion if isinstance(m, dict) and m.get("role") == "assistant"))
    return 1


def tool_calls(completion: Any) -> int:
    """Tool calls the model made in one completion (parsed ones; a malformed call is plain text)."""
    if not isinstance(completion, list):
        return 0
    return sum(len(m.get("tool_calls") or ()) for m in completion if isinstance(m, dict))


def malformed(completion: Any) -> bool:
    """A ``<tool_call>`` the parser could not read: TRL keeps the turn as plain text and no tool runs."""
    if not isinstance(completion, list):
        return False
    return any(isinstance(m, dict) and m.get("role") == "assistant" and not m.get("tool_calls")
               and "<tool_call>" in str(m.get("content") or "") for m in completion)


def tool_metrics(completions: list, stats: dict[str, int]) -> dict[str, float]:
    """Per-batch means over this rank's completions, and the runner's counts since the last batch.

    >>> c = [[{"role": "assistant", "tool_calls": [{}]}, {"role": "tool"}, {"role": "assistant"}],
    ...      [{"role": "assistant", "content": "<answer>1</answer>"}]]
    >>> m = tool_metrics(c, {"calls": 1, "timeouts": 1})
    >>> m["tools/calls_per_completion"], m["tools/used"], m["tools/turns"], m["tools/timeouts"], m["tools/errors"]
    (0.5, 0.5, 1.5, 1.0, 0.0)
    """
    n = max(1, len(completions))
    calls = [tool_calls(c) for c in completions]
    return {
        "tools/calls_per_completion": sum(calls) / n,
        "tools/used": sum(1 for k in calls if k) / n,
        "tools/turns": sum(turns(c) for c in completions) / n,
        "tools/malformed": sum(1 for c in completions if malformed(c)) / n,
        "tools/errors": float(stats.get("errors", 0)),
        "tools/timeouts": float(stats.get("timeouts", 0)),
        "tools/refused": float(stats.get("refused", 0)),
        "tools/images_downscaled": float(stats.get("images_downscaled", 0)),
    }
