"""Real launches on CPU: 2 ranks (gloo) through `accelerate launch`, ended by success, by a failing rank
and by Ctrl-C, each leaving no process behind; and a 2-job sweep through Hydra's submitit local launcher."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from launch_helpers import REPO, TINY, by_role, free_port, processes_mentioning, run_cli

from mmr1.tracking.metrics import read_metrics
from testkit import run_env

pytestmark = pytest.mark.slow


def _env(**extra) -> dict[str, str]:
    # A free port: other runs on this machine may hold accelerate's default 29500.
    return {"NPROC_PER_NODE": "2", "MASTER_PORT": str(free_port()), "CUDA_VISIBLE_DEVICES": "", **extra}


def _assert_no_leftovers(run_dir, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while (left := processes_mentioning(str(run_dir))) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, [p.info["cmdline"] for p in left]


@pytest.mark.xdist_group("two_rank_run")
def test_two_process_run(two_rank_run):
    run_dir, proc = two_rank_run
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["world_size"] == 2 and info["steps"] == 2
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")] == [1, 2]  # one file, rank 0's
    plan = json.loads((run_dir / "launch.json").read_text())
    assert plan["world_size"] == 2 and plan["sources"]["nproc_per_node"] == "env NPROC_PER_NODE"
    assert len(by_role(plan, "trainer")) == 2
    # Every rank was given the one run directory (not a timestamped one each, Hydra issue 2070).
    assert all(f"hydra.run.dir={run_dir.resolve()}" in t["command"] for t in by_role(plan, "trainer"))
    assert (run_dir / "final").is_dir()
    assert proc.stdout.strip().splitlines()[-1] == f"Run directory: {run_dir.resolve()}"
    _assert_no_leftovers(run_dir)


def test_a_failing_rank_fails_the_run_and_leaves_nothing(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli(["trainer.max_steps=2", *TINY, "model.name_or_path=/nonexistent/model",
                    f"hydra.run.dir={run_dir}"], env=_env(), check=False)
    assert proc.returncode != 0
    assert "trainer ranks (accelerate launch, 2 processes) exited with code" in proc.stderr
    _assert_no_leftovers(run_dir)


def test_ctrl_c_stops_every_rank(tmp_path):
    run_dir = tmp_path / "run"
    env = run_env(_env())
    # Long enough to be interrupted mid-run, never long in practice.
    # SIGINT at its default in the child, whatever this process inherited: a job started with `cmd &` from a
    # script (or under nohup ... &) ignores SIGINT, and Python then installs no KeyboardInterrupt handler.
    parent = subprocess.Popen([sys.executable, "-m", "mmr1.train", "trainer.max_steps=500", *TINY,
                               f"hydra.run.dir={run_dir}"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 240
        # Wait until both ranks train (metrics.jsonl has a row), then press Ctrl-C (SIGINT to mmr1 only).
        while not (run_dir / "metrics.jsonl").exists() and time.monotonic() < deadline and parent.poll() is None:
            time.sleep(0.5)
        assert parent.poll() is None, parent.stdout.read()[-3000:]
        ranks = [p for p in processes_mentioning(str(run_dir)) if p.pid != parent.pid]
        assert len(ranks) >= 3  # accelerate launch + 2 ranks
        os.kill(parent.pid, signal.SIGINT)
        # Both ranks checkpoint, then exit (the whole test took 54 s alone); 120 s ran out once on a loaded machine.
        out, _ = parent.communicate(timeout=300)
        assert parent.returncode == 128 + signal.SIGINT, out[-3000:]
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
    _assert_no_leftovers(run_dir)


def test_sweep_through_submitit_local(tmp_path):
    sweep_dir = tmp_path / "sweep"
    run_cli(["--multirun", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=15",
             "trainer.seed=1,2", "trainer.max_steps=2", *TINY, f"hydra.sweep.dir={sweep_dir}"],
            env={"CUDA_VISIBLE_DEVICES": "", "NPROC_PER_NODE": ""}, timeout=900)
    infos = sorted(sweep_dir.rglob("run_info.json"))
    assert len(infos) == 2, list(sweep_dir.rglob("*"))
    for info in infos:
        assert json.loads(info.read_text())["steps"] == 2
        plan = json.loads((info.parent / "launch.json").read_text())
        assert plan["relaunch"] is False and plan["world_size"] == 1  # each job ran its own plan
    assert (sweep_dir / ".submitit").is_dir()
