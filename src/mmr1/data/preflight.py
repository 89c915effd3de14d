"""Pre-flight: does every prompt fit, measured on the data itself? Runs on CPU at start-up, before any GPU work.

A prompt's length is its rendered chat template's text tokens plus the image tokens of *its own* resized
images and clips (``image_tokens``, written by ``build_datasets``: the sum over a row's images, and over its clips
``frames/2 x h/14 x w/14 / 4``, mmr1.data.videos.video_tokens), not a worst case at
``max_pixels``: a 480x320 CLEVR picture (resized to 476x308, 17x11 merged patches) costs 187 tokens whatever
``max_pixels`` allows, two of them 374. Two bounds, as the seed had them:

- ``trainer.max_length`` bounds the prompt (ms-swift v3.2.1 GRPO checks ``--max_length`` on the vLLM-mode
  prompt encode, swift/llm/infer/infer_engine/vllm_engine.py:408-411 -> swift/llm/template/base.py:826-841,
  and would cut an over-long prompt from the left; the training re-encode runs with max_length=None,
  swift/trainers/rlhf_trainer/grpo_trainer.py:424-435; completions are bounded separately). v3.2.1's vLLM-mode
  encode counts ONE placeholder per image (it skips the image-token expansion, base.py:300-303); this
  pre-flight counts the expanded image tokens, so it is stricter;
- the rollout context (``rollout.max_model_len``) bounds prompt + completion: a prompt must leave room for
  at least one token, and completions are cut at ``context - prompt`` (mmr1.trainer.grpo), as vLLM
  stops generating at its context.

A prompt over a bound is never shortened (cutting image tokens out of a prompt is the image-token /
feature mismatch of open-r1-multimodal#28 and trl#4220): it is an error naming the row, or with
``dataset.on_long_prompt=skip`` the row is dropped and counted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)
CANDIDATES = 16  # prompts measured exactly even when every bound holds: the longest ones, for the report
BOUNDARY_SLACK = 8  # tokens a BPE merge across the template/text boundary could add to the bound below
MAX_NAMED = 10  # offending rows named in an error


@dataclass(frozen=True)
class Bound:
    key: str  # the config key named in messages, e.g. "trainer.max_length"
    max_prompt_tokens: int  # the largest prompt (text + image tokens) it allows
    why: str  # one clause on what the bound is


@dataclass
class Report:
    longest_prompt: int = 0  # tokens, text + image, of the longest prompt
    longest_text: int = 0
    longest_image: int = 0
    completion_cap: int | None = None  # completion tokens left by the context for the longest prompt
    skipped: dict[str, list[int]] = field(default_factory=dict)  # split -> source rows dropped
    tool_response_tokens: int = 0  # rollout.tools: the most one completion's tool responses can add


@dataclass(frozen=True)
class ToolBudget:
    """rollout.tools: ``calls`` tool responses per completion at most, each up to ``per_call`` tokens (its image at
    the tool image bound, and the template's wrapping)."""

    calls: int
    per_call: int

    @property
    def total(self) -> int:
        return self.calls * self.per_call


def _user_texts(messages: list[dict]) -> list[str]:
    """The text parts of every turn but the system's (which the scaffold renders)."""
    out = []
    for m in messages:
        if m["role"] == "system":
            continue
        content = m["content"]
        out.extend([content] if isinstance(content, str) else [p["text"] for p in content if p.get("text")])
    return out


def _shape(messages: list[dict]) -> tuple:
    """What the scaffold depends on: the system text, and each other turn's role and image count. Rows of one
    task share it, unless their image count, turns or (ms-swift rows) own system prompt differ."""
    def key(content: Any, system: bool) -> str | int:
        if isinstance(content, str):
            return content if system else 0
        return ("".join(p.get("text") or "" for p in content) if system
                else sum(p.get("type") == "image" for p in content))

    return tuple((m["role"], key(m["content"], m["role"] == "system")) for m in messages)


def _text_tokens(processing_class: Any, messages: list[dict], tools: list | None = None) -> int:
    """Text tokens of the rendered chat prompt, not counting image or video placeholders (one token each)."""
    tok = getattr(processing_class, "tokenizer", processing_class)
    n_images = sum(1 for m in messages if not isinstance(m["content"], str)
                   for p in m["content"] if p.get("type") in ("image", "video"))
    if getattr(processing_class, "chat_template", None) or getattr(tok, "chat_template", None):
        renderer = processing_class if hasattr(processing_class, "apply_chat_template") else tok
        text = renderer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                            **({"tools": tools} if tools else {}))
        return len(tok(text, add_special_tokens=False)["input_ids"]) - n_images
    # No chat template (a bare tokenizer in tests): the text parts only.
    parts = [m["content"] if isinstance(m["content"], str) else " ".join(p["text"] for p in m["content"]
             if p.get("text")) for m in messages]
    return sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in parts)


def _scaffold_tokens(processing_class: Any, messages: list[dict], tools: list | None = None) -> int:
    """The template, system prompt and image markers alone: the row with its other text emptied."""
    empty = [m if m["role"] == "system" else {**m, "content": [
        p for p in ([] if isinstance(m["content"], str) else m["content"]) if p.get("type") in ("image", "video")]
        + [{"type": "text", "text": ""}]} for m in messages]
    return _text_tokens(processing_class, empty, tools)


def _bounds(max_length: int | None, context: int | None) -> list[Bound]:
    bounds = []
    if max_length is not None:
        bounds.append(Bound("trainer.max_length", max_length, "the seed's --max_length bounds the prompt"))
    if context is not None:
        bounds.append(Bound("rollout.max_model_len", context - 1,
                            "prompt + completion share the rollout context; at least 1 completion token"))
    return bounds


Over = tuple[int, int, int, int]  # (position in the split, source row, text tokens, image tokens)


def _check_split(processing_class: Any, ds: Any, bounds: list[Bound], report: Report,
                 tools: list | None = None) -> list[Over]:
    """Return (position, source row, text tokens, image tokens) of every prompt over a bound."""
    cols = ds.with_format(None).select_columns(["prompt", "image_tokens", "source_row"])[:]  # no image decode
    prompts, images, rows = cols["prompt"], cols["image_tokens"], cols["source_row"]
    scaffolds: dict[tuple, int] = {}  # one render per distinct shape (mostly one per split)
    upper = []
    for p, img in zip(prompts, images, strict=True):
        key = _shape(p)
        if key not in scaffolds:
            scaffolds[key] = _scaffold_tokens(processing_class, p, tools)
        texts = _user_texts(p)
        # An upper bound per row without rendering it: a byte-level BPE token covers at least one byte, and
        # a merge across each text part's boundaries adds at most BOUNDARY_SLACK. `img` counts every image.
        upper.append(scaffolds[key] + sum(len(t.encode()) for t in texts) + BOUNDARY_SLACK * max(1, len(texts))
                     + img)
    limit = min((b.max_prompt_tokens for b in bounds), default=None)
    exact = sorted(range(len(prompts)), key=upper.__getitem__, reverse=True)[:CANDIDATES]
    if limit is not None:
        exact = sorted(set(exact) | {i for i, u in enumerate(upper) if u > limit})
    over = []
    for i in exact:
        text = _text_tokens(processing_class, prompts[i], tools)
        total = text + images[i]
        if total > report.longest_prompt:
            report.longest_prompt, report.longest_text, report.longest_image = total, text, images[i]
        if limit is not None and total > limit:
            over.append((i, rows[i], text, images[i]))
    return over


def _message(dataset: str, split: str, over: list, n: int, bounds: list[Bound]) -> str:
    i, row, text, img = over[0]
    broken = [b for b in bounds if text + img > b.max_prompt_tokens]
    b = broken[0]
    named = ", ".join(str(r) for _, r, _, _ in over[:MAX_NAMED]) + (" ..." if len(over) > MAX_NAMED else "")
    return (
        f"pre-flight: dataset {dataset!r} {split} row {row}: its prompt is {text + img} tokens ({text} text + "
        f"{img} image tokens) and exceeds {b.key} (at most {b.max_prompt_tokens} prompt tokens: {b.why}). "
        f"{len(over)} of {n} {split} rows do not fit (source rows {named}). Lower model.max_pixels, raise {b.key}, "
        f"or set dataset.on_long_prompt=skip to drop them (prompts are never cut: that would cut image tokens)."
    )


def preflight(processing_class: Any, bundle: Any, *, max_length: int | None, context: int | None,
              max_completion_length: int, skip: bool = False, tools: list | None = None,
              tool_budget: ToolBudget | None = None) -> Report:
    """Check every train and eval prompt of ``bundle`` (a DataBundle) against the bounds; with ``skip``
    drop the rows over a bound from ``bundle`` in place (counted in ``bundle.stats``), else raise
    ValueError naming the first such row and the config key. Returns the longest prompt's parts.

    ``tools`` (rollout.tools' schemas): prompts are measured as rendered with them (the system turn lists them).
    ``tool_budget``: what the tool responses of one completion may cost, which trainer.max_completion_length must
    hold with room left for the model's own turns (TRL counts tool tokens in the completion)."""
    bounds = _bounds(max_length, context)
    report = Report()
    if tool_budget is not None:
        _check_tool_budget(tool_budget, max_completion_length)
        report.tool_response_tokens = tool_budget.total
    dataset = bundle.stats.get("dataset", "?")
    for split in ("train", "eval"):
        ds = getattr(bundle, split)
        if ds is None or len(ds) == 0:
            continue
        over = _check_split(processing_class, ds, bounds, report, tools)
        if not over:
            continue
        # A mixture's rows carry their task (mmr1.data.mixture): name it with the row.
        task = ds.with_format(None)[over[0][0]].get("task")
        dataset = bundle.stats.get("dataset", "?") + (f"/{task}" if task else "")
        if not skip:
            raise ValueError(_message(dataset, split, over, len(ds), bounds))
        log.warning("%s", _message(dataset, split, over, len(ds), bounds).replace(
            "or set dataset.on_long_prompt=skip to drop them", "dataset.on_long_prompt=skip: dropped"))
        drop = {i for i, *_ in over}
        kept = [i for i in range(len(ds)) if i not in drop]
        if not kept:
            raise ValueError(f"pre-flight: no {split} row of dataset {dataset!r} fits; see the warning above")
        setattr(bundle, split, ds.select(kept))
        report.skipped[split] = [r for _, r, _, _ in over]
    if report.skipped:
        bundle.stats["long_prompts_skipped"] = {k: len(v) for k, v in report.skipped.items()}
    if context is not None:
        report.completion_cap = min(max_completion_length, context - report.longest_prompt)
        if report.completion_cap < max_completion_length:
            log.info("pre-flight: the longest prompt (%d tokens) leaves %d completion tokens in "
                     "rollout.max_model_len=%d (trainer.max_completion_length=%d); completions stop there, "
                     "as vLLM's did in the seed",
                     report.longest_prompt, report.completion_cap, context, max_completion_length)
    log.info("pre-flight ok: longest prompt %d tokens (%d text + %d image); bounds %s",
             report.longest_prompt, report.longest_text, report.longest_image,
             {b.key: b.max_prompt_tokens for b in bounds} or "none")
    return report


MIN_OWN_TOKENS = 16  # the model's own turns: a call and an answer need at least this much besides the tool responses


def _check_tool_budget(budget: ToolBudget, max_completion_length: int) -> None:
    """The completion budget must hold every tool response a completion can get and still leave the model room to
    answer: else every tool-using rollout would end cut, mid-way (and TRL drops a response that would not fit).

    >>> _check_tool_budget(ToolBudget(calls=1, per_call=60), 160)
    >>> _check_tool_budget(ToolBudget(calls=2, per_call=60), 128)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: pre-flight: trainer.max_completion_length=128 cannot hold rollout.max_tool_calls=2 tool responses ...
    """
    need = budget.total + MIN_OWN_TOKENS
    if max_completion_length < need:
        raise ValueError(
            f"pre-flight: trainer.max_completion_length={max_completion_length} cannot hold rollout.max_tool_calls="
            f"{budget.calls} tool responses of up to {budget.per_call} tokens each ({budget.total}) and the model's "
            f"own turns (at least {MIN_OWN_TOKENS} more); raise trainer.max_completion_length to {need}, or lower "
            "rollout.max_tool_calls or rollout.tool_image_max_pixels")
    log.info("pre-flight: tool responses take up to %d of trainer.max_completion_length=%d tokens "
             "(rollout.max_tool_calls=%d x %d)", budget.total, max_completion_length, budget.calls, budget.per_call)


def data_skips_long_prompts(dataset_cfg: Any) -> bool:
    """``dataset.on_long_prompt`` as a flag (a DictConfig enum reads back as its name or the enum)."""
    value = dataset_cfg.on_long_prompt
    return getattr(value, "value", value) == "skip"
