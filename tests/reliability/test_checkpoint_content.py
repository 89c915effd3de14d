"""Content hashes in the completeness marker, and a disk that fills during a save.

Fast tests on fabricated folders pin the marker format and exactly what each verify level detects; the
slow ones use the tiny model's real checkpoints: a same-size corruption found on resume, ENOSPC injected
into a save, and (where this machine may mount one) a real tmpfs that fills while the run saves.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import xxhash
from harness import assert_same_weights, cli, rows_by_step, start, wait_for, with_overrides
from safetensors.torch import load_file

from mmr1.reliability import checkpoints as ck
from mmr1.reliability import hashes
from mmr1.reliability.checkpoints import (
    MARKER,
    CheckpointCallback,
    CheckpointError,
    checkpoint_dirs,
    read_marker,
    rotate,
    select_checkpoint,
    verify,
    write_marker,
)
from mmr1.reliability.resume import resolve_resume
from mmr1.train import train
from testkit import compose_cfg

RECIPE = with_overrides()


def make_checkpoint(run_dir: Path, step: int, sizes: dict[str, int] | None = None, **marker) -> Path:
    ckpt = run_dir / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    for name, size in (sizes or {"trainer_state.json": 40, "model.safetensors": 3000, "optimizer.pt": 5000}).items():
        (ckpt / name).write_bytes(os.urandom(size))
    write_marker(ckpt, step, fsync=False, **marker)
    return ckpt


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


@pytest.fixture
def small_chunks(monkeypatch):
    """1 KiB chunks: a 'large' file (more than 16 chunks) is 17 KiB here instead of 256 MiB."""
    monkeypatch.setattr(hashes, "CHUNK_BYTES", 1024)
    return 1024


def test_marker_records_an_xxh3_digest_per_chunk_of_every_file(tmp_path, small_chunks):
    ckpt = make_checkpoint(tmp_path, 2)
    hashes = read_marker(ckpt)["hashes"]
    assert hashes["algorithm"] == "xxh3_128" and hashes["chunk_bytes"] == 1024
    data = (ckpt / "optimizer.pt").read_bytes()
    assert hashes["files"]["optimizer.pt"] == [xxhash.xxh3_128(data[i:i + 1024]).hexdigest()
                                               for i in range(0, len(data), 1024)]  # 5 chunks, the last partial
    assert set(hashes["files"]) == set(read_marker(ckpt)["files"]) == {"trainer_state.json", "model.safetensors",
                                                                       "optimizer.pt"}
    assert verify(ckpt, level="full").ok


def test_same_size_corruption_is_detected_on_resume_naming_the_file(tmp_path, caplog):
    make_checkpoint(tmp_path, 2)
    bad = make_checkpoint(tmp_path, 4)
    flip_byte(bad / "optimizer.pt", 2500)
    assert verify(bad, level="sizes").ok  # what the size-only marker would have said
    with caplog.at_level(logging.WARNING, logger="mmr1.reliability"):
        assert resolve_resume("auto", tmp_path) == str(tmp_path / "checkpoint-2")
    assert f"{bad / 'optimizer.pt'} has the size that was written but not the content (bytes 0-5000" in caplog.text
    assert (tmp_path / "checkpoint-4.corrupt").is_dir()  # kept for a post-mortem, invisible to resume


def test_sample_level_checks_small_files_whole_and_every_16th_chunk_of_large_ones(tmp_path, small_chunks):
    ckpt = make_checkpoint(tmp_path, 2, {"trainer_state.json": 40, "small.pt": 16 * 1024, "big.pt": 40 * 1024})
    assert hashes.sample_chunks(40) == [0, 16, 32, 39] and hashes.sample_chunks(16) == list(range(16))
    original = {n: (ckpt / n).read_bytes() for n in ("small.pt", "big.pt")}

    def damaged(name: str, lo: int, hi: int) -> tuple[bool, bool]:
        """(sample detects, full detects) for bytes [lo, hi) of ``name`` overwritten."""
        with open(ckpt / name, "r+b") as f:
            f.seek(lo)
            f.write(bytes(b ^ 0xFF for b in original[name][lo:hi]))
        found = (not verify(ckpt, level="sample").ok, not verify(ckpt, level="full").ok)
        (ckpt / name).write_bytes(original[name])
        return found

    for chunk in range(16):  # a small file (<= 16 chunks): every byte is checked
        assert damaged("small.pt", chunk * 1024 + 7, chunk * 1024 + 8) == (True, True)
    for chunk in (0, 16, 32, 39):  # first, every 16th, last
        assert damaged("big.pt", chunk * 1024 + 500, chunk * 1024 + 501) == (True, True)
    assert damaged("big.pt", 5 * 1024 + 500, 5 * 1024 + 501) == (False, True)  # the documented miss: full only
    for lo in range(0, 40 * 1024 - 15 * 1024, 512):  # any damaged range longer than 15 chunks is caught
        assert damaged("big.pt", lo, lo + 15 * 1024 + 1)[0], lo


def test_the_verify_level_comes_from_the_environment(tmp_path, monkeypatch):
    ckpt = make_checkpoint(tmp_path, 2)
    flip_byte(ckpt / "model.safetensors", 10)
    assert not verify(ckpt).ok  # default: sample
    monkeypatch.setenv("MMR1_CHECKPOINT_VERIFY", "sizes")
    assert verify(ckpt).ok
    monkeypatch.setenv("MMR1_CHECKPOINT_VERIFY", "full")
    assert not verify(ckpt).ok
    monkeypatch.setenv("MMR1_CHECKPOINT_VERIFY", "paranoid")
    with pytest.raises(CheckpointError, match="MMR1_CHECKPOINT_VERIFY='paranoid': expected one of sizes, sample"):
        verify(ckpt)


def test_a_marker_without_hashes_is_checked_on_sizes_with_a_log_line(tmp_path, caplog):
    ckpt = make_checkpoint(tmp_path, 2, hashes=False)  # what mmr1 wrote before content hashes
    assert "hashes" not in read_marker(ckpt)
    flip_byte(ckpt / "optimizer.pt", 100)
    with caplog.at_level(logging.WARNING, logger="mmr1.reliability"):
        assert verify(ckpt).ok
    assert "has no content hashes (written by an earlier mmr1): checked file sizes only" in caplog.text
    with open(ckpt / "optimizer.pt", "r+b") as f:
        f.truncate(10)
    assert "has 10 bytes, 5000 were written" in verify(ckpt).problem


def test_rotation_reads_no_file_contents(tmp_path, monkeypatch):
    for step in (1, 2, 3):
        make_checkpoint(tmp_path, step)

    def no_reads(*args, **kwargs):
        raise AssertionError("rotation hashed a file")

    monkeypatch.setattr(hashes, "chunk_digest", no_reads)
    rotate(tmp_path, 2)
    assert [s for s, _ in checkpoint_dirs(tmp_path)] == [2, 3]


def test_a_marker_write_that_runs_out_of_disk_leaves_no_checkpoint_marked_complete(tmp_path, monkeypatch):
    make_checkpoint(tmp_path, 2)
    ckpt = tmp_path / "checkpoint-4"
    ckpt.mkdir()
    (ckpt / "model.safetensors").write_bytes(b"w" * 1000)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ck.json, "dump", full)
    cb = CheckpointCallback(2, fsync=False)
    state = SimpleNamespace(global_step=4, is_world_process_zero=True)
    with pytest.raises(CheckpointError, match=f"no space left on device while saving {ckpt} .*checkpoint-2"):
        cb.on_save(SimpleNamespace(output_dir=str(tmp_path)), state, None)
    assert not ckpt.exists()  # rank 0 deleted the unfinished folder: it holds the space the failure record needs
    assert not list(tmp_path.rglob(MARKER + ".tmp"))
    assert select_checkpoint(tmp_path)[0] == tmp_path / "checkpoint-2"


# --- real checkpoints of the tiny model ---------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.xdist_group("straight_run")
def test_same_size_corruption_of_a_real_checkpoint_is_caught_on_resume(tmp_path, straight_run):
    straight, run = straight_run, tmp_path / "run"
    shutil.copytree(straight, run)
    shutil.rmtree(run / "final")
    weights = run / "checkpoint-4" / "model.safetensors"
    size = weights.stat().st_size
    flip_byte(weights, size // 2)  # inside a tensor: safetensors loads it without complaint
    load_file(str(weights))
    assert verify(weights.parent, level="sizes").ok  # the size-only marker would resume from it

    log = cli(RECIPE, run).stdout
    assert f"{weights} has the size that was written but not the content" in log
    assert "continuing from" in log and "checkpoint-2" in log
    assert (run / "checkpoint-4.corrupt").is_dir()
    assert sorted(rows_by_step(run)) == [1, 2, 3, 4]
    assert_same_weights(run / "final" / "model.safetensors", straight / "final" / "model.safetensors")


@pytest.mark.slow
def test_enospc_during_a_save_stops_the_run_and_the_previous_checkpoint_resumes(tmp_path, monkeypatch, caplog,
                                                                                 request):
    """ENOSPC injected into torch.save (optimizer.pt of step 4, after model.safetensors was written)."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    run = tmp_path / "run"
    real_save = torch.save

    def save_on_a_full_disk(obj, f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)) and Path(f).parent.name == "checkpoint-4":
            buf = io.BytesIO()
            real_save(obj, buf, *args, **kwargs)
            Path(f).write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])  # what fit before the disk filled
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))
        return real_save(obj, f, *args, **kwargs)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the CLI runs of these tests (harness.ENV): 2-3x faster on a shared machine
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    cfg = compose_cfg(RECIPE, run_dir=run)
    with monkeypatch.context() as m:
        m.setattr(torch, "save", save_on_a_full_disk)
        with pytest.raises(CheckpointError) as err:
            train(cfg)
    msg = str(err.value)
    assert f"no space left on device while saving {run / 'checkpoint-4'}" in msg
    assert f"newest complete checkpoint, {run / 'checkpoint-2'}" in msg and "is intact" in msg
    assert f"resume from it with: python -m mmr1.train hydra.run.dir={run.resolve()}" in msg
    assert not (run / "checkpoint-4").exists()  # never marked complete; deleted, its space given back
    assert select_checkpoint(run)[0] == run / "checkpoint-2" and verify(run / "checkpoint-2", level="full").ok

    with caplog.at_level(logging.WARNING, logger="mmr1.reliability"):
        train(compose_cfg(RECIPE, run_dir=run))  # the same command again: resume=auto
    assert f"continuing from {run / 'checkpoint-2'}" in caplog.text
    assert sorted(rows_by_step(run)) == [1, 2, 3, 4]
    assert [s for s, _ in checkpoint_dirs(run)] == [2, 4] and verify(run / "checkpoint-4", level="full").ok


@pytest.fixture
def small_fs(tmp_path):
    """A 128 MiB tmpfs (the run needs 64 MiB free to start); skipped where mounting is not allowed."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    try:
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128m", "tmpfs", str(mnt)], capture_output=True,
                              text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"cannot mount a tmpfs here: {e}")
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


@pytest.mark.slow
def test_a_real_filesystem_filling_during_a_save(small_fs, tmp_path):
    """Another writer fills the disk while step 4 trains; the step-4 save hits a real ENOSPC in torch.save
    (whose own message, "unexpected pos N vs M", names neither the disk nor the folder)."""
    run, sentinel = small_fs / "run", tmp_path / "in_step_4"
    proc = start(RECIPE, run, env={"MMR1_TEST_SLOW_FROM": "3", "MMR1_TEST_SLOW_S": "3",
                                   "MMR1_TEST_SENTINEL": str(sentinel)})
    try:
        wait_for(sentinel, proc)  # checkpoint-2 is complete, step 4 sits in its rollout
        st = os.statvfs(small_fs)
        filler = small_fs / "other_job_output.bin"
        with open(filler, "wb") as f:  # leave 6 MiB: model.safetensors (3.9 MB) fits, optimizer.pt (7.8 MB) not
            f.write(b"\0" * (st.f_bavail * st.f_frsize - (6 << 20)))
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0, out[-3000:]
    assert f"no space left on device while saving {run / 'checkpoint-4'}" in err, err[-6000:]
    info = json.loads((run / "run_info.json").read_text())
    assert info["status"] == "failed" and "no space left on device while saving" in info["error"]
    assert not (run / "checkpoint-4").exists()
    assert select_checkpoint(run)[0] == run / "checkpoint-2" and verify(run / "checkpoint-2", level="full").ok
