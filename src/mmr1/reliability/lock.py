"""One run per run directory: an exclusive lock held for the life of a run.

``hold_run_dir(cfg)`` takes ``<run_dir>/.mmr1.lock`` (``fcntl.flock``, non-blocking) in the process
that launches the run and keeps it until the run ends; a second run into the same directory fails at
once with ``RunDirLocked``, naming the directory, the holder's PID, host and start time, and what to do.

- The ranks mmr1 starts itself (``MMR1_LAUNCHED=1``) never lock: their launching process holds the lock
  for all of them. Ranks started by the user's own ``torchrun`` / ``accelerate launch`` have no mmr1
  parent, so global rank 0 holds it for them.
- Node N > 0 of a multi-node run locks ``.mmr1.node<N>.lock``: each node's launcher shares the directory
  with the other nodes of its run, and clashes only with a second launcher for the same node.
- Dry runs lock too: they write config.yaml, grpo_args.json and launch.json into the directory, which
  would overwrite a live run's files.
- A stale lock (its process died: the kernel drops a flock with its holder, even on ``kill -9``) is
  simply taken, with a warning naming the old holder. On a clean exit the holder info is cleared, so
  the file left behind (empty) means nothing.

Caveat: on NFS, flock is cluster-wide on Linux >= 2.6.12 (emulated with POSIX locks), but local to the
host on some other systems / mount options (``local_lock=flock``): there, two hosts are not kept apart.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shlex
import socket
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmr1.launch.layout import LAUNCHED_ENV, in_launched_rank
from mmr1.tracking.ranks import is_main_process
from mmr1.tracking.secrets import redact

log = logging.getLogger("mmr1.reliability.lock")
LOCK_FILE = ".mmr1.lock"


class RunDirLocked(RuntimeError):
    """Another live run holds this run directory."""

    def __init__(self, run_dir: Path, holder: dict[str, Any], lock_path: Path):
        self.run_dir, self.holder, self.lock_path = run_dir, holder, lock_path
        pid, host = holder.get("pid", "?"), holder.get("host", "?")
        started = holder.get("started", "an unknown time")
        cmd = holder.get("command")
        kill = f"kill {pid}" + ("" if host == socket.gethostname() else f" on {host}")
        super().__init__(
            f"run directory {run_dir} is in use by another run: pid {pid} on host {host}, started {started}"
            + (f" ({cmd})" if cmd else "") + ".\n"
            f"Two runs in one directory would write every step twice and overwrite each other's checkpoints. "
            f"Either wait for that run to finish, stop it ({kill}; run the same command again afterwards and "
            f"resume=auto continues from its last checkpoint), or pick another directory: "
            f"hydra.run.dir=<new path>. (Lock file: {lock_path})")


def lock_name(node_rank: int = 0) -> str:
    return LOCK_FILE if node_rank == 0 else f".mmr1.node{node_rank}.lock"


def _read_holder(fd: int) -> dict[str, Any]:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = b""
    while chunk := os.read(fd, 65536):
        raw += chunk
    if not raw.strip():
        return {}
    try:
        info = json.loads(raw)
    except ValueError:
        return {"raw": raw[:200].decode(errors="replace")}
    return info if isinstance(info, dict) else {}


def _holder_info() -> dict[str, Any]:
    now = time.time()
    return {"pid": os.getpid(), "host": socket.gethostname(), "started_unix": round(now, 3),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(now)),
            # A secret override must not land in the lock file either.
            "command": redact(shlex.join([Path(sys.executable).name, *sys.argv]))}


class RunDirLock:
    """An exclusive, non-blocking ``flock`` on ``<run_dir>/<name>``; a context manager.

    ``acquire()`` raises ``RunDirLocked`` when another process holds it (a second ``acquire`` in the same
    process on an already held lock is a no-op)."""

    def __init__(self, run_dir: str | Path, name: str = LOCK_FILE):
        self.run_dir = Path(run_dir).resolve()
        self.path = self.run_dir / name
        self._fd: int | None = None
        self.took_over: dict[str, Any] | None = None  # the stale holder's info, when there was one

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunDirLock:
        if self._fd is not None:
            return self
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by children (PEP 446)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
            holder = self._wait_for_holder_info(fd)
            os.close(fd)
            raise RunDirLocked(self.run_dir, holder, self.path) from None
        try:
            old = _read_holder(fd)
            if old:
                # The lock was free, yet the file names a holder: that process died without releasing it.
                self.took_over = old
                log.warning("taking over the stale lock of pid %s on host %s (started %s) on run directory %s: "
                            "that run is gone (it ended without releasing the lock)", old.get("pid", "?"),
                            old.get("host", "?"), old.get("started", "?"), self.run_dir)
            data = (json.dumps(_holder_info(), sort_keys=True) + "\n").encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)  # closing drops the lock too
            raise
        self._fd = fd
        return self

    @staticmethod
    def _wait_for_holder_info(fd: int, timeout_s: float = 2.0) -> dict[str, Any]:
        # The holder writes its info right after taking the lock: a refusal in between would read an
        # empty (or a previous holder's) file. Wait a moment for the live holder's own record.
        deadline = time.monotonic() + timeout_s
        while True:
            info = _read_holder(fd)
            if info or time.monotonic() > deadline:
                return info
            time.sleep(0.05)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)  # a clean end: the next run finds no holder to call stale
        except OSError:
            pass
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> RunDirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:  # pragma: no cover - a forgotten lock still goes with its object
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass


class NoLock:
    """What a rank gets: its launching process holds the run directory."""

    held = False

    def acquire(self) -> NoLock:
        return self

    def release(self) -> None:
        pass

    def __enter__(self) -> NoLock:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def _node_rank(cfg: Any, env: Mapping[str, str]) -> int:
    """The node this launcher runs for: launcher.node_rank, else NODE_RANK, else the SLURM job's node
    (the same order as mmr1.launch.layout, without resolving and checking the whole layout)."""
    value = cfg.launcher.node_rank if "launcher" in cfg else None
    if value is None:
        value = env.get("NODE_RANK") or (env.get("SLURM_NODEID") if env.get("SUBMITIT_EXECUTOR") == "slurm" else None)
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0  # a bad NODE_RANK is the layout's to report


def hold_run_dir(cfg: Any, env: Mapping[str, str] | None = None) -> RunDirLock | NoLock:
    """Take the run directory's lock for this run (acquired on return; ``release()`` or ``with`` ends it).

    Raises ``RunDirLocked`` when another live run holds it. A rank mmr1 started gets a ``NoLock``."""
    env = os.environ if env is None else env
    if env.get(LAUNCHED_ENV) == "1":
        return NoLock()  # started by mmr1's launcher, which holds the lock for every rank
    if in_launched_rank(env):  # the user's own torchrun / accelerate launch: rank 0 holds it for all
        return RunDirLock(cfg.run_dir).acquire() if is_main_process(env) else NoLock()
    return RunDirLock(cfg.run_dir, lock_name(_node_rank(cfg, env))).acquire()
