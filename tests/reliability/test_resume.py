"""Exact resume: a run killed with SIGKILL and resumed logs the same numbers as a straight run.

Tolerance: none. Both runs are CPU, one thread, same seed; Trainer restores the RNG (TRL samples with
torch's RNG), the data position and the optimizer/scheduler, and mmr1 restores what Trainer leaves out
(TRL's generation-cycle state, the sampler's later-epoch order). With one thread every float reduction
happens in the same order, so any difference is a resume bug, not noise: loss, reward, grad_norm and
every other logged value must match bit for bit, and so must the final weights.
"""

from __future__ import annotations

import json
import shutil
import signal

import pytest
from harness import (
    assert_same_rows,
    assert_same_weights,
    cli,
    rows_by_step,
    start,
    wait_for,
    with_overrides,
)

from mmr1.reliability.checkpoints import MARKER, checkpoint_dirs

RECIPE = with_overrides()


@pytest.fixture
def straight(straight_run):
    """The uninterrupted reference run (tests/reliability/conftest.py, shared with test_checkpoint_content.py)."""
    return straight_run


@pytest.mark.slow
@pytest.mark.xdist_group("straight_run")
def test_kill9_after_step2_checkpoint_then_resume_matches_straight_run(straight, tmp_path):
    run = tmp_path / "run"
    sentinel = tmp_path / "in_step_4"
    # Step 4's rollout (generated at global_step 3) sleeps: the kill lands after step 3 was logged
    # and checkpoint-2 written, before checkpoint-4: metrics.jsonl then holds a row the resume redoes.
    proc = start(RECIPE, run, env={"MMR1_TEST_SLOW_FROM": "3", "MMR1_TEST_SLOW_S": "600",
                                   "MMR1_TEST_SENTINEL": str(sentinel)})
    try:
        wait_for(sentinel, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    assert (run / "checkpoint-2" / MARKER).exists()
    assert sorted(rows_by_step(run)) == [1, 2, 3]
    # A save cut short by the kill would look like this: a folder without the marker.
    half = run / "checkpoint-4"
    shutil.copytree(run / "checkpoint-2", half)
    (half / MARKER).unlink()
    (half / "optimizer.pt").unlink()

    log = cli(RECIPE, run).stdout  # resume=auto is the default; Hydra logs to stdout
    assert "deleted the unfinished checkpoint-4" in log and "continuing from" in log and "checkpoint-2" in log
    resumed, reference = rows_by_step(run), rows_by_step(straight)
    assert sorted(resumed) == [1, 2, 3, 4]  # no duplicate (3 was logged twice), none missing
    for step in (3, 4):
        assert_same_rows(resumed[step], reference[step])
    assert_same_weights(run / "final" / "model.safetensors", straight / "final" / "model.safetensors")
    assert [s for s, _ in checkpoint_dirs(run)] == [2, 4]  # save_total_limit=2, the half folder replaced
    assert json.loads((run / "run_info.json").read_text())["status"] == "finished"


@pytest.mark.slow
@pytest.mark.xdist_group("straight_run")
def test_truncated_last_checkpoint_falls_back_to_previous_with_warning(straight, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    (run / "final").rename(tmp_path / "final_straight")
    weights = run / "checkpoint-4" / "model.safetensors"
    with open(weights, "r+b") as f:
        f.truncate(weights.stat().st_size // 2)

    log = cli(RECIPE, run).stdout
    assert f"{weights} has" in log and "truncated" in log  # names the file
    assert "continuing from" in log and "checkpoint-2" in log
    assert (run / "checkpoint-4.corrupt").is_dir()  # kept for a post-mortem, out of resume's way
    resumed, reference = rows_by_step(run), rows_by_step(straight)
    assert sorted(resumed) == [1, 2, 3, 4]
    for step in (3, 4):
        assert_same_rows(resumed[step], reference[step])
    assert_same_weights(run / "final" / "model.safetensors", tmp_path / "final_straight" / "model.safetensors")


@pytest.mark.slow
def test_resume_mid_generation_cycle_is_exact(tmp_path):
    """num_iterations=2: step 4 reuses step 3's rollouts; checkpoint-3 is mid-cycle (TRL would regenerate)."""
    recipe = with_overrides("trainer.num_iterations=2", "trainer.save_steps=3")
    straight, run = tmp_path / "straight", tmp_path / "run"
    cli(recipe, straight)
    assert list((straight / "checkpoint-3").glob("mmr1_grpo_state_rank*.pt"))
    shutil.copytree(straight, run)
    shutil.rmtree(run / "final")
    log = cli([*recipe, f"resume={run / 'checkpoint-3'}"], run).stdout
    assert "set aside the later" in log  # checkpoint-4 is not overwritten in place
    assert (run / "checkpoint-4.abandoned").is_dir()
    assert sorted(rows_by_step(run)) == [1, 2, 3, 4]
    assert_same_rows(rows_by_step(run)[4], rows_by_step(straight)[4])
    assert_same_weights(run / "final" / "model.safetensors", straight / "final" / "model.safetensors")
