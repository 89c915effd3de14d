"""Pre-flight: will the longest prompt, with its image at the largest allowed size, plus a full
completion fit the model's (or vLLM's) length? Fails on CPU at startup, before any GPU work."""

from __future__ import annotations

import logging
from typing import Any

from mmr1.data.images import FACTOR

log = logging.getLogger(__name__)
CANDIDATES = 16  # longest prompts (by characters) that are actually tokenized: cheap, and tokens track chars


def _texts(messages: list[dict]) -> list[str]:
    out = []
    for m in messages:
        content = m["content"]
        out.extend([content] if isinstance(content, str) else [p["text"] for p in content if p.get("text")])
    return out


def _n_images(messages: list[dict]) -> int:
    return sum(
        1 for m in messages if not isinstance(m["content"], str) for p in m["content"] if p.get("type") == "image"
    )


def _prompt_tokens(processing_class: Any, messages: list[dict]) -> int:
    """Tokens of the rendered chat prompt, counting each image placeholder as one token."""
    tok = getattr(processing_class, "tokenizer", processing_class)
    if getattr(processing_class, "chat_template", None) or getattr(tok, "chat_template", None):
        renderer = processing_class if hasattr(processing_class, "apply_chat_template") else tok
        text = renderer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return len(tok(text, add_special_tokens=False)["input_ids"])
    # No chat template (e.g. a bare tokenizer in tests): text parts plus one token per image.
    return sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in _texts(messages)) + _n_images(messages)


def preflight(
    processing_class: Any, bundle: Any, *, max_pixels: int, max_completion_length: int,
    max_length: int | None, what: str = "max_length", strict: bool = True,
) -> dict[str, int]:
    """Check ``text tokens + image tokens at max_pixels + max_completion_length <= max_length``.

    ``bundle`` is a ``DataBundle`` (train and eval prompts are checked) or an iterable of prompts.
    ``what`` names the limit in the error (e.g. "rollout.max_model_len"). ``max_length=None`` only
    reports. Returns the worst case's parts; raises ValueError with the numbers when it cannot fit
    (``strict=False``: logs a warning instead, e.g. for a vLLM length that truncates completions).
    """
    if hasattr(bundle, "train"):
        prompts = []
        for ds in (bundle.train, bundle.eval):
            if ds is not None:
                prompts.extend(ds.with_format(None).select_columns(["prompt"])["prompt"])  # no image decode
    else:
        prompts = list(bundle)
    if not prompts:
        raise ValueError("preflight: no prompts to check")
    longest = sorted(prompts, key=lambda m: sum(map(len, _texts(m))), reverse=True)[:CANDIDATES]
    worst = max(longest, key=lambda m: _prompt_tokens(processing_class, m))
    n_img = max(_n_images(m) for m in prompts)
    per_image = max_pixels // (FACTOR * FACTOR)  # smart_resize keeps h*w <= max_pixels
    text_tokens = _prompt_tokens(processing_class, worst) - _n_images(worst)
    report = {
        "text_tokens": text_tokens, "image_tokens": n_img * per_image,
        "max_completion_length": max_completion_length,
    }
    report["total"] = sum(report.values())
    if max_length is not None and report["total"] > max_length:
        msg = (
            f"pre-flight: the longest prompt ({text_tokens} text tokens + {n_img} image(s) x {per_image} tokens at "
            f"max_pixels={max_pixels}) + max_completion_length={max_completion_length} = {report['total']} tokens "
            f"exceeds {what}={max_length}. Lower model.max_pixels or trainer.max_completion_length, "
            f"or raise {what}."
        )
        if strict:
            raise ValueError(msg)
        log.warning("%s Completions may be cut short.", msg)
        return report
    log.info("pre-flight ok: %s (limit %s=%s)", report, what, max_length)
    return report
