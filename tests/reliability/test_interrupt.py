"""Ctrl-C mid-step: the step finishes, a checkpoint is saved, the process exits 130 printing the command
that resumes the run, and that command finishes the run, logging to the same wandb run (offline here)."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys

import pytest
from harness import ENV, RECIPE, rows_by_step, start, wait_for

from mmr1.reliability.checkpoints import MARKER
from testkit import REPO, run_env


@pytest.mark.slow
def test_sigint_mid_step_saves_a_checkpoint_and_prints_the_resume_command(tmp_path):
    run, sentinel = tmp_path / "run", tmp_path / "in_step_3"
    # Step 3's rollout (global_step 2) takes 4 s: SIGINT arrives in the middle of it.
    wandb = {"WANDB_MODE": "offline"}
    proc = start([*RECIPE, "logger=wandb"], run, env={"MMR1_TEST_SLOW_FROM": "2", "MMR1_TEST_SLOW_S": "4",
                                                      "MMR1_TEST_SENTINEL": str(sentinel), **wandb})
    wait_for(sentinel, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 130, err[-4000:]
    assert "Interrupted at step 3" in out and "Resume with:" in out
    assert (run / "checkpoint-3" / MARKER).exists()  # not a save_steps multiple: the interrupt's own
    assert json.loads((run / "run_info.json").read_text())["status"] == "interrupted"
    assert sorted(rows_by_step(run)) == [1, 2, 3]
    run_id = (run / "wandb_run_id").read_text().strip()

    command = out.split("Resume with:")[1].strip().splitlines()[0]
    assert f"hydra.run.dir={run}" in command
    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "mmr1.train"]
    done = subprocess.run([sys.executable, *argv[1:]], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=run_env({**ENV, **wandb}))
    assert done.returncode == 0, done.stderr[-4000:]
    assert "continuing from" in done.stdout and "checkpoint-3" in done.stdout
    assert sorted(rows_by_step(run)) == [1, 2, 3, 4]
    assert json.loads((run / "run_info.json").read_text())["status"] == "finished"
    assert (run / "wandb_run_id").read_text().strip() == run_id  # resume="allow" on the stored id
    assert {p.name.rsplit("-", 1)[-1] for p in (run / "wandb").glob("offline-run-*")} == {run_id}


@pytest.mark.slow
def test_a_second_ctrl_c_stops_at_once_without_a_checkpoint(tmp_path):
    """The first SIGINT asks for a checkpoint at the end of the step; step 3's reward sleeps 120 s, so only
    the second SIGINT can end the run before that: at once, with no checkpoint-3 and no resume message."""
    import time

    run, sentinel = tmp_path / "run", tmp_path / "in_step_3"
    proc = start(RECIPE, run, env={"MMR1_TEST_SLOW_FROM": "2", "MMR1_TEST_SLOW_S": "120",
                                   "MMR1_TEST_SENTINEL": str(sentinel)})
    wait_for(sentinel, proc)
    proc.send_signal(signal.SIGINT)
    time.sleep(1.0)
    assert proc.poll() is None  # the first one only raised the flag: the step goes on
    proc.send_signal(signal.SIGINT)
    second = time.monotonic()
    try:
        out, err = proc.communicate(timeout=100)  # well inside the 120 s the step would still take
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("the second SIGINT did not stop the run")
    # "At once": the stop path neither waits for the step's reward (120 s) nor for a reward deadline or a checkpoint;
    # what is left is tearing down the process and its reward workers (a few seconds on a loaded 2-core machine).
    assert time.monotonic() - second < 30
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    assert "second SIGINT: stopping now, without a checkpoint" in (run / "train.log").read_text()
    assert "Resume with:" not in out and not (run / "checkpoint-3").exists()
    assert (run / "checkpoint-2" / MARKER).exists()  # the last save_steps checkpoint is kept
