"""Tool calls bounded like rewards: each runs in the reward sandbox's worker processes (mmr1.rewards.sandbox) under a
per-call deadline and a per-round budget, so a tool that raises, hangs or returns something unusable costs its
rollout an error message, never the step.

TRL 1.16 calls tools in the training process, one after another, and has no timeout (trl/trainer/grpo_trainer.py
``_tool_call_loop``): a hung tool would stall every rank at the next collective. Here the call goes to a worker
process; the trainer waits at most ``rollout.tool_timeout_s`` for it, and all calls of one generation round together
at most ``rollout.tool_round_timeout_s`` (once spent, the round's further calls fail at once). A late worker is
killed and replaced. A failure reaches TRL as an exception: TRL counts it (``tools/failure_frequency``) and shows
the model ``{'error': ...}`` as the tool's response.

What a tool returns is checked here, in the trainer: a string, an image, or a list of text and image parts, with at
most ``MAX_IMAGES_PER_CALL`` images, each resized into the tool image limits (Qwen's smart_resize rule, as the
prompt's images are), so the context a tool can add is bounded before any rollout runs (mmr1.data.preflight).
"""

from __future__ import annotations

import pickle
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from mmr1.data.images import MIN_SIDE, PixelLimits, smart_resize
from mmr1.rewards.sandbox import WorkerPool
from mmr1.rewards.worker import TOOL_PREFIX
from mmr1.rollout.tools.registry import ToolSpec, resolve, target

MAX_IMAGES_PER_CALL = 1  # what the pre-flight's bound assumes: one image per call


class ToolFailure(RuntimeError):
    """A tool call that gave no usable result; its message is what the model reads."""


@dataclass
class ToolSettings:
    entries: list[str]
    max_calls: int = 1
    timeout_s: float = 10.0
    round_timeout_s: float = 60.0
    workers: int = 2
    limits: PixelLimits = PixelLimits(3136, 50176)  # the tool images' pixel bounds (model.max_pixels by default)


class ToolRunner:
    """The run's tools and the worker pool they run in; counts what happened since the last ``take_stats``."""

    def __init__(self, settings: ToolSettings) -> None:
        self.settings = settings
        self.specs: list[ToolSpec] = [resolve(e) for e in settings.entries]
        names = [s.name for s in self.specs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"rollout.tools: two tools named {dupes}: the model calls tools by function name")
        self._pool: WorkerPool | None = None
        self.stats: Counter[str] = Counter()
        self._round_deadline: float | None = None

    def new_round(self) -> None:
        """A generation round starts: its tool budget is ``round_timeout_s`` from the first call."""
        self._round_deadline = None

    def take_stats(self) -> dict[str, int]:
        out, self.stats = dict(self.stats), Counter()
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def call(self, spec: ToolSpec, arguments: dict[str, Any], context: dict[str, Any]) -> Any:
        """Run one call; the tool's checked result, or ToolFailure (a timeout, an exception, a bad result)."""
        self.stats["calls"] += 1
        now = time.monotonic()
        if self._round_deadline is None:
            self._round_deadline = now + self.settings.round_timeout_s
        left = self._round_deadline - now
        if left <= 0:
            self.stats["timeouts"] += 1
            raise ToolFailure(f"tool {spec.name}: this round's tool budget (rollout.tool_round_timeout_s="
                              f"{self.settings.round_timeout_s}) is spent")
        payload = pickle.dumps({**arguments, **{k: context[k] for k in spec.injected}})
        if self._pool is None:
            self._pool = WorkerPool(self.settings.workers).start()
        budget = min(self.settings.timeout_s, left)
        (outcome,) = self._pool.run([(TOOL_PREFIX + target(spec.entry), payload)], timeout_s=budget,
                                    batch_timeout_s=budget)
        if outcome.status == "timeout":
            self.stats["timeouts"] += 1
            raise ToolFailure(f"tool {spec.name} gave no result within {budget:.3g} s (rollout.tool_timeout_s)")
        if outcome.status != "ok":
            self.stats["errors"] += 1
            raise ToolFailure(f"tool {spec.name} failed: {outcome.error.strip().splitlines()[-1]}")
        try:
            return self.checked(spec.name, outcome.value)
        except ToolFailure:
            self.stats["errors"] += 1
            raise

    def checked(self, name: str, value: Any) -> Any:
        """A tool's result as TRL renders it: a string, or text and image parts with each image in the limits."""
        if isinstance(value, str):
            return value
        if isinstance(value, Image.Image):
            value = [{"type": "image", "image": value}]
        if not isinstance(value, list):
            return str(value)  # TRL's own rendering of a non-list result
        parts, images = [], 0
        for part in value:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                parts.append({"type": "text", "text": part["text"]})
            elif kind == "image" and isinstance(part.get("image"), Image.Image):
                images += 1
                if images > MAX_IMAGES_PER_CALL:
                    raise ToolFailure(f"tool {name} returned more than {MAX_IMAGES_PER_CALL} image(s) in one call")
                parts.append({"type": "image", "image": self._fit(name, part["image"])})
            else:
                raise ToolFailure(f"tool {name} returned a part that is neither text nor a PIL image: {part!r:.80}")
        return parts

    def _fit(self, name: str, img: Image.Image) -> Image.Image:
        if min(img.size) < MIN_SIDE:
            raise ToolFailure(f"tool {name} returned a degenerate {img.width}x{img.height} image")
        if img.mode != "RGB":
            img = img.convert("RGB")
        limits = self.settings.limits
        h, w = smart_resize(img.height, img.width, min_pixels=limits.min_pixels, max_pixels=limits.max_pixels)
        if (w, h) != img.size:
            if w * h < img.width * img.height:
                self.stats["images_downscaled"] += 1  # an oversized image: what the model sees is bounded
            img = img.resize((w, h), Image.Resampling.BICUBIC)
        return img


def tool_schemas(specs: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    """The JSON schemas the model reads, in ``rollout.tools`` order."""
    return [s.schema for s in specs]
