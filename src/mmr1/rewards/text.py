"""The text of a completion, whichever form TRL passes it in."""

from __future__ import annotations

from typing import Any


def completion_text(completion: Any) -> Any:
    """TRL passes plain strings, or for conversational data `[{"role": "assistant", "content": ...}]`.

    The seed (ms-swift) always passed the decoded string, so that string is what rewards must see.
    Like TRL's own rewards, the first message holds the completion; content given as parts is
    joined from its text parts. Anything else is returned unchanged, so a reward fails on it
    exactly where the seed would have.

    >>> completion_text("<answer>3</answer>")
    '<answer>3</answer>'
    >>> completion_text([{"role": "assistant", "content": "<answer>3</answer>"}])
    '<answer>3</answer>'
    >>> completion_text([{"role": "assistant", "content": [{"type": "text", "text": "ok"}]}])
    'ok'
    """
    if isinstance(completion, list) and completion and isinstance(completion[0], dict):
        content = completion[0].get("content")
        if isinstance(content, list):
            return "".join(
                p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
            )
        return content
    return completion
