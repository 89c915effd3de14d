"""A benchmark's score beside mmr1's: the authors' scorer on every completion, the training accuracy reward on the
same completions, the rows where the two disagree, and the published baselines, as eval.json records them."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from mmr1.evaluation.config import BenchmarkConfig, Rows
from mmr1.evaluation.scorers import SCORERS


def apply_scorer(bench: BenchmarkConfig, acc: str, rows: list[dict], completions: list[list[dict]]) -> None:
    """Add ``extracted`` and ``correct`` to every completion: the benchmark's scorer, or (``scorer: reward``) the
    training accuracy reward already on it (mmr1.evaluate.score ran first)."""
    scorer = None if bench.scorer == "reward" else SCORERS.get(bench.scorer)
    for row, cs in zip(rows, completions, strict=True):
        for c in cs:
            if scorer is None:
                c["extracted"], c["correct"] = None, (c["rewards"].get(acc) or 0.0) >= 1.0
            else:
                c["extracted"], c["correct"] = scorer(c["text"], row["ground_truth"])


def benchmark_summary(bench: BenchmarkConfig, rows: list[dict], completions: list[list[dict]], acc: str,
                      reported: float | None = None) -> dict[str, Any]:
    """eval.json's benchmark keys, from each row's first completion (greedy, as the authors decode): ``accuracy``
    is the protocol's; ``reward_accuracy`` the training reward's; ``disagreements`` the rows they score apart."""
    first = [cs[0] for cs in completions]
    correct = [bool(c["correct"]) for c in first]
    by_reward = [(c["rewards"].get(acc) or 0.0) >= 1.0 for c in first]
    out: dict[str, Any] = {
        "accuracy": sum(correct) / len(correct), "correct": sum(correct),
        "reward_accuracy": sum(by_reward) / len(by_reward),
        "disagreements": [r["index"] for r, a, b in zip(rows, correct, by_reward, strict=True) if a != b],
        "benchmark": {k: getattr(v, "value", v) for k, v in asdict(bench).items() if k != "baselines"},
        "baselines": [asdict(b) for b in bench.baselines],
    }
    if reported is not None:  # eval.completions from a file that states its own accuracy
        out["reported_accuracy"] = reported
    return out


def published(baselines: list[dict[str, Any]], training: bool = False) -> str:
    """eval.json's baselines in one line: ``Qwen2-VL-2B-Instruct 0.480 -> 0.825`` each, with what "after" trained
    on in brackets when ``training``."""
    def num(x: float | None) -> str:
        return "?" if x is None else f"{x:.3f}"

    return "; ".join(f"{b.get('model')} {num(b.get('before'))} -> {num(b.get('after'))}"
                     + (f" ({b.get('training')})" if training else "") for b in baselines)


def is_benchmark(bench: BenchmarkConfig) -> bool:
    return bench.rows != Rows.none


def check_benchmark(bench: BenchmarkConfig) -> None:
    """Refuse, before any model loads, a scorer mmr1 does not have and a test file with nowhere to come from."""
    if bench.scorer != "reward":
        try:
            SCORERS.get(bench.scorer)
        except KeyError as exc:
            raise ValueError(f"eval.benchmark.scorer: {exc.args[0]} (or reward: the training reward)") from None
    if bench.rows == Rows.jsonl and not (bench.path or bench.url):
        raise ValueError(f"benchmark {bench.name!r}: rows=jsonl needs eval.benchmark.path (or a url to fetch)")
