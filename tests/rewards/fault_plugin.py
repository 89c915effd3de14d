"""A reward plugin file (the seed's `--external_plugins`) used by the reward tests.

Loaded by path through `reward.plugins`; not collected by pytest (no `test_` prefix).
"""

import ctypes
import os
import signal
import time
from pathlib import Path

from mmr1.rewards import register

_calls = {"n": 0}  # items scored by this worker process (a replacement starts again at 0)


def _entered_hang() -> None:
    # MMR1_TEST_HANG_SENTINEL: a file touched when a reward starts hanging, so a test knows the
    # trainer now sits inside a hung reward call.
    sentinel = os.environ.get("MMR1_TEST_HANG_SENTINEL")
    if sentinel:
        Path(sentinel).write_text(str(os.getpid()))


@register("fault_raises")
def fault_raises(completions, **kwargs):
    raise RuntimeError("this reward is broken on purpose")


@register("fault_sleeps")
def fault_sleeps(completions, **kwargs):
    _entered_hang()
    time.sleep(10**6)  # "forever": only the sandbox's kill ends it
    return [1.0 for _ in completions]


@register("fault_hangs_on_some")
def fault_hangs_on_some(completions, **kwargs):
    """Every second item a worker gets hangs: each worker scores one item, then hangs on the next."""
    _calls["n"] += 1
    if _calls["n"] % 2 == 0:
        _entered_hang()
        time.sleep(10**6)
    return [1.0 for _ in completions]


@register("fault_hangs_in_c")
def fault_hangs_in_c(completions, **kwargs):
    """Hangs inside C code holding the GIL, every signal blocked: only SIGKILL can end it."""
    signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    _entered_hang()
    # libc's sleep() called through PyDLL: no return to the interpreter, the GIL never released,
    # no Python-level signal handler can run (and the signals are blocked anyway).
    ctypes.pythonapi.sleep(10**6)
    return [1.0 for _ in completions]


@register("plugin_len", pure=True)
def plugin_len(completions, **kwargs):
    """A working plugin reward: length of the completion text, in hundreds of characters."""
    texts = [c if isinstance(c, str) else c[0]["content"] for c in completions]
    return [len(t) / 100 for t in texts]


@register("plugin_slow_on_marker", pure=True)
def plugin_slow_on_marker(completions, **kwargs):
    """Hangs only on completions containing HANG: one bad item among good ones."""
    out = []
    for c in completions:
        if "HANG" in c:
            time.sleep(10**6)
        out.append(1.0)
    return out


@register("plugin_step")
def plugin_step(completions, trainer_state=None, **kwargs):
    """Reward shaping on progress: plugins see trainer_state.global_step in the worker."""
    return [float(trainer_state.global_step) if trainer_state is not None else -1.0 for _ in completions]
