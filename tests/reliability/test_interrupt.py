"""Ctrl-C mid-step: the step finishes, a checkpoint is saved, the process exits 130 printing the command
that resumes the run, and that command finishes the run, logging to the same wandb run (offline here)."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys

import pytest
from harness import ENV, RECIPE, rows_by_step, start, wait_for

from mmr1.reliability.checkpoints import MARKER
from testkit import REPO


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
                          env={**os.environ, **ENV, **wandb})
    assert done.returncode == 0, done.stderr[-4000:]
    assert "continuing from" in done.stdout and "checkpoint-3" in done.stdout
    assert sorted(rows_by_step(run)) == [1, 2, 3, 4]
    assert json.loads((run / "run_info.json").read_text())["status"] == "finished"
    assert (run / "wandb_run_id").read_text().strip() == run_id  # resume="allow" on the stored id
    assert {p.name.rsplit("-", 1)[-1] for p in (run / "wandb").glob("offline-run-*")} == {run_id}
