"""Tools by name, as ``reward.funcs`` names rewards: ``rollout.tools=[crop]`` composes them.

An entry is a built-in name (``crop``), an importable ``pkg.module:function`` / ``pkg.module.function``, or a file
and a function, ``path/to/tools.py:function``. A tool is a plain function with TRL's tool signature: type hints on
every argument and a Google-style docstring (transformers' ``get_json_schema`` turns them into the schema the model
reads). Arguments named in ``INJECTED`` are not the model's to give: mmr1 fills them from the rollout's row and
hides them from the schema (``image``: the row's image at its source resolution, PIL; ``seen_size``: ``(width,
height)`` of that image as the model sees it, the frame its coordinates are in).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mmr1.rewards.registry import load_callable

INJECTED = ("image", "seen_size")
BUILTINS: dict[str, str] = {"crop": "mmr1.rollout.tools.crop:crop"}


class ToolConfigError(ValueError):
    """A ``rollout.tools`` entry that cannot be used: raised at startup, naming the entry."""


@dataclass(frozen=True)
class ToolSpec:
    entry: str  # as written in rollout.tools: the key a worker process resolves again
    name: str  # the function's name: what the model calls
    fn: Callable[..., Any]
    injected: tuple[str, ...]  # the arguments mmr1 fills (INJECTED ∩ the signature)
    schema: dict[str, Any]  # the JSON schema the model reads (injected arguments removed)


def resolve(entry: str) -> ToolSpec:
    """The tool behind one ``rollout.tools`` entry, its schema checked; ToolConfigError names a bad entry."""
    fn = load_function(entry)
    params = inspect.signature(fn).parameters
    injected = tuple(p for p in INJECTED if p in params)
    return ToolSpec(entry=entry, name=fn.__name__, fn=fn, injected=injected, schema=_schema(entry, fn, injected))


def load_function(entry: str) -> Callable[..., Any]:
    """The function behind an entry, nothing more (what a worker process needs to run it)."""
    try:
        return load_callable(target(entry))
    except LookupError as exc:
        known = f" (built in: {sorted(BUILTINS)})" if ":" not in entry and "." not in entry else ""
        raise ToolConfigError(f"rollout.tools entry {entry!r}{known}: {exc}") from exc.__cause__


def target(entry: str) -> str:
    """What a worker loads for an entry: a built-in's module path, else the entry itself."""
    return BUILTINS.get(entry, entry)


def _schema(entry: str, fn: Callable, injected: tuple[str, ...]) -> dict[str, Any]:
    from transformers.utils import get_json_schema

    try:
        schema = get_json_schema(public_function(fn, injected))
    except Exception as exc:  # noqa: BLE001 - transformers' own errors say which hint or docstring line is missing
        raise ToolConfigError(f"rollout.tools entry {entry!r}: not a tool TRL can describe to the model (type hints "
                              f"on every argument and a Google-style docstring with Args:): {exc}") from exc
    return schema


def public_function(fn: Callable, injected: tuple[str, ...]) -> Callable:
    """A stand-in for ``fn`` whose signature, hints and docstring omit the injected arguments: what
    ``get_json_schema`` (and TRL, through the environment's methods) describes to the model."""
    sig = inspect.signature(fn)
    params = [p for name, p in sig.parameters.items() if name not in injected]

    def stand_in(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    stand_in.__name__ = stand_in.__qualname__ = fn.__name__
    stand_in.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    stand_in.__annotations__ = {k: v for k, v in inspect.get_annotations(fn, eval_str=True).items()
                                if k not in injected}
    stand_in.__doc__ = _doc_without(fn.__doc__ or "", injected)
    return stand_in


def _doc_without(doc: str, injected: tuple[str, ...]) -> str:
    """The docstring with the injected arguments' lines (and their continuation lines) taken out of ``Args:``.

    >>> print(_doc_without("Zoom.\\n\\nArgs:\\n    image: the image\\n        more\\n    box: a box\\n", ("image",)))
    Zoom.
    <BLANKLINE>
    Args:
        box: a box
    <BLANKLINE>
    """
    out, skipping, indent = [], False, 0
    for line in doc.splitlines(keepends=True):
        stripped = line.lstrip()
        depth = len(line) - len(stripped)
        if skipping and stripped and depth > indent:
            continue
        skipping = False
        if any(stripped.startswith(f"{name}:") or stripped.startswith(f"{name} (") for name in injected):
            skipping, indent = True, depth
            continue
        out.append(line)
    return "".join(out)
