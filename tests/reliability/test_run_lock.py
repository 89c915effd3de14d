"""One run per run directory (mmr1.reliability.lock): a second run is refused naming the holder's PID
and host, a dead holder's lock is taken over with a warning, the ranks of one run share their lock."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from harness import ENV, RECIPE, rows_by_step
from omegaconf import OmegaConf

from mmr1.reliability.lock import LOCK_FILE, NoLock, RunDirLock, RunDirLocked, hold_run_dir, lock_name
from testkit import REPO, run_cli, run_env

HOST = socket.gethostname()
# Holds the lock on argv[1], says so, and keeps it until stdin closes (or it is killed).
HOLDER = ("import sys; from mmr1.reliability.lock import RunDirLock; "
          "lock = RunDirLock(sys.argv[1]).acquire(); print('held', flush=True); sys.stdin.read(); lock.release()")


def _holder(run_dir: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _can_lock_elsewhere(run_dir: Path) -> bool:
    code = ("import sys; from mmr1.reliability.lock import RunDirLock, RunDirLocked\n"
            "try: RunDirLock(sys.argv[1]).acquire().release()\nexcept RunDirLocked: sys.exit(3)")
    return subprocess.run([sys.executable, "-c", code, str(run_dir)]).returncode == 0


def _cfg(run_dir: Path, node_rank: int | None = None):
    return OmegaConf.create({"run_dir": str(run_dir), "launcher": {"node_rank": node_rank}})


def test_a_second_run_is_refused_naming_the_directory_the_holders_pid_and_host(tmp_path, caplog):
    run = tmp_path / "run"
    holder = _holder(run)
    try:
        with pytest.raises(RunDirLocked) as info:
            RunDirLock(run).acquire()
        msg = str(info.value)
        assert str(run.resolve()) in msg and f"pid {holder.pid} on host {HOST}" in msg
        assert f"kill {holder.pid}" in msg and "hydra.run.dir=" in msg and "resume=auto" in msg
        assert info.value.holder["pid"] == holder.pid and info.value.holder["host"] == HOST
    finally:
        holder.stdin.close()
        assert holder.wait(timeout=30) == 0
    # Released cleanly: the next run takes it without calling anything stale.
    with caplog.at_level(logging.WARNING, logger="mmr1.reliability.lock"), RunDirLock(run) as lock:
        assert lock.held and lock.took_over is None
    assert "stale" not in caplog.text


def test_the_stale_lock_of_a_killed_run_is_taken_over_with_a_warning_naming_it(tmp_path, caplog):
    run = tmp_path / "run"
    holder = _holder(run)
    holder.send_signal(signal.SIGKILL)  # no release: the file still names it, the kernel dropped the flock
    holder.wait(timeout=30)
    assert json.loads((run / LOCK_FILE).read_text())["pid"] == holder.pid
    with caplog.at_level(logging.WARNING, logger="mmr1.reliability.lock"), RunDirLock(run) as lock:
        assert lock.took_over["pid"] == holder.pid
        assert f"taking over the stale lock of pid {holder.pid} on host {HOST}" in caplog.text
        assert json.loads((run / LOCK_FILE).read_text())["pid"] == os.getpid()  # now names this process
        assert not _can_lock_elsewhere(run)


def test_the_lock_is_released_when_the_run_ends_even_by_an_exception(tmp_path):
    run = tmp_path / "new" / "run"  # created by the lock
    with pytest.raises(ValueError), RunDirLock(run):
        assert not _can_lock_elsewhere(run)
        raise ValueError("the run failed")
    assert _can_lock_elsewhere(run)
    assert (run / LOCK_FILE).read_text() == ""  # no holder left behind to be mistaken for a stale one


def test_ranks_share_their_launchers_lock_and_nodes_lock_their_own_file(tmp_path):
    run = tmp_path / "run"
    holder = _holder(run)  # the launching process of a run
    try:
        assert isinstance(hold_run_dir(_cfg(run), env={"MMR1_LAUNCHED": "1", "RANK": "0"}), NoLock)
        # A user's own torchrun: rank 0 holds the directory for its run, the other ranks do not lock.
        assert isinstance(hold_run_dir(_cfg(run), env={"LOCAL_RANK": "1", "RANK": "1"}), NoLock)
        with pytest.raises(RunDirLocked):
            hold_run_dir(_cfg(run), env={"LOCAL_RANK": "0", "RANK": "0"})
        with pytest.raises(RunDirLocked, match=f"pid {holder.pid}"):
            hold_run_dir(_cfg(run), env={})
        # Node 1 of the same multi-node run shares the directory with node 0 ...
        node1 = hold_run_dir(_cfg(run, node_rank=1), env={})
        assert node1.held and node1.path.name == lock_name(1)
        # ... and keeps a second launcher for node 1 out (NODE_RANK, as the seed's commands set it).
        with pytest.raises(RunDirLocked, match=f"pid {os.getpid()}"):
            hold_run_dir(_cfg(run), env={"NODE_RANK": "1"})
        node1.release()
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def test_a_dry_run_into_a_held_directory_is_refused_and_writes_nothing_there(tmp_path):
    run = tmp_path / "run"
    holder = _holder(run)
    try:
        proc = run_cli(["dry_run=true", f"hydra.run.dir={run}"], check=False, timeout=120)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert proc.returncode != 0
    assert "RunDirLocked" in proc.stderr and f"pid {holder.pid} on host {HOST}" in proc.stderr
    assert str(run.resolve()) in proc.stderr
    # Neither the failure record (it would clobber the holder's run_info.json) nor the dry run's files.
    assert not any((run / f).exists() for f in ("run_info.json", "config.yaml", "grpo_args.json", "launch.json"))


def test_a_training_run_into_a_held_directory_is_refused_before_it_touches_the_checkpoints(tmp_path):
    """A dry run returns before resolve_resume; a training run with resume=never would set the live run's
    checkpoints aside and forget its wandb id there: it must be refused first, leaving both as they were."""
    run = tmp_path / "run"
    (run / "checkpoint-1").mkdir(parents=True)
    (run / "checkpoint-1" / "trainer_state.json").write_text("{}")
    (run / "wandb_run_id").write_text("live-run\n")
    before = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    holder = _holder(run)
    try:
        proc = run_cli([*RECIPE, "trainer.max_steps=1", "resume=never", f"hydra.run.dir={run}"], check=False,
                       timeout=300)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert proc.returncode != 0 and "RunDirLocked" in proc.stderr, proc.stderr[-4000:]
    # (Hydra writes .hydra/ and its job log before mmr1 runs at all: the refused run's own files, not the holder's.)
    after = sorted(str(p.relative_to(run)) for p in run.rglob("*")
                   if p.name not in (LOCK_FILE, "train.log") and ".hydra" not in p.parts)
    assert after == before
    assert (run / "wandb_run_id").read_text() == "live-run\n"


def _start(run: Path) -> subprocess.Popen:
    args = [*RECIPE, "trainer.max_steps=3", "trainer.save_steps=2", f"hydra.run.dir={run}"]
    return subprocess.Popen([sys.executable, "-m", "mmr1.train", *args], cwd=REPO,
                            env=run_env(ENV),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_two_simultaneous_runs_on_one_directory_the_second_refuses_naming_the_holder(tmp_path):
    """The issue's repro: the same command started twice at once with the same hydra.run.dir."""
    run = tmp_path / "run"
    procs = [_start(run), _start(run)]
    deadline = time.monotonic() + 240
    while all(p.poll() is None for p in procs):
        assert time.monotonic() < deadline, "neither run ended"
        time.sleep(0.05)
    refused = next(p for p in procs if p.poll() is not None)
    holder = next(p for p in procs if p is not refused)
    assert holder.poll() is None, "the refused run ended only after the other one: they did not overlap"
    out, err = refused.communicate()
    assert refused.returncode != 0, f"the second run went ahead\n{out[-2000:]}\n{err[-4000:]}"
    assert "RunDirLocked" in err and f"pid {holder.pid} on host {HOST}" in err, err[-4000:]
    assert f"run directory {run.resolve()} is in use" in err and "hydra.run.dir=" in err

    out, err = holder.communicate(timeout=240)
    assert holder.returncode == 0, err[-6000:]
    assert sorted(rows_by_step(run)) == [1, 2, 3]  # each step once (rows_by_step refuses duplicates)
    assert json.loads((run / "run_info.json").read_text())["status"] == "finished"
    assert (run / "checkpoint-2").is_dir() and (run / "final").is_dir()
    assert (run / LOCK_FILE).read_text() == ""  # released at the end


@pytest.mark.slow
def test_the_ranks_of_a_two_process_run_share_the_launchers_lock(tmp_path):
    """accelerate-launched ranks (MMR1_LAUNCHED=1) train under their launcher's lock; others are refused."""
    run = tmp_path / "run"
    args = ["launcher.nproc_per_node=2", "model.warmstart.enabled=false", "dataset.num_samples=16",
            "trainer.per_device_train_batch_size=4", "trainer.num_generations=4", "trainer.max_completion_length=8",
            "trainer.max_steps=2", "trainer.save_steps=1000", f"hydra.run.dir={run}"]
    launcher = subprocess.Popen([sys.executable, "-m", "mmr1.train", *args], cwd=REPO,
                                env=run_env(ENV),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run / LOCK_FILE).exists() or f'"pid": {launcher.pid}' not in (run / LOCK_FILE).read_text():
        assert launcher.poll() is None and time.monotonic() < deadline, "the launcher never took the lock"
        time.sleep(0.05)
    other = run_cli(["dry_run=true", f"hydra.run.dir={run}"], check=False, timeout=120)
    assert other.returncode != 0 and f"pid {launcher.pid} on host {HOST}" in other.stderr, other.stderr[-4000:]
    out, err = launcher.communicate(timeout=300)
    assert launcher.returncode == 0, err[-6000:]
    assert json.loads((run / "run_info.json").read_text())["world_size"] == 2
    assert (run / LOCK_FILE).read_text() == ""
