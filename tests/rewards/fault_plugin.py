"""A reward plugin file (the seed's `--external_plugins`) used by the reward tests.

Loaded by path through `reward.plugins`; not collected by pytest (no `test_` prefix).
"""

import time

from mmr1.rewards import register


@register("fault_raises")
def fault_raises(completions, **kwargs):
    raise RuntimeError("this reward is broken on purpose")


@register("fault_sleeps")
def fault_sleeps(completions, **kwargs):
    time.sleep(10**6)  # "forever": only the sandbox's kill ends it
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
