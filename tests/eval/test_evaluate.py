"""mmr1.evaluate: pass@k arithmetic, lengths, and the CLI on a tiny checkpoint scored with the training rewards."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from mmr1.evaluate import pass_at_k, reward_roles
from mmr1.models.generation import completion_lengths
from testkit import run_cli

# A tiny model gains nothing from a second OpenMP thread, and on shared cores it costs up to 5x
# (measured: a tiny_count step on 2 loaded cores).
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def test_pass_at_k_is_the_unbiased_estimator():
    assert pass_at_k(4, 0, 1) == 0.0
    assert pass_at_k(4, 4, 4) == 1.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)  # 1 - C(3,2)/C(4,2)
    assert pass_at_k(5, 3, 3) == 1.0  # fewer than k wrong samples: some k-subset is all correct
    with pytest.raises(ValueError, match="at least 3 samples"):
        pass_at_k(2, 1, 3)


def test_reward_roles_pick_accuracy_and_format():
    assert reward_roles(["external_r1v_acc", "format"]) == ("external_r1v_acc", "format")
    assert reward_roles(["format", "my_reward"]) == ("my_reward", "format")
    assert reward_roles(["only"]) == ("only", None)


def test_lengths_count_through_the_first_end_of_turn():
    ids = torch.tensor([[5, 6, 9, 0, 0], [5, 6, 7, 8, 4]])
    assert completion_lengths(ids, {9}, 0) == ([3, 5], [False, True])


@pytest.mark.slow
def test_evaluate_cli_on_a_tiny_checkpoint(tmp_path):
    """Evaluate a run directory's final/ (the random tiny model): eval.json lands in the run directory, every
    record's rewards equal the registered reward functions on the same text, and the sweep report shows it."""
    from mmr1.models.tiny import tiny_qwen2_5_vl_path
    from mmr1.rewards import get

    run = tmp_path / "run"
    shutil.copytree(tiny_qwen2_5_vl_path(), run / "final")
    (run / "run_info.json").write_text(json.dumps({"status": "finished", "steps": 0}))
    run_cli(["model.warmstart.enabled=false", "dataset.num_samples=16", "dataset.eval_size=6",
             "trainer.max_completion_length=8", f"eval.checkpoint={run}", "eval.batch_size=4",
             "eval.num_samples=2", "eval.pass_k=[1,2]", f"hydra.run.dir={tmp_path / 'hydra'}"],
            module="mmr1.evaluate", timeout=240, env=ONE_THREAD)
    result = json.loads((run / "eval.json").read_text())
    assert result["rows"] == 6 and len(result["records"]) == 6 and result["mode"] == "greedy"
    assert result["model"] == str(run / "final") and result["accuracy_reward"] == "external_r1v_acc"
    acc, fmt = get("external_r1v_acc"), get("format")
    for rec in result["records"]:
        g = rec["greedy"]
        assert 1 <= g["length"] <= 8 and len(rec["samples"]) == 2
        for c in [g, *rec["samples"]]:
            assert c["rewards"]["external_r1v_acc"] == acc([c["text"]], solution=[rec["solution"]])[0]
            assert c["rewards"]["format"] == fmt([c["text"]])[0]
    greedy_acc = [r["greedy"]["rewards"]["external_r1v_acc"] for r in result["records"]]
    assert result["accuracy"] == pytest.approx(sum(greedy_acc) / 6)
    assert result["mean_length"] == pytest.approx(sum(r["greedy"]["length"] for r in result["records"]) / 6)
    assert set(result["sampled"]["pass_at_k"]) == {"1", "2"}
    assert result["sampled"]["pass_at_k"]["1"] <= result["sampled"]["pass_at_k"]["2"]

    from mmr1.sweep.table import write_report

    (row,) = write_report(run, plots=False)
    assert row["eval_acc"] == result["accuracy"] and row["eval_step"] == "eval.json"


@pytest.mark.slow
def test_evaluate_refuses_a_missing_split(tmp_path):
    proc = run_cli(["model.warmstart.enabled=false", "dataset.num_samples=16", "dataset.eval_size=0",
                    f"hydra.run.dir={tmp_path}"], module="mmr1.evaluate", timeout=240, check=False, env=ONE_THREAD)
    assert proc.returncode != 0 and "eval.split='eval': no such split" in proc.stderr
