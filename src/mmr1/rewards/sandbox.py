"""A process pool with a hard wall-clock budget per item and per batch; a hung worker is killed and replaced.

Why not `concurrent.futures.ProcessPoolExecutor`: a running future cannot be cancelled, and killing
one of its workers breaks the whole pool. Why `subprocess` + pipes rather than `multiprocessing`:
workers start with exec (safe next to CUDA and threads, which fork is not), and they do not re-run
the training script's `__main__`, as spawn would. The deadlines are kept by the calling thread
with `poll`, so no signal is involved: any thread, any rank.

No wait is unbounded, sends included: the trainer's ends of the pipes are non-blocking
(mmr1.rewards.pipes says how).
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
from pathlib import Path
from typing import Any

from mmr1.rewards.pipes import WorkerPipe, frame, kill_all, poll_pipes

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


class WorkerPool:
    """`num_workers` processes that run registered rewards by name, one item at a time each.

    Workers start in the background (`start()`), import math-verify and the plugins, then say
    ready; items only go to ready workers, so start-up time never eats into an item's budget.
    """

    # Items sent to a worker and not answered yet, at most (see _dispatch).
    _in_flight = 2

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
        self._workers: list[WorkerPipe] = []
        self._start_failures = 0
        # Popen from one long-lived thread: a worker's parent-death signal (PR_SET_PDEATHSIG) fires
        # when the *thread* that started it ends, and callers' threads may be short-lived.
        self._spawner = ThreadPoolExecutor(1, thread_name_prefix="mmr1-reward-spawn")
        self._finalizer = weakref.finalize(self, kill_all, self._workers)  # also runs at exit

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
                starting = [w for w in self._workers if not w.ready]
                for worker, _ in poll_pipes(starting, [], deadline - time.monotonic()):
                    self._receive(worker, [], deque())
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
                w.close_fds()
            self._new_process_state()
        while len(self._workers) < self.num_workers:
            self._workers.append(self._spawn())

    def _spawn(self) -> WorkerPipe:
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
        return WorkerPipe(proc, to_child_w, from_child_r)

    def _replace(self, worker: WorkerPipe) -> None:
        worker.kill()
        self._workers[self._workers.index(worker)] = self._spawn()
        self.restarts += 1

    def run(self, tasks: list[tuple[str, bytes]], timeout_s: float, batch_timeout_s: float) -> list[Outcome]:
        """Score `(reward name, pickled kwargs)` items; every item gets an Outcome within the budgets.

        Items go out one by one, two in flight per worker (a worker never waits for the trainer
        between items), and come back one answer each; an item's `timeout_s` runs from the answer before it.
        Every wait here ends by the nearest deadline, so a call returns within `batch_timeout_s`
        (plus start-up and kill time) whatever a reward does. An exception from inside the call
        (a signal handler's KeyboardInterrupt, SandboxError) kills the workers that still hold its
        items, so no stale answer can reach a later call.
        """
        results: list[Outcome | None] = [None] * len(tasks)
        pending = deque(range(len(tasks)))
        batch_deadline = None
        with self._lock:
            try:
                self._fill()
                while True:
                    now = time.monotonic()
                    if batch_deadline is None and any(w.ready for w in self._workers):
                        # The batch budget starts once a worker can take items: waiting for workers
                        # that an earlier call had to replace is the sandbox's cost, not this reward's
                        # (it is bounded by start_timeout_s). Replacements within this call do count.
                        batch_deadline = now + batch_timeout_s
                    self._dispatch(tasks, results, pending, now)
                    busy = [w for w in self._workers if w.sent]
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
                    readers = [w for w in self._workers if w.sent or not w.ready]
                    writers = [w for w in self._workers if w.outbox]
                    for worker, writable in poll_pipes(readers, writers, wake - now):
                        if worker not in self._workers:  # replaced earlier in this round
                            continue
                        if writable:
                            if not worker.flush():
                                self._receive(worker, results, pending)
                        else:
                            self._receive(worker, results, pending)
                    self._expire_items(results, pending, time.monotonic(), timeout_s)
            except BaseException:
                self._abandon()
                raise
        for i, out in enumerate(results):
            if out is None:  # not expected; an Outcome for every item is the contract callers rely on
                results[i] = Outcome("error", error="the reward sandbox lost this item (a bug: please report it)")
        return results  # type: ignore[return-value]

    def _abandon(self) -> None:
        # Workers holding an interrupted call's items: their answers would belong to no call. Killed
        # (not replaced: an interrupted run should stop quickly); the next call refills the pool.
        stale = [w for w in self._workers if w.sent or w.outbox]
        for worker in stale:
            worker.kill()
        self._workers[:] = [w for w in self._workers if w not in stale]  # in place: the finalizer holds it

    def _dispatch(self, tasks, results, pending, now) -> None:
        # One item per send, up to two in flight per worker: the next item is already in the pipe when a
        # worker answers, so it never idles for a round trip to the trainer. Timeouts are unaffected: an
        # item's clock starts at the answer before it, and a killed worker's unstarted item goes back to
        # the queue. A worker gets an item only once the previous one is all in its pipe: a stuck worker
        # holds at most one unsent item, and its head item's deadline (running all along) gets it killed.
        for worker in list(self._workers):
            if not pending:
                return
            if not worker.ready or worker.broken or worker.outbox or len(worker.sent) >= self._in_flight:
                continue
            idle = not worker.sent
            if idle and worker.proc.poll() is not None:  # it died while idle: nothing of this call lost
                self._replace(worker)
                continue
            index = pending.popleft()
            worker.outbox = frame([(index, tasks[index][0], tasks[index][1])])
            if idle:  # else the head item's clock keeps running from its predecessor's answer
                worker.since = now
            worker.sent.append(index)
            written = worker.written
            if worker.flush():
                continue
            if idle and worker.written == written:  # it was gone before taking any of it: no charge
                self._requeue(worker, pending)
                self._replace(worker)
            else:
                self._receive(worker, results, pending)

    def _requeue(self, worker: WorkerPipe, pending: deque) -> None:
        # Items the worker had not started yet go back to the front, in order, for another worker.
        pending.extendleft(reversed(worker.sent))
        worker.sent.clear()

    def _receive(self, worker: WorkerPipe, results: list, pending: deque) -> None:
        messages, eof = worker.read()
        for msg in messages:
            if msg[0] == "ready":
                worker.ready, self._start_failures = True, 0
            elif msg[0] == "fatal":
                self.close()
                raise SandboxError(f"a reward worker failed to start:\n{msg[1]}")
            else:  # ("result", index, status, value, error)
                _, index, status, value, error = msg
                now = time.monotonic()
                if worker.sent and worker.sent[0] == index:
                    worker.sent.popleft()
                    results[index] = Outcome(status, value, error, now - worker.since)
                    worker.since = now
        if not (eof or worker.broken):
            return
        # Gone (exited, killed from outside, or its pipe garbled): what it had not answered is lost
        # with it. The item it was on is charged to it; the others go back to the queue.
        try:
            code = worker.proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            code = None
        if worker.sent:
            died = f"reward worker died (exit code {code})"
            results[worker.sent.popleft()] = Outcome("error", error=died, seconds=time.monotonic() - worker.since)
            self._requeue(worker, pending)
        elif not worker.ready:
            self._start_failures += 1
            if self._start_failures >= 3:
                raise SandboxError(f"reward workers keep dying before they are ready (exit code {code})")
        self._replace(worker)

    def _expire_items(self, results: list, pending: deque, now: float, timeout_s: float) -> None:
        for worker in list(self._workers):
            if worker.sent and now >= worker.deadline(timeout_s):
                results[worker.sent.popleft()] = Outcome(
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
            results[worker.sent.popleft()] = Outcome("timeout", error=error, seconds=now - worker.since)
            self._requeue(worker, pending)
            self._replace(worker)
        while pending:
            results[pending.popleft()] = Outcome("timeout", error=error)


def shutdown() -> None:
    """Kill every live pool's workers (also done at interpreter exit)."""
    for pool in list(_POOLS):
        pool.close()
