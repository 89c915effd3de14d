"""Checkpoint selection, rotation and the run directory checks, on fabricated folders (fast)."""

from __future__ import annotations

import json
import logging
from collections import namedtuple

import pytest

from mmr1.reliability.checkpoints import CheckpointError, checkpoint_dirs, rotate, select_checkpoint, write_marker
from mmr1.reliability.resume import resolve_resume
from mmr1.tracking.run_dir import RunDirError
from mmr1.train import train
from testkit import TINY, compose_cfg


def fake_checkpoint(run_dir, step: int, *, complete: bool = True):
    ckpt = run_dir / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (ckpt / "model.safetensors").write_bytes(b"w" * 1000)
    (ckpt / "optimizer.pt").write_bytes(b"o" * 2000)
    if complete:
        write_marker(ckpt, step, fsync=False)
    return ckpt


def test_auto_resume_skips_a_truncated_newest_checkpoint_naming_the_file(tmp_path, caplog):
    fake_checkpoint(tmp_path, 2)
    bad = fake_checkpoint(tmp_path, 4)
    with open(bad / "optimizer.pt", "r+b") as f:
        f.truncate(100)
    with caplog.at_level(logging.WARNING, logger="mmr1.reliability"):
        assert resolve_resume("auto", tmp_path) == str(tmp_path / "checkpoint-2")
    assert f"{bad / 'optimizer.pt'} has 100 bytes, 2000 were written" in caplog.text
    assert (tmp_path / "checkpoint-4.corrupt").is_dir()  # kept for a post-mortem, invisible to resume


def test_auto_resume_deletes_an_unfinished_save(tmp_path, caplog):
    fake_checkpoint(tmp_path, 2)
    fake_checkpoint(tmp_path, 4, complete=False)
    with caplog.at_level(logging.WARNING, logger="mmr1.reliability"):
        assert resolve_resume("auto", tmp_path).endswith("checkpoint-2")
    assert "mmr1_complete.json is missing" in caplog.text and not (tmp_path / "checkpoint-4").exists()


def test_auto_resume_stops_instead_of_training_from_scratch_when_no_checkpoint_is_whole(tmp_path):
    fake_checkpoint(tmp_path, 2, complete=False)
    bad = fake_checkpoint(tmp_path, 4)
    (bad / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"checkpoint-4/model.safetensors is missing.*resume=never"):
        resolve_resume("auto", tmp_path)


def test_fresh_start_forgets_the_old_wandb_run_and_never_sets_old_checkpoints_aside(tmp_path):
    (tmp_path / "wandb_run_id").write_text("abc123")
    assert resolve_resume("auto", tmp_path) is None
    assert not (tmp_path / "wandb_run_id").exists()
    fake_checkpoint(tmp_path, 2)
    assert resolve_resume("never", tmp_path) is None
    assert checkpoint_dirs(tmp_path) == [] and (tmp_path / "checkpoint-2.abandoned").is_dir()


def test_explicit_path_must_be_whole(tmp_path):
    ckpt = fake_checkpoint(tmp_path, 3)
    (ckpt / "trainer_state.json").unlink()
    with pytest.raises(CheckpointError, match="trainer_state.json"):
        resolve_resume(str(ckpt), tmp_path)


def test_rotation_counts_complete_checkpoints_and_keeps_the_rollback_target(tmp_path):
    for step in (1, 2, 3, 4):
        fake_checkpoint(tmp_path, step, complete=step != 2)
    rotate(tmp_path, 2)
    assert [s for s, _ in checkpoint_dirs(tmp_path)] == [3, 4]  # the unfinished 2 is gone, not counted
    fake_checkpoint(tmp_path, 5)
    rotate(tmp_path, 2, keep_before=4)  # a suspect streak opened at step 4: keep 3 to roll back to
    assert [s for s, _ in checkpoint_dirs(tmp_path)] == [3, 4, 5]
    assert select_checkpoint(tmp_path, before_step=4)[0] == tmp_path / "checkpoint-3"


def test_unwritable_run_dir_fails_before_training(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    cfg = compose_cfg([*TINY, "trainer.max_steps=1"], run_dir=blocker / "run")
    with pytest.raises(RunDirError, match="not writable"):
        train(cfg)


def test_full_disk_fails_before_training(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr("mmr1.tracking.run_dir.shutil.disk_usage", lambda p: usage(10**9, 10**9 - 2**20, 2**20))
    cfg = compose_cfg([*TINY, "trainer.max_steps=1"], run_dir=tmp_path / "run")
    with pytest.raises(RunDirError, match="1 MiB free"):
        train(cfg)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
