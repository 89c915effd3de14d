"""curves.png, checked through what was plotted (read back from the figure's artists), not its pixels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmr1.tracking.curves import KL_MISSING_NOTE, KL_OFF_NOTE, plot_curves
from mmr1.tracking.series import WINDOW

ACC = "rewards/external_r1v_acc/mean"


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _rows(n: int, kl: bool = False) -> list[dict]:
    rows = []
    for s in range(1, n + 1):
        acc = (s % 4) / 4  # 0.25, 0.5, 0.75, 0, ... : noisy on purpose
        row = {"step": s, "reward": acc + 1.0, ACC: acc, "rewards/format/mean": 1.0, "grad_norm": 0.1 * s,
               "completions/mean_length": 11.0 + s, "completions/clipped_ratio": 0.5 if s > n // 2 else 0.0}
        if kl:
            row["kl"] = 0.001 * s
        rows.append(row)
    return rows


def _trailing_mean(ys: list[float], w: int) -> list[float]:
    return [sum(ys[max(0, i - w + 1):i + 1]) / len(ys[max(0, i - w + 1):i + 1]) for i in range(len(ys))]


def test_raw_values_with_their_rolling_mean(tmp_path):
    rows = _rows(25)
    _write(tmp_path / "metrics.jsonl", rows)
    drawn = plot_curves(tmp_path / "metrics.jsonl", tmp_path / "curves.png", beta=0.0)
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    raw = drawn["reward"].line("reward", "raw")
    assert raw.xs == list(range(1, 26)) and raw.ys == [r["reward"] for r in rows]  # raw per-step values
    smooth = drawn["reward"].line("reward", "rolling")
    assert smooth.xs == raw.xs
    assert smooth.ys == pytest.approx(_trailing_mean(raw.ys, WINDOW))
    assert smooth.ys[-1] == pytest.approx(sum(raw.ys[-WINDOW:]) / WINDOW)
    acc = drawn["rewards"].line("accuracy (external_r1v_acc)", "rolling")
    assert acc.ys == pytest.approx(_trailing_mean([r[ACC] for r in rows], WINDOW))
    for key in ("grad_norm", "length", "clipped"):
        assert {"raw", "rolling"} <= drawn[key].kinds(), key
    clipped = drawn["clipped"].line("clipped ratio", "raw")
    assert clipped.ys == [r["completions/clipped_ratio"] for r in rows]


def test_kl_panel_says_why_it_is_empty(tmp_path):
    _write(tmp_path / "metrics.jsonl", _rows(5))
    drawn = plot_curves(tmp_path / "metrics.jsonl", tmp_path / "a.png", beta=0.0)
    assert drawn["kl"].notes == [KL_OFF_NOTE] == ["KL not computed: beta=0"]
    assert drawn["kl"].lines == []
    # beta read from the run's grpo_args.json when not passed (what a guard stop's re-plot relies on).
    (tmp_path / "grpo_args.json").write_text(json.dumps({"beta": 0.0, "max_completion_length": 24}))
    drawn = plot_curves(tmp_path / "metrics.jsonl", tmp_path / "b.png")
    assert drawn["kl"].notes == [KL_OFF_NOTE]
    assert drawn["length"].line("cap 24", "cap").ys == [24.0, 24.0]
    (tmp_path / "grpo_args.json").write_text(json.dumps({"beta": 0.04}))
    assert plot_curves(tmp_path / "metrics.jsonl", tmp_path / "c.png")["kl"].notes == [KL_MISSING_NOTE]


def test_kl_drawn_when_logged(tmp_path):
    rows = _rows(12, kl=True)
    _write(tmp_path / "metrics.jsonl", rows)
    drawn = plot_curves(tmp_path / "metrics.jsonl", tmp_path / "curves.png", beta=0.001)
    assert drawn["kl"].notes == []
    assert drawn["kl"].line("kl", "raw").ys == pytest.approx([r["kl"] for r in rows])
    assert drawn["kl"].line("kl", "rolling").ys == pytest.approx(_trailing_mean([r["kl"] for r in rows], WINDOW))


def test_eval_points_gate_reference_and_guard_events(tmp_path):
    _write(tmp_path / "metrics.jsonl", _rows(20))
    _write(tmp_path / "eval_metrics.jsonl", [
        {"step": 10, "eval_reward": 1.7, "eval_rewards/external_r1v_acc/mean": 0.7, "eval_rewards/format/mean": 1.0},
        {"step": 20, "eval_reward": 1.8, "eval_rewards/external_r1v_acc/mean": 0.8, "eval_rewards/format/mean": 1.0},
    ])
    drawn = plot_curves(tmp_path / "metrics.jsonl", tmp_path / "curves.png", beta=0.0, warmstart_gate=0.65,
                        events=[{"step": 7, "label": "guard: collapse -> warn"}])
    acc_eval = drawn["rewards"].line("accuracy (external_r1v_acc)", "eval")
    assert (acc_eval.xs, acc_eval.ys) == ([10.0, 20.0], [0.7, 0.8])
    assert drawn["reward"].line("reward", "eval").ys == [1.7, 1.8]
    gate = drawn["rewards"].line("warm-start gate 0.65 (greedy, held-out)", "reference")
    assert gate.ys == [0.65, 0.65]
    for panel in drawn.values():
        (event,) = [ln for ln in panel.lines if ln.kind == "event"]
        assert event.xs == [7.0, 7.0]


def test_missing_series_are_notes_not_empty_frames(tmp_path):
    _write(tmp_path / "metrics.jsonl", [{"step": 1, "reward": 1.0}, {"step": 2, "reward": 1.5}])
    drawn = plot_curves(tmp_path / "metrics.jsonl", tmp_path / "curves.png")
    assert drawn["reward"].line("reward", "raw").ys == [1.0, 1.5]
    for key in ("rewards", "kl", "grad_norm", "length", "clipped"):
        assert drawn[key].notes, key
