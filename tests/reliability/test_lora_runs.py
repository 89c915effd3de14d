"""LoRA runs on CPU (model.train_type=lora, mmr1.models.lora), on the reliability harness's recipe: 2 steps with
adapter files in final/, evaluation on them and an exact resume; the collapse guard's rollback and give-up."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from harness import assert_same_rows, cli, rows_by_step, with_overrides
from safetensors.torch import load_file

from mmr1.reliability.guard import read_events
from testkit import run_cli


def _adapters(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "adapter_model.safetensors")


@pytest.mark.slow
def test_two_step_lora_run_saves_adapters_evaluates_on_them_and_resumes_exactly(tmp_path):
    """2 steps with LoRA (pseudo-random rewards: the adapters move): final/ and each checkpoint hold adapter files
    only; `mmr1.evaluate eval.checkpoint=<run>` loads them; a run resumed from checkpoint-1 logs step 2 and ends
    on the adapters of the straight run, bit for bit."""
    run, resumed = tmp_path / "run", tmp_path / "resumed"
    overrides = with_overrides("model.train_type=lora", "trainer.max_steps=2", "trainer.save_steps=1",
                               "optimizer.lr=1e-2")
    cli(overrides, run)
    final = {p.name for p in (run / "final").iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json"} <= final and "model.safetensors" not in final
    assert not (run / "checkpoint-1" / "model.safetensors").exists()
    first, last = _adapters(run / "checkpoint-1"), _adapters(run / "final")
    assert set(first) == set(last) and all("lora_" in k and "language_model" in k for k in last)
    assert any(not torch.equal(first[k], last[k]) for k in last if "lora_B" in k)  # step 2 trained them

    eval_args = [o for o in overrides if o.startswith(("model.", "dataset.", "reward."))]
    run_cli([*eval_args, f"eval.checkpoint={run}", "eval.limit=2", f"hydra.run.dir={tmp_path / 'eval'}"],
            module="mmr1.evaluate", env={"OMP_NUM_THREADS": "1"}, timeout=300)
    result = json.loads((run / "eval.json").read_text())
    assert result["model"] == str(run / "final") and result["rows"] == 2
    # The adapters were applied: the base model alone, evaluated on the same rows, writes other greedy completions.
    base_out = tmp_path / "base_eval.json"
    run_cli([*eval_args, "eval.limit=2", f"eval.output={base_out}", f"hydra.run.dir={tmp_path / 'base'}"],
            module="mmr1.evaluate", env={"OMP_NUM_THREADS": "1"}, timeout=300)
    base = json.loads(base_out.read_text())
    assert [r["problem"] for r in base["records"]] == [r["problem"] for r in result["records"]]
    assert [r["greedy"]["text"] for r in base["records"]] != [r["greedy"]["text"] for r in result["records"]]

    cli([*overrides, f"resume={run / 'checkpoint-1'}"], resumed)
    assert sorted(rows_by_step(resumed)) == [2]
    assert_same_rows(rows_by_step(run)[2], rows_by_step(resumed)[2])
    again = _adapters(resumed / "final")
    assert all(torch.equal(last[k], again[k]) for k in last)


@pytest.mark.slow
def test_guard_rollback_reloads_the_adapters_and_gives_up_on_the_last_good_ones(tmp_path):
    """The injected collapse of tests/reliability/test_guard.py, shortened, on LoRA: rewards collapse from step 3
    on, the guard trips at step 4, rolls back to checkpoint-2 (Trainer's peft resume path), trips again and gives
    up: final/ holds checkpoint-2's adapters."""
    run = tmp_path / "run"
    overrides = with_overrides(
        "model.train_type=lora", "reward.funcs=[collapse_reward]", "trainer.scale_rewards=none",
        "trainer.max_steps=5", "trainer.save_steps=2", "guard.min_history=2", "guard.window=4", "guard.patience=2",
        "guard.max_rollbacks=1")
    cli(overrides, run, env={"MMR1_TEST_COLLAPSE_AT": "2"})
    events = read_events(run)
    assert [e["event"] for e in events] == ["trip", "rollback", "trip", "gave_up"]
    assert events[1]["to_step"] == 2
    good, final = _adapters(run / "checkpoint-2"), _adapters(run / "final")
    assert all(torch.equal(good[k], final[k]) for k in good)
    assert json.loads((run / "run_info.json").read_text())["status"] == "guard_gave_up"
