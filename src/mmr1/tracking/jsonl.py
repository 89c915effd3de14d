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
