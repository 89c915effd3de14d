"""Tools that misbehave, named by file in tests (``rollout.tools=[tests/rollout/tool_plugins.py:hang]``), as users
name their own tools."""

from __future__ import annotations

import time

from PIL import Image


def hang(seconds: int) -> str:
    """Wait, then answer (far past any test's tool timeout).

    Args:
        seconds: How long to wait.
    """
    time.sleep(600)
    return "done"


def boom(reason: str) -> str:
    """Raise.

    Args:
        reason: Why.
    """
    raise RuntimeError(f"boom: {reason}")


def big(side: int) -> list:
    """Return an image far larger than any tool image bound.

    Args:
        side: The side in pixels.
    """
    return [{"type": "image", "image": Image.new("RGB", (side, side), (0, 128, 255))}, {"type": "text", "text": "ok"}]


def two_images(n: int) -> list:
    """Return more images than one call may.

    Args:
        n: How many.
    """
    return [{"type": "image", "image": Image.new("RGB", (56, 56))} for _ in range(n)]


def no_docs(x: int) -> str:
    return str(x)
