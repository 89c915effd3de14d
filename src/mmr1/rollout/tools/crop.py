"""The built-in ``crop`` tool: zoom into a box of the prompt's image (DeepEyes' ``image_zoom_in_tool``, arXiv
2505.14362, in Qwen2.5-VL's grounding convention: absolute pixel coordinates of the image as the model sees it)."""

from __future__ import annotations

from typing import Any

from PIL import Image

MIN_SIDE = 28  # one image token: a smaller box is widened to it (around its centre), as DeepEyes widens to 28 px


def crop(bbox_2d: list[int], image: Image.Image, seen_size: tuple[int, int]) -> list[dict[str, Any]]:
    """Zoom in on a region of the image: returns that region at full resolution.

    Args:
        bbox_2d: The region as [x1, y1, x2, y2], in pixels of the image as you see it.
    """
    if not isinstance(bbox_2d, (list, tuple)) or len(bbox_2d) != 4:
        raise ValueError(f"bbox_2d must be [x1, y1, x2, y2], got {bbox_2d!r}")
    x1, y1, x2, y2 = (float(v) for v in bbox_2d)
    w, h = seen_size
    x1, x2 = sorted((max(0.0, min(x1, w)), max(0.0, min(x2, w))))
    y1, y2 = sorted((max(0.0, min(y1, h)), max(0.0, min(y2, h))))
    x1, x2 = _widen(x1, x2, w)
    y1, y2 = _widen(y1, y2, h)
    sx, sy = image.width / w, image.height / h  # the source may be larger than what the model saw
    box = (round(x1 * sx), round(y1 * sy), round(x2 * sx), round(y2 * sy))
    return [{"type": "image", "image": image.crop(box)}]


def _widen(lo: float, hi: float, side: float) -> tuple[float, float]:
    """``[lo, hi]`` widened to at least MIN_SIDE (or the whole side) around its centre, kept inside ``[0, side]``.

    >>> _widen(10, 12, 84), _widen(0, 84, 84), _widen(80, 84, 84)
    ((0.0, 28.0), (0, 84), (56, 84))
    """
    need = min(MIN_SIDE, side)
    if hi - lo >= need:
        return lo, hi
    centre = (lo + hi) / 2
    lo = min(max(0.0, centre - need / 2), side - need)
    return lo, lo + need
