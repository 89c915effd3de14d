"""Atomic checkpoints: a completeness marker written last, verified before any resume.

Trainer writes ``checkpoint-N/`` in place, file by file, and ``get_last_checkpoint`` picks the highest
N without looking inside: a crash while saving leaves a half checkpoint that auto-resume would load
(optimizer or RNG files missing are skipped with a log line only, a missing ``trainer_state.json``
restarts the step counter at 0). mmr1 writes ``mmr1_complete.json`` into the folder after every
other file is on disk (fsynced), listing each file with its size, the pattern torchtitan (DCP
``.metadata``) and verl (a tracker file written after the data) use. A folder without it, or whose
files no longer match it (truncated, missing, altered), is never resumed from.

Content hashes (marker field ``hashes``, mmr1.reliability.hashes): resume re-reads what
``MMR1_CHECKPOINT_VERIFY`` says (sizes | sample, the default | full; that module says what each detects).

Rotation checks sizes only (it runs after every save, over every kept checkpoint).

A save that runs out of disk (``guard_saves``, and the marker write) stops the run with a
``CheckpointError`` naming the folder and "no space left on device"; the folder never got a marker and
rank 0 deletes it (a folder left behind by another rank is deleted by the next ``resume=auto``); the
previous complete checkpoint is untouched (rotation only runs after a marker is written).

Rotation (``save_total_limit``) is done here too, not by Trainer: Trainer's counts half checkpoints
as real ones (and may delete the last good one to keep a broken one), and cannot know that the
collapse guard needs the newest checkpoint from before a suspect streak.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from mmr1.internals import wrap_checkpoint_save
from mmr1.reliability.hashes import hash_files, verify_content
from mmr1.tracking.run_dir import MIN_FREE_BYTES

log = logging.getLogger("mmr1.reliability")

MARKER = "mmr1_complete.json"
_CKPT = re.compile(r"^checkpoint-(\d+)$")
VERIFY_ENV = "MMR1_CHECKPOINT_VERIFY"
VERIFY_LEVELS = ("sizes", "sample", "full")
DEFAULT_VERIFY = "sample"
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
    out: list[tuple[int, Path]] = []
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


def verify_level(level: str | None = None) -> str:
    """``level``, else ``$MMR1_CHECKPOINT_VERIFY``, else ``sample``; the same on every rank (env is inherited)."""
    level = level or os.environ.get(VERIFY_ENV) or DEFAULT_VERIFY
    if level not in VERIFY_LEVELS:
        raise CheckpointError(f"{VERIFY_ENV}={level!r}: expected one of {', '.join(VERIFY_LEVELS)}")
    return level


# --- marker -----------------------------------------------------------------------------------------

def write_marker(ckpt: str | Path, step: int, extra: dict | None = None, fsync: bool = True,
                 hashes: bool = True) -> Path:
    """Declare ``ckpt`` complete: hash and fsync its files, then write the marker atomically (tmp + rename).

    Hashing reads the files Trainer has just written (page cache): see benchmarks/checkpoint_hash.py.
    """
    ckpt = Path(ckpt)
    files = _files(ckpt)
    body: dict[str, Any] = {"step": step, "files": files, "written_at": time.time()}
    if hashes:
        started = time.perf_counter()
        body["hashes"] = hash_files(ckpt, files)
        took = time.perf_counter() - started
        total = sum(files.values())
        log.info("%s: %s of %d file(s), %.1f MB, in %.2f s (%.0f MB/s)", ckpt.name, body["hashes"]["algorithm"],
                 len(files), total / 1e6, took, total / 1e6 / max(took, 1e-9))
    if fsync:  # a power loss must not leave a marker in front of data still in the page cache
        for rel in files:
            _fsync_file(ckpt / rel)
    body.update(extra or {})
    tmp = ckpt / (MARKER + ".tmp")
    try:
        with open(tmp, "w") as f:
            json.dump(body, f, indent=1, sort_keys=True)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, ckpt / MARKER)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a half marker never stays (and never takes disk space)
        raise
    if fsync:
        _fsync_file(ckpt)  # the rename itself (directory entry)
    return ckpt / MARKER


def read_marker(ckpt: str | Path) -> dict | None:
    try:
        return json.loads((Path(ckpt) / MARKER).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def verify(ckpt: str | Path, *, require_marker: bool = True, level: str | None = None) -> Verdict:
    """Is ``ckpt`` whole? Marker present, every listed file there with its recorded size, and (``level``
    sample or full, see the module docstring) its recorded content hashes.

    Without ``require_marker`` (an explicit ``resume=PATH`` to a folder written by another tool), the
    folder passes on the files Trainer needs to resume exactly, with a warning.
    """
    ckpt = Path(ckpt)
    level = verify_level(level)
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
    files = marker.get("files", {})
    for rel, size in files.items():
        p = ckpt / rel
        try:
            actual = p.stat().st_size
        except OSError:  # gone, or set aside by rank 0 while another rank looked
            return Verdict(ckpt, step, False, f"{p} is missing")
        if actual != size:
            return Verdict(ckpt, step, False, f"{p} has {actual} bytes, {size} were written (truncated or altered)")
    step = int(marker.get("step", step))
    if level != "sizes":
        problem = verify_content(ckpt, files, marker.get("hashes"), level)
        if problem:
            return Verdict(ckpt, step, False, problem)
    return Verdict(ckpt, step, True)


def _verify_legacy(ckpt: Path, step: int) -> Verdict:
    if not (ckpt / "trainer_state.json").is_file():
        return Verdict(ckpt, step, False, f"{ckpt / 'trainer_state.json'} is missing (the step counter would restart)")
    if not any((ckpt / w).is_file() for w in _WEIGHTS) and not any(ckpt.glob("global_step*")):
        return Verdict(ckpt, step, False, f"{ckpt} holds no model weights ({', '.join(_WEIGHTS[:2])}, ...)")
    if not list(ckpt.glob("rng_state*.pth")):
        log.warning("checkpoint %s has no rng_state*.pth: sampling after resume will differ", ckpt)
    log.warning("checkpoint %s has no %s (not written by mmr1): resuming on its file list alone", ckpt, MARKER)
    return Verdict(ckpt, step, True)


def select_checkpoint(run_dir: str | Path, *, before_step: int | None = None,
                      level: str | None = None) -> tuple[Path | None, list[Verdict]]:
    """Newest verified checkpoint (below ``before_step`` if given) and the rejected newer ones."""
    rejected: list[Verdict] = []
    for step, path in reversed(checkpoint_dirs(run_dir)):
        if before_step is not None and step >= before_step:
            continue
        v = verify(path, level=level)
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
    complete = [(s, p) for s, p in dirs if verify(p, level="sizes").ok]  # no re-reads after every save
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


# --- a save that runs out of disk -------------------------------------------------------------------

_NO_SPACE = ("no space left on device", "os error 28", "disk quota exceeded", "errno 28")


def _is_disk_full(err: BaseException, ckpt: Path) -> bool:
    """ENOSPC/EDQUOT anywhere in the exception chain or message; or a writer that lost the errno (torch.save:
    "unexpected pos 576 vs 534") while the checkpoint's filesystem is found (nearly) full right after."""
    seen: set[int] = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(s in str(e).lower() for s in _NO_SPACE):
            return True
        e = e.__cause__ or e.__context__
    if not isinstance(err, (OSError, RuntimeError)):
        return False
    return _free_bytes(ckpt) < MIN_FREE_BYTES


def _free_bytes(path: Path) -> int:
    for p in (path, *path.parents):
        try:
            return shutil.disk_usage(p).free
        except OSError:
            continue
    return 1 << 62  # unknown: not reported as full


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def disk_full_error(ckpt: Path, err: BaseException, *, main: bool = True) -> CheckpointError:
    """The error a run stops with when a save runs out of disk: the folder, the space, the way back.

    Rank 0 (``main``) deletes the unfinished folder first: it can never be resumed from (no marker), and the
    space it holds is what the failure record (run_info.json) and the other jobs on that disk need.
    """
    from mmr1.reliability.resume import resume_command  # resume imports this module

    run_dir = ckpt.parent
    free = _free_bytes(ckpt)
    what = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    fate = f"{ckpt.name} is not marked complete and will never be resumed from"
    if main and ckpt.is_dir():
        held = _size(ckpt)
        shutil.rmtree(ckpt, ignore_errors=True)
        if not ckpt.exists():
            fate = f"The unfinished {ckpt.name} was deleted ({held / 2**20:.0f} MiB)"
    previous, _ = select_checkpoint(run_dir, level="sizes")
    back = (f"the newest complete checkpoint, {previous} ({_size(previous) / 2**30:.2f} GiB), is intact: free at "
            f"least that much space, then resume from it with: {resume_command(run_dir)}"
            if previous else "there is no earlier complete checkpoint to resume from")
    return CheckpointError(f"no space left on device while saving {ckpt} ({free / 2**20:.0f} MiB free in {run_dir} "
                           f"when it failed; the writer said: {what}). {fate}; {back}")


def guard_saves(trainer: Any) -> None:
    """Wrap the Trainer's checkpoint save: a stale marker in the target folder goes first (the files are about
    to be rewritten), and a save that runs out of disk raises ``disk_full_error`` instead of the writer's
    own message (torch.save's names neither the disk nor the folder)."""

    def wrap(original: Any) -> Any:
        def save(*args: Any, **kwargs: Any) -> Any:
            ckpt = Path(trainer.args.output_dir) / f"checkpoint-{trainer.state.global_step}"
            if trainer.is_world_process_zero():
                (ckpt / MARKER).unlink(missing_ok=True)
            try:
                return original(*args, **kwargs)
            except Exception as err:
                if _is_disk_full(err, ckpt):
                    raise disk_full_error(ckpt, err, main=trainer.is_world_process_zero()) from err
                log.error("saving %s failed: %s", ckpt, err)
                raise

        return save

    wrap_checkpoint_save(trainer, wrap)


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
        try:
            if self.save_extra is not None:
                self.save_extra(ckpt)  # every rank: per-rank state files
            _barrier()  # every rank's files are written before rank 0 declares the folder complete
            if state.is_world_process_zero and ckpt.is_dir():
                write_marker(ckpt, state.global_step, fsync=self.fsync)
        except Exception as err:
            if _is_disk_full(err, ckpt):
                raise disk_full_error(ckpt, err, main=state.is_world_process_zero) from err
            raise
        if state.is_world_process_zero and ckpt.is_dir():
            for p in rotate(args.output_dir, self.save_total_limit, keep_before=self.keep_before()):
                log.info("checkpoint rotation (save_total_limit=%s): deleted %s", self.save_total_limit, p)
        _barrier()


def main(argv: list[str] | None = None) -> int:
    """``python -m mmr1.reliability.checkpoints CHECKPOINT... [--level full]``: verify, print, exit 1 if any fails."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m mmr1.reliability.checkpoints", description=main.__doc__)
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--level", choices=VERIFY_LEVELS, default="full")
    ns = parser.parse_args(argv)
    bad = 0
    for ckpt in ns.checkpoints:
        v = verify(ckpt, level=ns.level)
        bad += not v.ok
        print(f"{ckpt}: {'ok' if v.ok else 'BAD: ' + v.problem} ({ns.level})")
    return 1 if bad else 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    raise SystemExit(main())
