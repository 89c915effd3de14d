"""The text of a completion, whichever form TRL passes it in."""

from __future__ import annotations

from typing import Any


def completion_text(completion: Any) -> Any:
    """TRL passes plain strings, or for conversational data `[{"role": "assistant", "content": ...}]`.

    The seed (ms-swift) always passed the decoded string, so that string is what rewards must see.
    A single-turn completion is one message; a tool-using one (``rollout.tools``) is the model's turns with the
    tool results between them, and its answer is the last assistant turn: that is what rewards score (the turns
    before it hold the tool calls). Content given as parts is joined from its text parts. Anything else is
    returned unchanged, so a reward fails on it exactly where the seed would have.

    >>> completion_text("<answer>3</answer>")
    '<answer>3</answer>'
    >>> completion_text([{"role": "assistant", "content": "<answer>3</answer>"}])
    '<answer>3</answer>'
    >>> completion_text([{"role": "assistant", "content": [{"type": "text", "text": "ok"}]}])
    'ok'
    >>> completion_text([{"role": "assistant", "content": "<think>zoom</think>", "tool_calls": [{}]},
    ...                  {"role": "tool", "content": "[image]"},
    ...                  {"role": "assistant", "content": "<answer>3</answer>"}])
    '<answer>3</answer>'
    """
    if isinstance(completion, list) and completion and isinstance(completion[0], dict):
        answer = next((m for m in reversed(completion) if isinstance(m, dict) and m.get("role") == "assistant"),
                      completion[0])
        content = answer.get("content")
        if isinstance(content, list):
            return "".join(
                p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
            )
        return content
    return completion
