"""Atomic checkpoints: a completeness marker written last, verified before any resume.

Trainer writes ``checkpoint-N/`` in place, file by file, and ``get_last_checkpoint`` picks the highest
N without looking inside: a crash while saving leaves a half checkpoint that auto-resume would load
(optimizer or RNG files missing are skipped with a log line only, a missing ``trainer_state.json``
restarts the step counter at 0). mmr1 writes ``mmr1_complete.json`` into the folder after every
other file is on disk (fsynced), listing each file with its size, the pattern torchtitan (DCP
``.metadata``) and verl (a tracker file written after the data) use. A folder without it, or whose
files no longer match it (truncated, missing), is never resumed from.

Rotation (``save_total_limit``) is done here too, not by Trainer: Trainer's counts half checkpoints
as real ones (and may delete the last good one to keep a broken one), and cannot know that the
collapse guard needs the newest checkpoint from before a suspect streak.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from transformers import TrainerCallback

log = logging.getLogger("mmr1.reliability")

MARKER = "mmr1_complete.json"
_CKPT = re.compile(r"^checkpoint-(\d+)$")
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
            "pytorch_model.bin.index.json", "adapter_model.safetensors", "adapter_model.bin")


class CheckpointError(RuntimeError):
    """No checkpoint that can be trusted where one was expected."""


@dataclass(frozen=True)
class Verdict:
    path: Path
    step: int
    ok: bool
    problem: str = ""  # names the offending file when not ok
    # A folder without marker is a save that never finished; one whose files no longer match its
    # marker was complete once and then damaged (worth keeping for a post-mortem).
    incomplete: bool = False


def checkpoint_dirs(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every ``checkpoint-N`` folder, oldest first."""
    out = []
    root = Path(run_dir)
    if not root.is_dir():
        return out
    for p in root.iterdir():
        m = _CKPT.match(p.name)
        if m and p.is_dir():
            out.append((int(m.group(1)), p))
    return sorted(out)


def _files(ckpt: Path) -> dict[str, int]:
    return {str(p.relative_to(ckpt)): p.stat().st_size for p in sorted(ckpt.rglob("*"))
            if p.is_file() and p.name != MARKER and not p.name.endswith(".tmp")}


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_marker(ckpt: str | Path, step: int, extra: dict | None = None, fsync: bool = True) -> Path:
    """Declare ``ckpt`` complete: fsync its files, then write the marker atomically (tmp + rename)."""
    ckpt = Path(ckpt)
    files = _files(ckpt)
    if fsync:  # a power loss must not leave a marker in front of data still in the page cache
        for rel in files:
            _fsync_file(ckpt / rel)
    body = {"step": step, "files": files, "written_at": time.time(), **(extra or {})}
    tmp = ckpt / (MARKER + ".tmp")
    with open(tmp, "w") as f:
        json.dump(body, f, indent=1, sort_keys=True)
        f.flush()
        if fsync:
            os.fsync(f.fileno())
    os.replace(tmp, ckpt / MARKER)
    if fsync:
        _fsync_file(ckpt)  # the rename itself (directory entry)
    return ckpt / MARKER


def read_marker(ckpt: str | Path) -> dict | None:
    try:
        return json.loads((Path(ckpt) / MARKER).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def verify(ckpt: str | Path, *, require_marker: bool = True) -> Verdict:
    """Is ``ckpt`` whole? Marker present and every listed file there with its recorded size.

    Without ``require_marker`` (an explicit ``resume=PATH`` to a folder written by another tool), the
    folder passes on the files Trainer needs to resume exactly, with a warning.
    """
    ckpt = Path(ckpt)
    m = _CKPT.match(ckpt.name)
    step = int(m.group(1)) if m else -1
    if not ckpt.is_dir():
        return Verdict(ckpt, step, False, f"{ckpt} is not a directory")
    marker = read_marker(ckpt)
    if marker is None:
        if (ckpt / MARKER).exists():
            return Verdict(ckpt, step, False, f"{ckpt / MARKER} is unreadable")
        if require_marker:
            return Verdict(ckpt, step, False, f"{ckpt / MARKER} is missing (the save never finished)", True)
        return _verify_legacy(ckpt, step)
    for rel, size in marker.get("files", {}).items():
        p = ckpt / rel
        try:
            actual = p.stat().st_size
        except OSError:  # gone, or set aside by rank 0 while another rank looked
            return Verdict(ckpt, step, False, f"{p} is missing")
        if actual != size:
            return Verdict(ckpt, step, False, f"{p} has {actual} bytes, {size} were written (truncated or altered)")
    return Verdict(ckpt, int(marker.get("step", step)), True)


def _verify_legacy(ckpt: Path, step: int) -> Verdict:
    if not (ckpt / "trainer_state.json").is_file():
        return Verdict(ckpt, step, False, f"{ckpt / 'trainer_state.json'} is missing (the step counter would restart)")
    if not any((ckpt / w).is_file() for w in _WEIGHTS) and not any(ckpt.glob("global_step*")):
        return Verdict(ckpt, step, False, f"{ckpt} holds no model weights ({', '.join(_WEIGHTS[:2])}, ...)")
    if not list(ckpt.glob("rng_state*.pth")):
        log.warning("checkpoint %s has no rng_state*.pth: sampling after resume will differ", ckpt)
    log.warning("checkpoint %s has no %s (not written by mmr1): resuming on its file list alone", ckpt, MARKER)
    return Verdict(ckpt, step, True)


def select_checkpoint(run_dir: str | Path, *, before_step: int | None = None) -> tuple[Path | None, list[Verdict]]:
    """Newest verified checkpoint (below ``before_step`` if given) and the rejected newer ones."""
    rejected = []
    for step, path in reversed(checkpoint_dirs(run_dir)):
        if before_step is not None and step >= before_step:
            continue
        v = verify(path)
        if v.ok:
            return path, rejected
        rejected.append(v)
    return None, rejected


def set_aside(path: Path, why: str) -> Path:
    """Rename ``checkpoint-N`` to ``checkpoint-N.<why>`` so neither resume nor rotation sees it again."""
    dest = path.with_name(f"{path.name}.{why}")
    n = 1
    while dest.exists():
        n += 1
        dest = path.with_name(f"{path.name}.{why}{n}")
    os.replace(path, dest)
    return dest


def clear_after(run_dir: str | Path, step: int, why: str) -> list[Path]:
    """Set aside every checkpoint newer than ``step``: Trainer would otherwise save into those folders,
    mixing new files with stale ones, and rotation would count them."""
    moved = []
    for s, path in checkpoint_dirs(run_dir):
        if s > step:
            moved.append(set_aside(path, why))
    return moved


def rotate(run_dir: str | Path, limit: int | None, *, keep_before: int | None = None) -> list[Path]:
    """Keep the ``limit`` newest complete checkpoints, plus the newest complete one below ``keep_before``
    (the rollback target while the guard watches a suspect streak). Incomplete folders older than the
    newest complete one are leftovers of crashed saves: removed."""
    if not limit or limit <= 0:
        return []
    dirs = checkpoint_dirs(run_dir)
    complete = [(s, p) for s, p in dirs if verify(p).ok]
    keep = {p for _, p in complete[-limit:]}
    if keep_before is not None:
        older = [p for s, p in complete if s < keep_before]
        if older:
            keep.add(older[-1])
    newest = complete[-1][0] if complete else -1
    removed = []
    for s, p in dirs:
        if p in keep or (p not in {q for _, q in complete} and s > newest):
            continue  # a folder newer than every complete one may still be being written by another rank
        (p / MARKER).unlink(missing_ok=True)  # marker first: a deletion cut short leaves an "unfinished" folder
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed


def _barrier() -> None:
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


class CheckpointCallback(TrainerCallback):
    """After Trainer's save: extra state (``save_extra``), then the marker, then mmr1's rotation.

    ``Trainer.save_total_limit`` must be off (``run_training`` moves it here); ``keep_before`` returns
    the guard's open streak start, whose predecessor checkpoint rotation must keep.
    """

    def __init__(self, save_total_limit: int | None, *, keep_before: Callable[[], int | None] = lambda: None,
                 save_extra: Callable[[Path], None] | None = None, fsync: bool = True):
        self.save_total_limit = save_total_limit
        self.keep_before = keep_before
        self.save_extra = save_extra
        self.fsync = fsync

    def on_save(self, args, state, control, **kwargs):
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if self.save_extra is not None:
            self.save_extra(ckpt)  # every rank: per-rank state files
        _barrier()  # every rank's files are written before rank 0 declares the folder complete
        if state.is_world_process_zero and ckpt.is_dir():
            write_marker(ckpt, state.global_step, fsync=self.fsync)
            for p in rotate(args.output_dir, self.save_total_limit, keep_before=self.keep_before()):
                log.info("checkpoint rotation (save_total_limit=%s): deleted %s", self.save_total_limit, p)
        _barrier()
