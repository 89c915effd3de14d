"""Runs that survive: exact resume, atomic checkpoints, the collapse guard, clean Ctrl-C.

- `resolve_resume(resume, run_dir)` -> the checkpoint to continue from (`resume=auto|never|PATH`);
- `GuardConfig` (the `guard` config node), `CheckpointError`.

The run loop that ties them to ``trainer.train`` is ``mmr1.trainer.loop``.

Only the config is imported eagerly: the schema imports it, and composing a config (a dry run) must not
pull in torch and transformers.
"""

from importlib import import_module

from mmr1.reliability.config import GuardAction, GuardConfig, as_guard_config

_LAZY = {
    "MARKER": "checkpoints", "CheckpointError": "checkpoints", "select_checkpoint": "checkpoints",
    "verify": "checkpoints", "resolve_resume": "resume", "resume_command": "resume",
}

__all__ = ["GuardAction", "GuardConfig", "as_guard_config", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f"mmr1.reliability.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'mmr1.reliability' has no attribute {name!r}")
