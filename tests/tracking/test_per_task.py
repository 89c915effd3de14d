"""A task mixture's per-task reward means in the readers of metrics.jsonl: the curves draw
each task's accuracy, and nothing that reads TRL's per-reward means takes a task's mean for the reward's."""

from __future__ import annotations

import json

import pytest

from mmr1.tracking.curves import plot_curves
from mmr1.tracking.progress import reward_postfix
from mmr1.tracking.series import reward_names, rolling
from mmr1.tracking.summary import build_summary

TASKS = ("geoqa", "clevr_count")


def _rows(n: int = 12) -> list[dict]:
    rows = []
    for step in range(1, n + 1):
        # Per-task keys first: Mmr1GRPOTrainer adds them inside _calculate_rewards, before TRL's own.
        row = {"step": step, "rewards/external_r1v_acc/geoqa/mean": 0.1 * (step % 3),
               "rewards/external_r1v_acc/clevr_count/mean": 0.5 + 0.01 * step,
               "rewards/format/geoqa/mean": 1.0, "rewards/format/clevr_count/mean": 0.0}
        row.update({"reward": 1.0, "rewards/external_r1v_acc/mean": 0.3, "rewards/format/mean": 0.5,
                    "completions/mean_length": 5.0})
        rows.append(row)
    return rows


def test_readers_of_the_reward_means_skip_the_tasks_means(tmp_path):
    rows = _rows()
    assert reward_names(rows) == ("external_r1v_acc", "format")
    assert reward_postfix(rows[0]) == {"reward": "1", "acc": "0.3", "format": "0.5", "len": "5"}
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = build_summary(tmp_path, status="finished", steps=12, wall_time_s=1.0, max_steps=12)
    assert summary["accuracy_metric"] == "rewards/external_r1v_acc/mean"


def test_curves_draw_each_tasks_accuracy(tmp_path):
    rows = _rows()
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "eval_metrics.jsonl").write_text(json.dumps(
        {"step": 12, "eval_rewards/external_r1v_acc/mean": 0.4, "eval_rewards/external_r1v_acc/geoqa/mean": 0.2,
         "eval_rewards/external_r1v_acc/clevr_count/mean": 0.6}) + "\n")
    panel = plot_curves(tmp_path / "metrics.jsonl", tmp_path / "curves.png", beta=0.0)["rewards"]
    # The rewards themselves, as without a mixture: no "external_r1v_acc/geoqa" series among them.
    assert {ln.label for ln in panel.lines if ln.kind == "rolling"} == {"accuracy (external_r1v_acc)", "format"}
    for task in TASKS:
        line = panel.line(f"{task} (accuracy)", "task")
        key = f"rewards/external_r1v_acc/{task}/mean"
        assert line.xs == list(range(1, 13)) and line.ys == pytest.approx(rolling([r[key] for r in rows]))
        assert panel.line(f"{task} (accuracy)", "eval").ys == [{"geoqa": 0.2, "clevr_count": 0.6}[task]]
    assert not any("format" in ln.label for ln in panel.lines if ln.kind == "task")  # accuracy only
