"""A process pool with a hard wall-clock budget per item and per batch; a hung worker is killed and replaced.

Why not `concurrent.futures.ProcessPoolExecutor`: a running future cannot be cancelled, and killing
one of its workers breaks the whole pool. Why `subprocess` + pipes rather than `multiprocessing`:
workers start with exec (safe next to CUDA and threads, which fork is not), and they do not re-run
the training script's `__main__`, as spawn would. The deadlines are kept by the calling thread
with `multiprocessing.connection.wait`, so no signal is involved: any thread, any rank.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

_BOOT = "from mmr1.rewards.worker import main; main()"
_SRC = str(Path(__file__).resolve().parents[2])  # the folder holding the `mmr1` package
_POOLS: weakref.WeakSet[WorkerPool] = weakref.WeakSet()


class SandboxError(RuntimeError):
    """The workers cannot run at all (e.g. a plugin that imports in the trainer but not in a worker)."""


@dataclass
class Outcome:
    status: str  # "ok" | "error" | "timeout"
    value: Any = None
    error: str = ""
    seconds: float = 0.0


class _Worker:
    def __init__(self, proc: subprocess.Popen, to_worker: Connection, from_worker: Connection):
        self.proc, self.to_worker, self.from_worker = proc, to_worker, from_worker
        self.ready = False
        self.started = time.monotonic()
        self.chunk: deque[int] = deque()  # item indices sent and not answered yet, in the worker's order
        self.since = 0.0  # when the worker started on the head of its chunk (sent, or previous answer)

    def deadline(self, timeout_s: float) -> float:
        return self.since + timeout_s

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.wait(timeout=5)  # reap it: no zombie left behind
        except (OSError, subprocess.TimeoutExpired):
            pass
        for conn in (self.to_worker, self.from_worker):
            try:
                conn.close()
            except OSError:
                pass


def _kill_all(workers: list[_Worker]) -> None:
    for worker in workers:
        worker.kill()
    workers.clear()


class WorkerPool:
    """`num_workers` processes that run registered rewards by name, one item at a time each.

    Workers start in the background (`start()`), import math-verify and the plugins, then say
    ready; items only go to ready workers, so start-up time never eats into an item's budget.
    """

    # A worker with at most this many unanswered items gets the next chunk (see _dispatch).
    _inflight_room = 8

    def __init__(self, num_workers: int = 2, plugins: Iterable[str] = (), start_timeout_s: float = 120.0):
        self.num_workers = int(num_workers)
        self.plugins = [str(p) for p in plugins]
        self.start_timeout_s = start_timeout_s
        self.restarts = 0  # workers replaced after a timeout, crash or batch deadline
        self.closed = False
        self._lock = threading.Lock()
        self._new_process_state()
        _POOLS.add(self)

    def _new_process_state(self) -> None:
        self._pid = os.getpid()
        self._workers: list[_Worker] = []
        self._start_failures = 0
        # Popen from one long-lived thread: a worker's parent-death signal (PR_SET_PDEATHSIG) fires
        # when the *thread* that started it ends, and callers' threads may be short-lived.
        self._spawner = ThreadPoolExecutor(1, thread_name_prefix="mmr1-reward-spawn")
        self._finalizer = weakref.finalize(self, _kill_all, self._workers)  # also runs at exit

    def start(self) -> WorkerPool:
        with self._lock:
            self._fill()
        return self

    def wait_ready(self, timeout_s: float = 120.0) -> bool:
        """Block until every worker has started (benchmarks and tests; training never needs to)."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            self._fill()
            while not all(w.ready for w in self._workers) and time.monotonic() < deadline:
                starting = {w.from_worker: w for w in self._workers if not w.ready}
                for conn in wait(list(starting), timeout=max(0.0, deadline - time.monotonic())):
                    self._receive(starting[conn], [], deque())
            return all(w.ready for w in self._workers)

    def pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers]

    def close(self) -> None:
        """Kill the workers (they hold no state worth a graceful stop). Safe to call twice."""
        self.closed = True
        self._finalizer()
        self._spawner.shutdown(wait=False)

    def _fill(self) -> None:
        if self.closed:
            raise SandboxError(
                "this reward pool was closed (close() or mmr1.rewards.shutdown()); build a new one"
            )
        if os.getpid() != self._pid:
            # A forked child (e.g. a data-loader worker) inherited our handles: those workers are
            # not its children. Drop the handles without killing, start its own pool.
            self._finalizer.detach()
            for w in self._workers:
                for conn in (w.to_worker, w.from_worker):
                    conn.close()
            self._new_process_state()
        while len(self._workers) < self.num_workers:
            self._workers.append(self._spawn())

    def _spawn(self) -> _Worker:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_SRC, env.get("PYTHONPATH")) if p)
        # One thread per worker: the pool is the parallelism; BLAS threads would only oversubscribe.
        env.setdefault("OMP_NUM_THREADS", "1")
        argv = [
            sys.executable,
            "-c",
            _BOOT,
            str(to_child_r),
            str(from_child_w),
            str(os.getpid()),
            json.dumps(self.plugins),
        ]
        try:
            proc = self._spawner.submit(
                subprocess.Popen, argv, pass_fds=(to_child_r, from_child_w), env=env, stdin=subprocess.DEVNULL
            ).result()
        except BaseException:
            os.close(to_child_w)
            os.close(from_child_r)
            raise
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        return _Worker(proc, Connection(to_child_w, readable=False), Connection(from_child_r, writable=False))

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        self._workers[self._workers.index(worker)] = self._spawn()
        self.restarts += 1

    def run(self, tasks: list[tuple[str, bytes]], timeout_s: float, batch_timeout_s: float) -> list[Outcome]:
        """Score `(reward name, pickled kwargs)` items; every item gets an Outcome within the budgets.

        Items go out in chunks (fewer round trips, a worker never waits for the trainer between
        items) and come back one answer each; an item's `timeout_s` runs from the answer before it.
        """
        results: list[Outcome | None] = [None] * len(tasks)
        pending = deque(range(len(tasks)))
        batch_deadline = None
        with self._lock:
            self._fill()
            while True:
                now = time.monotonic()
                if batch_deadline is None and any(w.ready for w in self._workers):
                    # The batch budget starts once a worker can take items: waiting for workers
                    # that an earlier call had to replace is the sandbox's cost, not this reward's
                    # (it is bounded by start_timeout_s). Replacements within this call do count.
                    batch_deadline = now + batch_timeout_s
                self._dispatch(tasks, pending, now)
                busy = [w for w in self._workers if w.chunk]
                if not pending and not busy:
                    break
                if batch_deadline is not None and now >= batch_deadline:
                    self._expire_batch(results, pending, busy, now, batch_timeout_s)
                    break
                starting = [w.started + self.start_timeout_s for w in self._workers if not w.ready]
                wake = min(
                    [w.deadline(timeout_s) for w in busy]
                    + starting
                    + ([batch_deadline] if batch_deadline is not None else [])
                )
                by_conn = {w.from_worker: w for w in self._workers if w.chunk or not w.ready}
                for conn in wait(list(by_conn), timeout=max(0.0, wake - now)):
                    self._receive(by_conn[conn], results, pending)
                self._expire_items(results, pending, time.monotonic(), timeout_s)
        return results  # type: ignore[return-value]

    def _dispatch(self, tasks, pending, now) -> None:
        # Up to two chunks in flight per worker: the next one is already in the pipe when a worker
        # finishes, so it never idles for a round trip to the trainer (which cost about as much as
        # scoring a chunk of typical items). Timeouts are unaffected: an item's clock starts at the
        # answer before it, and a killed worker's unstarted items go back to the queue.
        idle = [w for w in self._workers if w.ready and len(w.chunk) <= self._inflight_room]
        for worker in idle:
            if not pending:
                return
            # Guided self-scheduling: big chunks while much is left, single items at the end so
            # one slow item does not leave the other workers idle.
            size = min(8, max(1, len(pending) // (2 * len(self._workers))))
            chunk = [pending.popleft() for _ in range(min(size, len(pending)))]
            try:
                worker.to_worker.send([(i, tasks[i][0], tasks[i][1]) for i in chunk])
            except OSError:  # it died while idle: put the items back, replace the worker
                pending.extendleft(reversed(chunk))
                self._replace(worker)
                continue
            if not worker.chunk:  # else the head item's clock keeps running from its predecessor's answer
                worker.since = now
            worker.chunk.extend(chunk)

    def _requeue(self, worker: _Worker, pending: deque) -> None:
        # Items the worker had not started yet go back to the front, in order, for another worker.
        pending.extendleft(reversed(worker.chunk))
        worker.chunk.clear()

    def _receive(self, worker: _Worker, results: list, pending: deque) -> None:
        while True:
            try:
                msg = worker.from_worker.recv()
            except (EOFError, OSError):
                code = worker.proc.poll()
                if worker.chunk:
                    died = f"reward worker died (exit code {code})"
                    results[worker.chunk.popleft()] = Outcome(
                        "error", error=died, seconds=time.monotonic() - worker.since
                    )
                    self._requeue(worker, pending)
                elif not worker.ready:
                    self._start_failures += 1
                    if self._start_failures >= 3:
                        raise SandboxError(
                            f"reward workers keep dying before they are ready (exit code {code})"
                        ) from None
                self._replace(worker)
                return
            if msg[0] == "ready":
                worker.ready, self._start_failures = True, 0
            elif msg[0] == "fatal":
                self.close()
                raise SandboxError(f"a reward worker failed to start:\n{msg[1]}")
            else:  # ("result", index, status, value, error)
                _, index, status, value, error = msg
                now = time.monotonic()
                if worker.chunk and worker.chunk[0] == index:
                    worker.chunk.popleft()
                    results[index] = Outcome(status, value, error, now - worker.since)
                    worker.since = now
            if not worker.from_worker.poll():  # drain what is there, then go back to waiting
                return

    def _expire_items(self, results: list, pending: deque, now: float, timeout_s: float) -> None:
        for worker in list(self._workers):
            if worker.chunk and now >= worker.deadline(timeout_s):
                results[worker.chunk.popleft()] = Outcome(
                    "timeout",
                    error=f"no result within reward.timeout_s={timeout_s}",
                    seconds=now - worker.since,
                )
                self._requeue(worker, pending)
                self._replace(worker)
            elif not worker.ready and now - worker.started > self.start_timeout_s:
                raise SandboxError(f"a reward worker did not start within {self.start_timeout_s} s")

    def _expire_batch(self, results, pending, busy, now, batch_timeout_s) -> None:
        error = f"reward.batch_timeout_s={batch_timeout_s} ran out before this item was scored"
        for worker in busy:
            results[worker.chunk.popleft()] = Outcome("timeout", error=error, seconds=now - worker.since)
            self._requeue(worker, pending)
            self._replace(worker)
        while pending:
            results[pending.popleft()] = Outcome("timeout", error=error)


def shutdown() -> None:
    """Kill every live pool's workers (also done at interpreter exit)."""
    for pool in list(_POOLS):
        pool.close()
