"""A task mixture trains end to end: per-task reward means every step, per-task accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from mmr1.tracking.metrics import read_metrics
from mmr1.train import CONF_DIR, train
from testkit import compose_cfg

TASKS = ("synthetic_count", "synthetic_geoqa", "synthetic_chart")
# task_reward (tests/reliability/plugins.py) pays each row by its task's own value: an untrained model scores 0 on
# the seed's rewards everywhere, so only a reward that differs by task shows whether the task labels are right.
PLUGINS = Path(__file__).parent / "reliability" / "plugins.py"
TASK_PAY = {"synthetic_count": 0.25, "synthetic_geoqa": 0.5, "synthetic_chart": 0.75}
REWARDS = ("external_r1v_acc", "format", "task_reward")
# Small tasks: 8 training rows and 2 held-out rows each; 2 prompts x 4 generations a step.
MIX = ["dataset=synthetic_mix", "model.warmstart.enabled=false", f"reward.plugins=[{PLUGINS}]",
       "reward.funcs=[external_r1v_acc,format,task_reward]", "trainer.per_device_train_batch_size=8",
       "trainer.num_generations=4", "trainer.max_completion_length=8",
       "trainer.eval_strategy=steps", "trainer.eval_steps=2", "trainer.per_device_eval_batch_size=8",
       *(f"dataset.tasks.{t}.{k}={v}" for t in TASKS for k, v in (("num_samples", 8), ("eval_size", 2)))]


@pytest.mark.slow
def test_two_step_mixture_logs_each_tasks_rewards_and_evaluates_each_task(tmp_path):
    run = tmp_path / "run"
    train(compose_cfg([*MIX, "trainer.max_steps=2", "trainer.save_steps=1"], run_dir=run))
    rows = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        keys = {k for k in row if k.startswith("rewards/") and k.count("/") == 3}
        # Every step: a mean per reward for each task its prompts came from, and none for another task.
        assert keys and {k.split("/")[2] for k in keys} <= set(TASKS)
        assert {k.split("/")[1] for k in keys} == set(REWARDS)
        for reward in REWARDS:
            means = [row[k] for k in keys if k.split("/")[1] == reward]
            assert min(means) - 1e-6 <= row[f"rewards/{reward}/mean"] <= max(means) + 1e-6
        for k in keys:
            if k.split("/")[1] == "task_reward":  # each task's mean is its own pay: the rows were labelled right
                assert row[k] == pytest.approx(TASK_PAY[k.split("/")[2]])
    # Resumed from checkpoint-1, the mixed order goes on where it was: step 2 draws the same tasks' prompts and
    # scores them alike (the data position and the sampler's mixed order are part of the checkpoint).
    resumed = tmp_path / "resumed"
    train(compose_cfg([*MIX, "trainer.max_steps=2", "trainer.save_steps=1", f"resume={run / 'checkpoint-1'}"],
                      run_dir=resumed))
    (again,) = read_metrics(resumed / "metrics.jsonl")

    def same(row):
        return {k: v for k, v in row.items() if k.startswith(("rewards/", "completions/", "num_tokens")) or k == "step"}

    assert again["step"] == 2 and same(again) == same(rows[1])
    assert {k for k in again if k.startswith("rewards/task_reward/") and k.count("/") == 3} == {
        k for k in rows[1] if k.startswith("rewards/task_reward/") and k.count("/") == 3}
    # The evaluation ran on every task's own held-out rows.
    (evals,) = read_metrics(run / "eval_metrics.jsonl")
    assert {f"eval_rewards/{r}/{t}/mean" for r in REWARDS for t in TASKS} <= evals.keys()
    assert {t: evals[f"eval_rewards/task_reward/{t}/mean"] for t in TASKS} == pytest.approx(TASK_PAY)

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("evaluate", overrides=[*MIX, f"run_dir={tmp_path / 'eval'}", f"eval.checkpoint={run}",
                                             "eval.max_new_tokens=8"])
    from mmr1.evaluate import evaluate

    result = evaluate(cfg, tmp_path / "eval")
    assert json.loads((run / "eval.json").read_text())["tasks"] == result["tasks"]
    assert list(result["tasks"]) == list(TASKS) and all(s["rows"] == 2 for s in result["tasks"].values())
    for task, stats in result["tasks"].items():
        mine = [r["greedy"]["rewards"]["external_r1v_acc"] for r in result["records"] if r["task"] == task]
        assert stats["accuracy"] == pytest.approx(sum(mine) / len(mine))
        assert {r["greedy"]["rewards"]["task_reward"] for r in result["records"] if r["task"] == task} == {
            TASK_PAY[task]}
    assert result["accuracy"] == pytest.approx(sum(s["accuracy"] for s in result["tasks"].values()) / 3)
