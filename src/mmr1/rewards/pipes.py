"""The trainer's end of a sandbox worker's pipes: framed messages, non-blocking sends, `poll`.

A worker stuck in a reward stops reading its pipe; once 64 KiB of queued items fill it, a blocking
send would never return and no deadline would ever be checked again. So messages are
framed as `multiprocessing.connection` frames them (the worker reads them with `Connection.recv`),
kept in a per-worker outbox, and written as far as the pipe takes them whenever `poll` says it has
room; the worker's answers are read the same way, as far as they have arrived.
"""

from __future__ import annotations

import math
import os
import pickle
import select
import struct
import subprocess
import time
from collections import deque
from typing import Any

_READ_MAX = 1 << 20  # bytes read from one worker per wake-up; the rest waits for the next poll


def frame(obj: Any) -> memoryview:
    """`obj` as `Connection.send` puts it on the wire: a big-endian length, then the pickle."""
    payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    n = len(payload)
    header = struct.pack("!i", n) if n <= 0x7FFFFFFF else struct.pack("!i", -1) + struct.pack("!Q", n)
    return memoryview(header + payload)


def unframe(buf: bytearray) -> list:
    """The complete messages at the front of `buf` (removed from it); a partial one stays."""
    messages, at = [], 0
    while len(buf) - at >= 4:
        (n,) = struct.unpack_from("!i", buf, at)
        start = at + 4
        if n == -1:
            if len(buf) - start < 8:
                break
            (n,) = struct.unpack_from("!Q", buf, start)
            start += 8
        if len(buf) - start < n:
            break
        messages.append(pickle.loads(buf[start : start + n]))
        at = start + n
    del buf[:at]
    return messages


class WorkerPipe:
    def __init__(self, proc: subprocess.Popen, to_fd: int, from_fd: int):
        self.proc, self.to_fd, self.from_fd = proc, to_fd, from_fd
        # Non-blocking on the trainer's side only (the worker's ends are other open files).
        os.set_blocking(to_fd, False)
        os.set_blocking(from_fd, False)
        self.outbox = memoryview(b"")  # the unsent rest of the last item sent
        self.written = 0  # bytes written to it, all items
        self.inbox = bytearray()  # answers read, the last one maybe partial
        self.broken = False  # a write failed (it exited) or its answers were garbled: treated as dead
        self.ready = False
        self.started = time.monotonic()
        self.sent: deque[int] = deque()  # item indices sent and not answered yet, in the worker's order
        self.since = 0.0  # when the worker started on its oldest unanswered item (sent, or previous answer)

    def deadline(self, timeout_s: float) -> float:
        return self.since + timeout_s

    def flush(self) -> bool:
        """Write what the pipe takes now, never waiting; False if the worker's end is gone."""
        while self.outbox:
            try:
                n = os.write(self.to_fd, self.outbox)
            except BlockingIOError:  # full: poll says when it has room again
                return True
            except OSError:  # EPIPE: the worker exited; EBADF: closed
                self.outbox, self.broken = memoryview(b""), True
                return False
            self.outbox = self.outbox[n:]
            self.written += n
        return True

    def read(self) -> tuple[list, bool]:
        """The messages that have arrived, never waiting; and True once the worker's end is closed."""
        got = 0
        while got < _READ_MAX:
            try:
                data = os.read(self.from_fd, 1 << 16)
            except BlockingIOError:
                break
            except OSError:
                return self._messages(), True
            if not data:
                return self._messages(), True
            self.inbox += data
            got += len(data)
        return self._messages(), False

    def _messages(self) -> list:
        try:
            return unframe(self.inbox)
        except Exception:  # noqa: BLE001 - a garbled stream: the worker is killed like a dead one
            self.inbox.clear()
            self.broken = True
            return []

    def close_fds(self) -> None:
        for fd in (self.to_fd, self.from_fd):
            try:
                os.close(fd)
            except OSError:
                pass
        self.to_fd = self.from_fd = -1

    def kill(self) -> None:
        try:
            self.proc.kill()  # SIGKILL: a reward blocking signals or stuck in C code cannot refuse it
            self.proc.wait(timeout=5)  # reap it: no zombie left behind
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.close_fds()


def poll_pipes(readers: list[WorkerPipe], writers: list[WorkerPipe], timeout_s: float) -> list[tuple[WorkerPipe, bool]]:
    """Wait at most `timeout_s` for answers (or an end of file) from `readers` or room in the pipes of
    `writers`; returns (worker, True if its pipe has room). `poll`, not `select`: a trainer can hold
    more than 1024 file descriptors."""
    poller, by_fd = select.poll(), {}
    for worker in readers:
        if worker.from_fd >= 0:
            poller.register(worker.from_fd, select.POLLIN)
            by_fd[worker.from_fd] = (worker, False)
    for worker in writers:
        if worker.to_fd >= 0:
            poller.register(worker.to_fd, select.POLLOUT)
            by_fd[worker.to_fd] = (worker, True)
    ms = max(0, math.ceil(timeout_s * 1000))
    return [by_fd[fd] for fd, _ in poller.poll(ms) if fd in by_fd]


def kill_all(workers: list[WorkerPipe]) -> None:
    for worker in workers:
        worker.kill()
    workers.clear()
