"""The reward worker process: started by `sandbox.WorkerPool`, scores one item at a time by reward name (or runs
one call of a rollout tool, ``tool:<pkg.module:function or file.py:function>``: mmr1.rollout.tools.runner).

argv: <fd to read tasks> <fd to write results> <parent pid> <JSON list of plugin files>.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import sys
import traceback
from multiprocessing.connection import Connection
from typing import Any

# Items whose name starts with this run a rollout tool (``rollout.tools`` entry after it), not a reward.
TOOL_PREFIX = "tool:"


def _die_with_parent(parent_pid: int) -> None:
    # A worker stuck in C-level big-integer work never reads its pipe again; if the trainer is
    # SIGKILLed (OOM killer, scheduler) only the kernel can take the worker down with it.
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(0)


def _one(out: Any) -> float | None:
    if len(out) != 1:
        raise ValueError(f"returned {len(out)} values for 1 completion")
    value = out[0]
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not hasattr(value, "__float__"):
        raise TypeError(f"returned a {type(value).__name__}, not a number or None")
    return float(value)


def _short_traceback() -> str:
    lines = traceback.format_exc().strip().splitlines()
    return "\n".join(lines[-6:])  # where it failed and why; the full stack is noise in a jsonl line


def main() -> None:
    task_fd, result_fd, parent_pid, plugins = (
        int(sys.argv[1]),
        int(sys.argv[2]),
        int(sys.argv[3]),
        sys.argv[4],
    )
    # Ctrl-C and SIGTERM are the trainer's to handle (finish the step, checkpoint); it kills us with
    # SIGKILL when done. A scheduler or `timeout` signals the whole process group: without this, the
    # step in flight would lose its reward workers and score their items as errors.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent(parent_pid)
    tasks, results = Connection(task_fd, writable=False), Connection(result_fd, readable=False)
    try:
        from mmr1.rewards import registry  # in the try: a plugin that fails to load is reported

        registry.load_plugins(json.loads(plugins))
        registry.names()
        # Warm math-verify now (imports, its grammar, sympy's lazily imported modules: ~1 s) so
        # the first items' budgets are spent on the items.
        from mmr1.rewards.accuracy import WARMUP, math_match

        for completion, solution in WARMUP:
            math_match(completion, solution)
        try:  # images travel in `prompts`/`image` columns to plugin rewards: unpickling needs PIL
            import PIL.Image  # noqa: F401
        except ImportError:
            pass
    except BaseException:  # noqa: BLE001 - reported to the trainer, which raises SandboxError
        results.send(("fatal", traceback.format_exc()))
        return
    results.send(("ready",))
    fns: dict[str, Any] = {}
    while True:
        try:
            chunk = tasks.recv()  # [(index, reward name, pickled kwargs), ...]
        except EOFError:  # the trainer closed the pool or exited
            return
        for index, name, payload in chunk:
            try:
                if name.startswith(TOOL_PREFIX):  # a rollout tool (mmr1.rollout.tools.runner): its result as it is
                    if name not in fns:
                        fns[name] = registry.load_callable(name[len(TOOL_PREFIX):])
                    value = fns[name](**pickle.loads(payload))
                    pickle.dumps(value)  # an unpicklable result is the tool's error, not a dead worker
                    reply = ("result", index, "ok", value, "")
                else:
                    if name not in fns:
                        fns[name] = registry.get(name)
                    reply = ("result", index, "ok", _one(fns[name](**pickle.loads(payload))), "")
            except Exception:  # noqa: BLE001 - any failure of a reward is an error outcome, counted
                reply = ("result", index, "error", None, _short_traceback())
            results.send(reply)  # one answer per item: the trainer times each item separately


if __name__ == "__main__":
    main()
