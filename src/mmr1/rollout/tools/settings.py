"""``rollout.tools`` and its bounds, read from the run's config into a ToolRunner."""

from __future__ import annotations

from typing import Any

from mmr1.data.images import FACTOR, PixelLimits
from mmr1.rollout.tools.runner import ToolRunner, ToolSettings


def tool_settings(cfg: Any, limits: PixelLimits) -> ToolSettings | None:
    """None when ``rollout.tools`` is empty; the tool images' bounds default to the prompt images' (``limits``)."""
    r = cfg.rollout
    entries = [str(e) for e in (r.get("tools") or ())]
    if not entries:
        return None
    for key in ("tool_timeout_s", "tool_round_timeout_s"):
        if not float(r[key]) > 0:
            raise ValueError(f"rollout.{key}={r[key]!r}: must be > 0 seconds")
    if int(r.max_tool_calls) < 1 or int(r.tool_workers) < 1:
        raise ValueError(f"rollout.max_tool_calls={r.max_tool_calls} and rollout.tool_workers={r.tool_workers}: "
                         "each must be >= 1")
    max_pixels = int(r.tool_image_max_pixels or limits.max_pixels)
    if max_pixels > limits.max_pixels:
        # The trainer's processor and vLLM resize every image into model.max_pixels: a larger tool bound would be
        # silently undone, and the pre-flight's tool budget would overcount.
        raise ValueError(f"rollout.tool_image_max_pixels={max_pixels} exceeds model.max_pixels={limits.max_pixels}: "
                         "tool images are resized into the model's image limits like the prompt's")
    return ToolSettings(entries=entries, max_calls=int(r.max_tool_calls), timeout_s=float(r.tool_timeout_s),
                        round_timeout_s=float(r.tool_round_timeout_s), workers=int(r.tool_workers),
                        limits=PixelLimits(min(limits.min_pixels, max_pixels), max_pixels))


def tool_runner(cfg: Any, limits: PixelLimits) -> ToolRunner | None:
    settings = tool_settings(cfg, limits)
    return None if settings is None else ToolRunner(settings)


def max_tool_image_tokens(settings: ToolSettings) -> int:
    """The most image tokens one tool image can cost: one per 28x28 block of the pixel bound (smart_resize keeps every
    image within it, and an image costs ``(w // 28) * (h // 28)`` tokens).

    >>> max_tool_image_tokens(ToolSettings(["crop"], limits=PixelLimits(3136, 7056)))
    9
    """
    return settings.limits.max_pixels // (FACTOR * FACTOR)


def tool_response_tokens(processor: Any, settings: ToolSettings) -> int:
    """The most tokens one tool response adds to a completion: the chat template's wrapping (TRL's suffix, from the
    end of the model's turn to the next assistant header, ``_get_tool_suffix_ids``) around one image at the bound."""
    from mmr1.rollout.tools.template import tool_chat_template

    call = [{"type": "function", "function": {"name": "tool", "arguments": {}}}]
    turn = [{"role": "user", "content": [{"type": "text", "text": "x"}]},
            {"role": "assistant", "content": [{"type": "text", "text": ""}], "tool_calls": call}]
    response = {"role": "tool", "name": "tool", "content": [{"type": "image"}, {"type": "text", "text": ""}]}
    tok = getattr(processor, "tokenizer", processor)
    template = tool_chat_template()
    before = processor.apply_chat_template(turn, tokenize=False, chat_template=template)
    after = processor.apply_chat_template(turn + [response], tokenize=False, add_generation_prompt=True,
                                          chat_template=template)
    def count(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"])

    extra = count(after) - count(before)
    # The newline after the turn's end belongs to the response (TRL cuts its prefix at the end-of-turn token), and
    # the image's one placeholder becomes its tokens: +1 - 1.
    return extra + max_tool_image_tokens(settings)
