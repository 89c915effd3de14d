"""Child processes that never outlive the run: on success, on error, on Ctrl-C, on SIGTERM (scancel).

Each child starts in its own session (process group), so a terminal's Ctrl-C reaches only mmr1, which
then stops the children in order: SIGTERM to the group, a grace period, SIGKILL. torchrun puts every
rank in a session of its own, out of reach of a group signal; so the supervisor also remembers each
child's descendants while they run and kills any that are still alive at the end.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

import psutil

log = logging.getLogger("mmr1.launch")


class Terminated(KeyboardInterrupt):
    """mmr1 received SIGTERM/SIGHUP: unwind like Ctrl-C so that every child is stopped."""

    def __init__(self, signum: int):
        super().__init__(f"received signal {signal.Signals(signum).name}")
        self.signum = signum


class ChildExited(RuntimeError):
    """A process the run depends on (e.g. the vLLM server) exited while the trainers were running."""


class _Child:
    def __init__(self, name: str, proc: subprocess.Popen, log_file: IO | None):
        self.name, self.proc, self.log_file = name, proc, log_file
        self.known: dict[int, psutil.Process] = {}

    def remember_descendants(self) -> None:
        try:
            for p in psutil.Process(self.proc.pid).children(recursive=True):
                self.known.setdefault(p.pid, p)
        except psutil.Error:
            pass


class Supervisor:
    """``with Supervisor() as sup: sup.start(...); sup.wait(main)`` — everything started is stopped on exit."""

    def __init__(self, grace_s: float = 30.0, poll_s: float = 1.0):
        self.grace_s, self.poll_s = grace_s, poll_s
        self.children: list[_Child] = []
        self._old_handlers: dict[int, object] = {}

    def __enter__(self) -> Supervisor:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            try:
                self._old_handlers[sig] = signal.signal(sig, self._on_signal)
            except ValueError:  # not the main thread: the caller's own handling applies
                break
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # Pass on what mmr1 got: Ctrl-C as SIGINT (ranks may checkpoint on it; torchrun forwards it),
        # SIGTERM/SIGHUP as themselves, anything else (an error, a normal end) as SIGTERM.
        first = signal.SIGTERM
        if isinstance(exc, Terminated):
            first = signal.Signals(exc.signum)
        elif isinstance(exc, KeyboardInterrupt):
            first = signal.SIGINT
        try:
            self.stop_all(first)
        finally:
            for sig, handler in self._old_handlers.items():
                signal.signal(sig, handler)  # type: ignore[arg-type]

    @staticmethod
    def _on_signal(signum, frame):
        raise Terminated(signum)

    def start(self, name: str, cmd: Sequence[str], *, env: Mapping[str, str] | None = None,
              log_path: Path | None = None) -> subprocess.Popen:
        log_file = open(log_path, "ab") if log_path else None  # closed in stop_all
        log.info("starting %s: %s", name, " ".join(cmd))
        proc = subprocess.Popen(list(cmd), env=dict(env) if env is not None else None, start_new_session=True,
                                stdout=log_file, stderr=subprocess.STDOUT if log_file else None)
        self.children.append(_Child(name, proc, log_file))
        return proc

    def wait(self, main: subprocess.Popen) -> int:
        """Wait for ``main``; raise ChildExited if another child dies first (its clients would hang)."""
        while True:
            for child in self.children:
                child.remember_descendants()
            rc = main.poll()
            if rc is not None:
                return rc
            for child in self.children:
                if child.proc is not main and child.proc.poll() is not None:
                    raise ChildExited(f"{child.name} exited with code {child.proc.returncode} during the run")
            time.sleep(self.poll_s)

    def stop_all(self, first: int = signal.SIGTERM) -> None:
        # Last started first: the trainers go before the server they talk to.
        for child in reversed(self.children):
            self._stop(child, first)
        self.children.clear()

    def _stop(self, child: _Child, first: int) -> None:
        proc = child.proc
        child.remember_descendants()
        if proc.poll() is None:
            log.info("stopping %s (pid %d) with %s", child.name, proc.pid, signal.Signals(first).name)
            _signal_group(proc.pid, first)
            try:
                proc.wait(timeout=self.grace_s)
            except subprocess.TimeoutExpired:
                log.warning("%s did not exit within %.0f s: SIGKILL", child.name, self.grace_s)
        _signal_group(proc.pid, signal.SIGKILL)  # whatever is left of its group
        if proc.poll() is None:
            proc.wait()
        # Descendants in sessions of their own (torchrun's ranks): give them the same grace, then kill.
        alive = [p for p in child.known.values() if _alive(p)]
        for p in alive:
            _send(p, signal.SIGTERM)
        _, alive = psutil.wait_procs(alive, timeout=self.grace_s if alive else 0)
        for p in alive:
            log.warning("killing leftover process %d of %s", p.pid, child.name)
            _send(p, signal.SIGKILL)
        if child.log_file:
            child.log_file.close()


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE  # is_running checks pid reuse
    except psutil.Error:
        return False


def _send(p: psutil.Process, sig: int) -> None:
    try:
        p.send_signal(sig)
    except psutil.Error:
        pass


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
