"""``eval.completions=FILE``: completions made elsewhere (another framework, an earlier run), scored under a
benchmark's protocol without generating, so that two numbers compare like for like.

Two shapes, told apart by their content:
- jsonl records ``{"question", "ground_truth", "completion"}`` (any framework can write them);
- R1-V's result file (``src/eval/test_qwen2vl_*.py`` write ``{"accuracy": <percent>, "results": [{"question": <the
  test row>, "ground_truth", "model_output", ...}]}``): its accuracy is kept as ``reported_accuracy``, so eval.json
  shows whether mmr1's scorer reproduces the authors' number on the authors' outputs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mmr1.evaluation.testsets import jsonl_records, solution_of


def read_completions(path: str | Path) -> tuple[list[dict], list[list[dict]], float | None]:
    """(rows, completions per row, the file's own accuracy in [0, 1] or None)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"eval.completions {file} does not exist")
    text = file.read_text(encoding="utf-8")
    reported: float | None = None
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None
    if isinstance(whole, dict) and isinstance(whole.get("results"), list):  # R1-V's result file
        items = [(f"{file} results[{i}]", r) for i, r in enumerate(whole["results"])]
        acc = whole.get("accuracy")
        reported = float(acc) / 100 if isinstance(acc, (int, float)) else None  # R1-V prints percent
    else:
        items = jsonl_records(text, file, "eval.completions")
    rows, completions = [], []
    for i, (where, rec) in enumerate(items):
        text_out = rec.get("completion", rec.get("model_output")) if isinstance(rec, dict) else None
        if not isinstance(text_out, str) or not isinstance(rec, dict) or rec.get("ground_truth") is None:
            raise ValueError(f"eval.completions: {where} needs 'ground_truth' and 'completion' (or R1-V's "
                             "'model_output')")
        rows.append(_row(i, rec))
        completions.append([{"text": text_out, "length": None, "truncated": None}])
    if not rows:
        raise ValueError(f"eval.completions: {file} holds no records")
    return rows, completions, reported


def _row(index: int, rec: dict[str, Any]) -> dict[str, Any]:
    question = rec.get("question")
    if isinstance(question, dict):  # R1-V logs the whole test row under "question"
        question = question.get("question")
    return {"index": index, "question": question, "ground_truth": rec["ground_truth"],
            "solution": solution_of(rec["ground_truth"]),
            "prompt": [{"role": "user", "content": [{"type": "text", "text": str(question or "")}]}]}
