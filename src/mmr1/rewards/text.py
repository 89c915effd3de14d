"""The text of a completion, whichever form TRL passes it in, and messages flattened to text."""

from __future__ import annotations

import json
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


def flat_messages(messages: list[dict], image_sizes: bool = False) -> list[dict]:
    """Messages with string content (image parts as ``<image>``, or ``<image WxH>`` with ``image_sizes`` where the part
    holds its image): the shape wandb's Table can type, and JSON can hold.

    >>> flat_messages([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many?"}]}])
    [{'role': 'user', 'content': '<image>How many?'}]

    A tool-using completion's turns (rollout.tools) keep only role and content: a call is written out as the model
    wrote it, and every message has the same keys (wandb types a column from its rows).

    >>> from PIL import Image
    >>> call = {"type": "function", "function": {"name": "crop", "arguments": {"bbox_2d": [0, 0, 28, 28]}}}
    >>> turns = [{"role": "assistant", "content": "<think>zoom</think>", "tool_calls": [call]},
    ...          {"role": "tool", "name": "crop", "content": [{"type": "image", "image": Image.new("RGB", (84, 84))}]}]
    >>> flat_messages(turns)[0]["content"]
    '<think>zoom</think><tool_call>{"name": "crop", "arguments": {"bbox_2d": [0, 0, 28, 28]}}</tool_call>'
    >>> flat_messages(turns)[1], flat_messages(turns, image_sizes=True)[1]
    ({'role': 'tool', 'content': '<image>'}, {'role': 'tool', 'content': '<image 84x84>'})
    """
    def image(part: dict) -> str:
        size = getattr(part.get("image"), "size", None)  # a PIL image's (width, height)
        return f"<image {size[0]}x{size[1]}>" if image_sizes and size else "<image>"

    out = []
    for m in messages:
        content = m.get("content") or ""
        if not isinstance(content, str):
            content = "".join(p.get("text") or "" if p.get("type") == "text" else image(p) for p in content)
        calls = m.get("tool_calls")
        if calls or m.get("role") == "tool":
            content += "".join(f"<tool_call>{json.dumps(c.get('function', c))}</tool_call>" for c in calls or ())
            out.append({"role": m["role"], "content": content})
        else:
            out.append({**m, "content": content})
    return out
