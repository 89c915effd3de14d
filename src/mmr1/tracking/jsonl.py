"""JSONL rows (metrics.jsonl, eval_metrics.jsonl, guard_events.jsonl): the one reader, and JSON-safe values.

No transformers or torch here: the sweep callback and the guard's replay read these files in processes
that must not import torch early (it would ignore a sweep job's hydra.job.env_set, e.g. OMP_NUM_THREADS).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "nan"/"inf" stay visible; JSON has no literal for them
    if hasattr(value, "item"):
        return jsonable(value.item())
    return value


def as_number(value: Any) -> float | None:
    """A logged value as a float (non-finite ones as ``jsonable`` stored them), or None when it is not a number.

    >>> as_number(3), as_number("nan") != as_number("nan"), as_number("-inf"), as_number(True), as_number("x")
    (3.0, True, -inf, None, None)
    """
    if isinstance(value, bool) or value is None:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value.strip().lower() in ("nan", "inf", "-inf", "infinity", "-infinity"):
        return float(value)
    return None


def read_metrics(path: str | Path) -> list[dict]:
    """Rows of a metrics.jsonl; a torn last line (killed mid-write) is ignored."""
    rows: list[dict] = []
    p = Path(path)
    if not p.exists():
        return rows
    for line in p.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows
