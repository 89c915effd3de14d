"""The tools as TRL sees them: an ``environment_factory`` whose instances hold one rollout's row.

TRL 1.16 builds one instance per rollout, calls ``reset(**row)`` before generating, and offers the instance's public
methods as tools (trl/trainer/grpo_trainer.py, ``environment_factory``). A crop needs the rollout's own image, which
a plain ``tools=`` function never sees; the environment gives each call its row's image (at source resolution when
the dataset kept it, ``source_images``) and counts the calls, refusing those past ``rollout.max_tool_calls``.
"""

from __future__ import annotations

import functools
import inspect
import io
from typing import Any

from PIL import Image

from mmr1.rollout.tools.registry import ToolSpec, public_function
from mmr1.rollout.tools.runner import ToolFailure, ToolRunner


class ToolEnvironment:
    """One rollout's tool state; the tools themselves are added as methods by ``environment_factory``."""

    runner: ToolRunner

    def __init__(self) -> None:
        self.calls = 0
        self._row: dict[str, Any] = {}
        self._context: dict[str, Any] | None = None

    def reset(self, **row: Any) -> None:
        self.calls, self._row, self._context = 0, row, None

    def _run(self, spec: ToolSpec, arguments: dict[str, Any]) -> Any:
        self.calls += 1
        if self.calls > self.runner.settings.max_calls:
            self.runner.stats["refused"] += 1
            raise ToolFailure(f"no more tool calls: at most {self.runner.settings.max_calls} per answer "
                              "(rollout.max_tool_calls)")
        if self._context is None:
            self._context = row_context(self._row)
        return self.runner.call(spec, arguments, self._context)


def row_context(row: dict[str, Any]) -> dict[str, Any]:
    """What tools may be given of a row: its first image at source resolution, and the size the model sees it at."""
    seen = row.get("image")
    if seen is None and row.get("images"):
        seen = row["images"][0]
    if not isinstance(seen, Image.Image):
        return {"image": None, "seen_size": None}
    source = (row.get("source_images") or [None])[0]
    if isinstance(source, dict):
        source = source.get("bytes")
    image = Image.open(io.BytesIO(source)).convert("RGB") if isinstance(source, bytes) else seen
    return {"image": image, "seen_size": seen.size}


def _method(spec: ToolSpec) -> Any:
    public = public_function(spec.fn, spec.injected)
    sig = inspect.signature(public)

    def method(self: ToolEnvironment, *args: Any, **kwargs: Any) -> Any:
        try:
            bound = sig.bind(*args, **kwargs)
        except TypeError as exc:  # the model named an argument the tool does not take, or left one out
            self.runner.stats["errors"] += 1
            raise ToolFailure(f"tool {spec.name}: {exc}") from None
        return self._run(spec, dict(bound.arguments))

    method.__name__ = method.__qualname__ = spec.name
    self_param = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    method.__signature__ = sig.replace(parameters=[self_param, *sig.parameters.values()])  # type: ignore[attr-defined]
    method.__annotations__ = dict(public.__annotations__)
    method.__doc__ = public.__doc__
    return method


@functools.cache
def environment_factory(runner: ToolRunner) -> type[ToolEnvironment]:
    """A ToolEnvironment class with one method per tool of ``runner``: TRL's ``environment_factory``. One class per
    runner (its tools do not change), however many rollouts, transcripts or gates ask for it."""
    methods = {spec.name: _method(spec) for spec in runner.specs}
    reserved = {"reset", "get_reward"} & set(methods)
    if reserved:
        raise ValueError(f"rollout.tools: a tool may not be named {sorted(reserved)} (TRL reserves the name)")
    return type("ToolEnvironment", (ToolEnvironment,), {**methods, "runner": runner})
