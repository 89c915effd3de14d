"""Reward registry: a dict plus a decorator, and name resolution (registry, dotted path, plugin files).

A reward is a plain callable with TRL's signature, `fn(completions, **columns) -> list[float | None]`;
registering it only records how the sandbox may treat it:

>>> @register("doc_len_example", isolate=False, columns=())
... def doc_len_example(completions, **kwargs):
...     return [float(len(c)) for c in completions]
>>> get("doc_len_example")(["ab", "c"])
[2.0, 1.0]
>>> get("doc_len_example") is doc_len_example
True
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmr1.rewards.config import RewardConfigError


@dataclass(frozen=True)
class RewardSpec:
    name: str
    fn: Callable[..., list]
    # Run in a worker process under the per-item timeout. Off only for rewards that cannot hang
    # (a bounded regex), where two pipe round trips per item would cost more than the reward.
    isolate: bool = True
    # Dataset columns the reward reads; only these travel to the workers (images in `prompts` are
    # expensive to pickle per item). None = every column TRL passes.
    columns: tuple[str, ...] | None = None
    # Cheap, never-hanging decision made in the trainer process: (text, item_columns) -> score, or
    # None to send the item to a worker. Must agree with `fn` wherever it returns a score.
    shortcut: Callable[[Any, dict], float | None] | None = None
    # Same inputs, same score: duplicates in a batch are scored once. Off by default for plugins
    # (a reward may sample).
    pure: bool = False


REWARDS: dict[str, RewardSpec] = {}
_PLUGINS: dict[str, str] = {}  # resolved plugin path -> module name, so a plugin loads once per process
_LOCK = threading.RLock()


def register(
    name: str,
    *,
    isolate: bool = True,
    columns: Iterable[str] | None = None,
    shortcut: Callable[[Any, dict], float | None] | None = None,
    pure: bool = False,
) -> Callable[[Callable], Callable]:
    """Decorator: register `fn` under `name`; a second, different function under one name is refused."""

    def decorator(fn: Callable) -> Callable:
        spec = RewardSpec(name, fn, isolate, None if columns is None else tuple(columns), shortcut, pure)
        with _LOCK:
            old = REWARDS.get(name)
            # Re-running the same definition (importlib.reload, a notebook cell) replaces it; any
            # other function under a taken name is a clash that would silently change a run.
            if old is not None and _origin(old.fn) != _origin(fn):
                raise ValueError(
                    f"reward name {name!r} is already registered by {_origin(old.fn)}; "
                    f"refusing {_origin(fn)}: pick another name"
                )
            REWARDS[name] = spec
        return fn

    return decorator


def _origin(fn: Callable) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def names() -> list[str]:
    """Registered reward names (after the built-ins and any loaded plugins)."""
    _load_builtins()
    return sorted(REWARDS)


def get(name: str, plugins: Iterable[str | Path] = ()) -> Callable[..., list]:
    """The plain reward callable for `name` (no sandbox): registry, else dotted path, else plugins."""
    return spec(name, plugins).fn


def spec(name: str, plugins: Iterable[str | Path] = ()) -> RewardSpec:
    _load_builtins()
    if name in REWARDS:
        return REWARDS[name]
    fn = _import_dotted(name)
    if fn is not None:
        return RewardSpec(name, fn)
    load_plugins(plugins)
    if name in REWARDS:
        return REWARDS[name]
    raise RewardConfigError(
        f"unknown reward {name!r} in reward.funcs: not registered (known: {sorted(REWARDS)}), "
        "not an importable 'pkg.module:function' or 'pkg.module.function', and no file in "
        "reward.plugins registers it"
    )


def _import_dotted(name: str) -> Callable | None:
    if ":" in name:
        module, _, attr = name.partition(":")
    elif "." in name:
        module, _, attr = name.rpartition(".")
    else:
        return None
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        return None
    if not callable(fn):
        raise RewardConfigError(f"reward.funcs entry {name!r} resolves to a non-callable {type(fn).__name__}")
    return fn


def load_plugins(paths: Iterable[str | Path]) -> list[str]:
    """Import each plugin file once (the seed's `--external_plugins`); return their absolute paths."""
    loaded = []
    for raw in paths:
        try:
            loaded.append(_import_file(raw)[0])
        except LookupError as exc:
            raise RewardConfigError(f"reward.plugins: {exc}") from exc.__cause__
    return loaded


def _import_file(raw: str | Path) -> tuple[str, Any]:
    """(absolute path, module) of a Python file, imported once per process; LookupError says what went wrong."""
    path = Path(raw).expanduser().resolve()
    if not path.is_file():
        raise LookupError(f"plugin file {str(raw)!r} not found (looked at {path})")
    key = str(path)
    with _LOCK:
        if key not in _PLUGINS:
            # A stable, unique module name: the same file gets the same name in every worker,
            # and two plugin.py files in different folders do not collide.
            module_name = f"mmr1_plugin_{path.stem}_{hashlib.sha1(key.encode()).hexdigest()[:8]}"
            module_spec = importlib.util.spec_from_file_location(module_name, path)
            assert module_spec is not None and module_spec.loader is not None  # a .py file path
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[module_name] = module
            try:
                module_spec.loader.exec_module(module)
            except Exception as exc:
                del sys.modules[module_name]
                raise LookupError(f"plugin file {key!r} failed to import: {type(exc).__name__}: {exc}") from exc
            _PLUGINS[key] = module_name
    return key, sys.modules[_PLUGINS[key]]


def load_callable(target: str) -> Callable[..., Any]:
    """The function ``target`` names: ``pkg.module:function``, ``pkg.module.function`` or ``path/file.py:function``
    (the file imported once per process, as a plugin); LookupError says what is missing. Tools (mmr1.rollout.tools)
    are named this way, and the sandbox's workers load them by it."""
    path, sep, attr = target.rpartition(":")
    if sep and path.endswith(".py"):
        where, module = _import_file(path)
    else:
        path, attr = (target.split(":", 1) if ":" in target else target.rpartition(".")[::2])
        if not path:
            raise LookupError(f"{target!r} is not 'pkg.module:function' nor 'file.py:function'")
        try:
            module, where = importlib.import_module(path), path
        except ImportError as exc:
            raise LookupError(f"cannot import {path!r}: {exc}") from exc
    if not hasattr(module, attr):
        raise LookupError(f"{where} has no {attr!r}")
    fn = getattr(module, attr)
    if not callable(fn):
        raise LookupError(f"{target!r} is a {type(fn).__name__}, not a function")
    return fn


def _load_builtins() -> None:
    # Imported here, not at module top, so `registry` has no import cycle with the reward modules.
    import mmr1.rewards.accuracy
    import mmr1.rewards.format  # noqa: F401
