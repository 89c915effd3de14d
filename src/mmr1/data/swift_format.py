"""ms-swift's own dataset format: ``messages`` (system/user/assistant turns, ``<image>`` tags in the text),
``images`` (paths, ``{bytes, path}`` dicts, or one of them alone) and ``solution``.

Detected from the columns (a ``messages`` column; no flag), whatever the source. One row becomes a
conversational prompt the way ms-swift v3.2.1 builds its GRPO prompt:

- a first ``system`` turn is the row's system prompt (swift/llm/template/template_inputs.py:139-143); the
  task's (``dataset.system_prompt``, else R1-V's) is used only for rows without one, as ms-swift falls back
  to ``--system`` only when the row has none (swift/llm/template/base.py:717-720);
- the trailing assistant turn, the reference answer, is dropped (``InferRequest.remove_response``,
  swift/llm/template/template_inputs.py:52-55, called by swift/trainers/rlhf_trainer/grpo_trainer.py:726-727);
  earlier turns stay as history;
- each ``<image>`` tag is the next image of ``images`` and each ``<video>`` tag the next clip of ``videos``
  (swift/llm/dataset/preprocessor/core.py:21-38 names the columns), at its place in the text
  (swift/llm/template/base.py:569-586). A row without any tag gets its images before the first turn's
  text, as ms-swift adds the missing tags there (``_add_default_tags``, base.py:638-656). Any other
  mismatch is a bad row, named: ms-swift prepends the missing tags of a partly tagged row and only warns
  about tags beyond the images (left as text), both silent data bugs;
- ``images`` may hold path strings, ``{bytes, path}`` dicts, or be one of them alone
  (``RowPreprocessor._cast_images``, swift/llm/dataset/preprocessor/core.py:72-82); ``image`` is accepted
  as its other name (core.py:32).
"""

from __future__ import annotations

import re
from typing import Any

IMAGE_TAG = "<image>"
VIDEO_TAG = "<video>"
_TAG = re.compile(f"({re.escape(IMAGE_TAG)}|{re.escape(VIDEO_TAG)})")
ROLES = ("system", "user", "assistant")


class SwiftRowError(ValueError):
    """A row that does not fit the format; ``column`` names the culprit for the bad-row report."""

    def __init__(self, column: str, reason: str) -> None:
        super().__init__(reason)
        self.column = column


def is_swift_format(columns: Any) -> bool:
    """ms-swift rows carry a ``messages`` column (hub rows carry ``problem``).

    >>> is_swift_format(["messages", "images", "solution"]), is_swift_format(["image", "problem", "solution"])
    (True, False)
    """
    return "messages" in columns


def image_cells(row: dict, column: str = "images") -> list[Any]:
    """The row's images as a list: a string or a dict alone is one image; None or absent is none.

    >>> image_cells({"images": "a.png"}), image_cells({"images": [{"bytes": None, "path": "a.png"}, "b.png"]})
    (['a.png'], [{'bytes': None, 'path': 'a.png'}, 'b.png'])
    """
    value = row.get(column)
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def video_cells(row: dict) -> list[Any]:
    """The row's clips as a list: ``videos`` (a list, or one clip alone) or ``video`` (one clip, which may itself be a
    list of frames); ms-swift takes both names (swift/llm/dataset/preprocessor/core.py:21-38).

    >>> video_cells({"videos": ["a.mp4", "b.mp4"]}), video_cells({"video": ["f0.png", "f1.png"]}), video_cells({})
    (['a.mp4', 'b.mp4'], [['f0.png', 'f1.png']], [])
    """
    if row.get("videos") is not None:
        return image_cells(row, "videos")
    return [row["video"]] if row.get("video") is not None else []


def split_tags(text: str) -> list[dict]:
    """Text with ``<image>``/``<video>`` tags -> content parts, an image or video part at each tag, empty text
    dropped.

    >>> [p.get("text", p["type"]) for p in split_tags("Compare <image> and <video>.")]
    ['Compare ', 'image', ' and ', 'video', '.']
    >>> split_tags("<image>How many?")
    [{'type': 'image'}, {'type': 'text', 'text': 'How many?'}]
    """
    parts: list[dict] = []
    for piece in _TAG.split(text):
        if piece in (IMAGE_TAG, VIDEO_TAG):
            parts.append({"type": piece[1:-1]})
        elif piece:
            parts.append({"type": "text", "text": piece})
    return parts


def swift_prompt(row: dict, query_suffix: str = "") -> tuple[str | None, list[dict], list[Any], str]:
    """(row's system prompt or None, the prompt's turns without system, image cells, images column); the row's
    videos (``videos``, ``video``) are ``image_cells(row, "videos")``, one ``<video>`` tag each.

    Raises SwiftRowError naming the column. ``query_suffix`` is appended to the last user turn, as to a
    hub row's problem.

    >>> system, turns, imgs, _ = swift_prompt({"messages": [{"role": "user", "content": "<image><image>Sum?"},
    ...     {"role": "assistant", "content": "<answer>3</answer>"}], "images": ["a.png", "b.png"]})
    >>> system, [p["type"] for p in turns[0]["content"]], len(turns), imgs
    (None, ['image', 'image', 'text'], 1, ['a.png', 'b.png'])
    """
    messages = row.get("messages")
    if not isinstance(messages, (list, tuple)) or not messages:
        raise SwiftRowError("messages", "missing or empty" if not messages else f"not a list of turns: {messages!r}")
    turns: list[dict] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise SwiftRowError("messages", f"turn {i} is not a {{role: system|user|assistant, content: str}} "
                                            f"message: {m!r}")
        if m["role"] == "system" and i:
            raise SwiftRowError("messages", f"turn {i}: a system turn is allowed only first")
        turns.append({"role": m["role"], "content": m["content"]})
    system = turns.pop(0)["content"] if turns[0]["role"] == "system" else None
    if turns and turns[-1]["role"] == "assistant":
        turns.pop()  # the reference answer; rewards read `solution`
    if not turns or turns[-1]["role"] != "user":
        raise SwiftRowError("messages", "no user turn to answer (the prompt must end with a user turn)")
    if system is not None and (IMAGE_TAG in system or VIDEO_TAG in system):
        raise SwiftRowError("messages", "the system turn holds an <image>/<video> tag (media go in user turns)")
    column = "images" if "images" in row or "image" not in row else "image"
    images = image_cells(row, column)
    videos = video_cells(row)
    # Untagged media go before the first turn's text, images first, then videos before them: ms-swift adds the
    # missing tags type by type (image, audio, video), each prepended (_add_default_tags, base.py:638-656).
    for tag, cells, col, what in ((IMAGE_TAG, images, column, "image"), (VIDEO_TAG, videos, "videos", "video")):
        tags = sum(t["content"].count(tag) for t in turns)
        if tags == 0 and cells:
            turns[0]["content"] = tag * len(cells) + turns[0]["content"]
        elif tags != len(cells):
            raise SwiftRowError(col, f"{tags} {tag} tag(s) in the prompt's turns but {len(cells)} {what}(s) in "
                                     f"{col!r}: each tag takes the next {what}, so their counts must match")
    if query_suffix:
        turns[-1]["content"] += query_suffix
    out = [{"role": t["role"], "content": split_tags(t["content"]) or [{"type": "text", "text": ""}]}
           for t in turns]
    return system, out, images, column
