"""Multi-turn conversations outside GRPO: the warm-start's tool-call transcripts, and greedy or sampled generation
that runs the tools (the warm-start's gate, ``mmr1.evaluate``), both in the exact token layout TRL's tool loop trains
on (trl/trainer/grpo_trainer.py ``_tool_call_loop``): the prompt, the model's turn up to its ``<|im_end|>``, the tool
response rendered by the chat template, the model's next turn."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mmr1.internals import parse_response
from mmr1.models.generation import completion_lengths, to_pil
from mmr1.rewards.text import completion_text, flat_messages
from mmr1.rollout.tools.environment import ToolEnvironment, environment_factory
from mmr1.rollout.tools.runner import ToolRunner
from mmr1.rollout.tools.template import tool_chat_template

IGNORE = -100


def expert_turns(row: dict[str, Any], seen_size: tuple[int, int], target: str, think: str,
                 runner: ToolRunner) -> list[dict[str, Any]]:
    """What the model should say for a row: with a ``zoom_box`` (the region to crop, in source pixels) a crop of it in
    the coordinates the model sees (the call's turn reasons ``think``), the crop as the tool's response, then
    ``target`` (the warm-start's answer turn, mmr1.models.warmstart.target_completion); without one, ``target``."""
    final = {"role": "assistant", "content": target}
    box = row.get("zoom_box")
    if box is None:
        return [final]
    before = row.get("image_size_before") or seen_size
    sx, sy = seen_size[0] / before[0], seen_size[1] / before[1]
    seen_box = [round(box[0] * sx), round(box[1] * sy), round(box[2] * sx), round(box[3] * sy)]
    env = environment_factory(runner)()
    env.reset(**row)
    runner.new_round()  # one call, with its own budget: building transcripts is no generation round
    crop = runner.specs[0]
    result = getattr(env, crop.name)(bbox_2d=seen_box)
    call = {"type": "function", "function": {"name": crop.name, "arguments": {"bbox_2d": seen_box}}}
    return [{"role": "assistant", "content": f"<think>{think}</think>", "tool_calls": [call]},
            {"role": "tool", "name": crop.name, "content": result}, final]


def conversation_images(messages: list[dict[str, Any]]) -> list[Any]:
    """The PIL images of a conversation, in order (the prompt's, then the tools')."""
    return [p["image"] for m in messages if isinstance(m.get("content"), list)
            for p in m["content"] if isinstance(p, dict) and p.get("type") == "image" and "image" in p]


def with_images(prompt: list[dict[str, Any]], images: list[Any]) -> list[dict[str, Any]]:
    """The prompt's ``{"type": "image"}`` parts given their PIL images, in order."""
    it = iter(images)
    out = []
    for m in prompt:
        content = m["content"]
        if isinstance(content, list):
            content = [{**p, "image": next(it)} if p.get("type") == "image" and "image" not in p else p
                       for p in content]
        out.append({**m, "content": content})
    return out


def transcript_features(processor: Any, messages: list[dict[str, Any]], tools: list[Any]) -> dict[str, Any]:
    """``input_ids`` and ``labels`` of a whole conversation: only the model's turns (each through its ``<|im_end|>``)
    are learnt, as TRL's ``tool_mask`` keeps them; the prompt and the tool responses are IGNORE."""
    text = processor.apply_chat_template(messages, tools=tools, tokenize=False, chat_template=tool_chat_template())
    ids = list(map(int, processor(text=[text], images=conversation_images(messages) or None)["input_ids"][0]))
    tok = processor.tokenizer
    header = tok("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    end = tok.convert_tokens_to_ids("<|im_end|>")
    labels = [IGNORE] * len(ids)
    i = 0
    while i < len(ids):
        if ids[i:i + len(header)] == header:
            j = i + len(header)
            while j < len(ids) and ids[j] != end:
                labels[j] = ids[j]
                j += 1
            if j < len(ids):
                labels[j] = end
            i = j
        i += 1
    return {"input_ids": ids, "labels": labels}


class TranscriptCollator:
    """Pads transcripts (``input_ids``, ``labels``, ``images``) into a batch with the images' pixel values."""

    def __init__(self, processor: Any) -> None:
        self.processor = processor

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        pad = self.processor.tokenizer.pad_token_id
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):  # right padding: a causal LM's loss needs no left alignment
            n = len(r["input_ids"])
            ids[i, :n] = torch.tensor(r["input_ids"])
            labels[i, :n] = torch.tensor(r["labels"])
            mask[i, :n] = 1
        batch: dict[str, Any] = {"input_ids": ids, "labels": labels, "attention_mask": mask}
        images = [to_pil(img) for r in rows for img in r["images"]]
        if images:
            batch.update(self.processor.image_processor(images=images, return_tensors="pt"))
            # Qwen2.5-VL places its 3-D (mrope) positions by the image tokens' type (transformers 5.x): without
            # mm_token_type_ids a forward numbers them as text, and what it learns is not what generate() runs
            # (measured: teacher-forced argmax right, greedy decoding wrong from the first tool-call token).
            batch["mm_token_type_ids"] = (ids == self.processor.image_token_id).long()
        return batch


@dataclass
class _Rollout:
    prompt: list[dict[str, Any]]
    env: ToolEnvironment
    turns: list[dict[str, Any]] = field(default_factory=list)
    start: int | None = None  # the prompt's tokens
    used: int = 0  # completion tokens so far: the model's turns and the tool responses
    done: bool = False
    truncated: bool = False


def generate_with_tools(model: Any, processor: Any, runner: ToolRunner, rows: list[dict], *, n: int,
                        do_sample: bool, max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0,
                        top_k: int = 0, video: Any = None) -> list[list[dict]]:
    """``mmr1.models.generation.generate``'s completions with the tools run between turns: each completion's tokens,
    tool responses included, stay within ``max_new_tokens`` (TRL's ``max_completion_length`` rule). Each result also
    holds ``turns`` (as text: mmr1.rewards.text.flat_messages, images with their sizes) and ``tool_calls``; ``text``
    is the answer turn, what the rewards score."""
    import torch

    if video is not None and any(r.get("videos") for r in rows):
        raise ValueError("rollout.tools with clips: the tool loop renders images only")
    tools: list[Any] = [s.schema for s in runner.specs]
    env_class = environment_factory(runner)
    runner.new_round()  # this batch's calls share rollout.tool_round_timeout_s, as a GRPO generation round's do
    states = []
    for r in rows:
        prompt = with_images(r["prompt"], [to_pil(i) for i in (r.get("images") or [r.get("image")]) if i is not None])
        for _ in range(n):
            env = env_class()
            env.reset(**r)
            states.append(_Rollout(prompt, env))
    gen = model.generation_config
    eos = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
    kwargs = _sampling(gen, do_sample, temperature, top_p, top_k)
    template = tool_chat_template()
    for _ in range(runner.settings.max_calls + 1):
        live = [s for s in states if not s.done]
        if not live:
            break
        messages = [s.prompt + s.turns for s in live]
        texts = [processor.apply_chat_template(m, tools=tools, add_generation_prompt=True, tokenize=False,
                                               chat_template=template) for m in messages]
        images = [conversation_images(m) for m in messages]
        inputs = processor(text=texts, images=images if any(images) else None, padding=True,
                           return_tensors="pt").to(model.device)
        for s, length in zip(live, inputs["attention_mask"].sum(dim=1).tolist(), strict=True):
            s.start = length if s.start is None else s.start
            s.used = length - s.start
        room = max(1, max_new_tokens - min(s.used for s in live))
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=room, **kwargs)
        new = out[:, inputs["input_ids"].shape[1]:]
        turn_lengths, truncated = completion_lengths(new, {e for e in eos if e is not None}, gen.pad_token_id)
        for s, ids, k, cut in zip(live, new.tolist(), turn_lengths, truncated, strict=True):
            kept = min(k, max_new_tokens - s.used)  # the completion budget holds every turn and tool response
            # No room left: an empty turn (TRL, too, parses only non-empty ones; an empty list reads as a batch).
            message: dict[str, Any] = (parse_response(processor.tokenizer, ids[:kept], prefix=[], tools=tools)
                                       if kept > 0 else {"role": "assistant", "content": ""})
            s.turns.append(message)
            s.used += kept
            s.truncated = cut or kept < k
            calls = message.get("tool_calls") or []
            s.done = not calls or s.truncated or s.used >= max_new_tokens
            if not s.done:
                s.turns.extend(_run_calls(s.env, calls))
    flat = [{"text": completion_text(s.turns) or "", "length": s.used, "truncated": s.truncated,
             "turns": flat_messages(s.turns, image_sizes=True),
             "tool_calls": sum(len(t.get("tool_calls") or ()) for t in s.turns)} for s in states]
    return [flat[i * n:(i + 1) * n] for i in range(len(rows))]


def _sampling(gen: Any, do_sample: bool, temperature: float, top_p: float, top_k: int) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"do_sample": do_sample, "pad_token_id": gen.pad_token_id}
    if do_sample:
        kwargs.update(temperature=temperature, top_p=top_p, top_k=top_k or None)
    else:  # the saved generation config may say do_sample=true with a temperature: greedy ignores both
        kwargs.update(temperature=None, top_p=None, top_k=None)
    return kwargs


def _run_calls(env: ToolEnvironment, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tool messages for one turn's calls, as TRL's loop makes them (a failure becomes ``{'error': ...}``)."""
    out = []
    for call in calls:
        fn = call.get("function") or {}
        try:
            result = getattr(env, str(fn.get("name")))(**(fn.get("arguments") or {}))
        except Exception as exc:  # noqa: BLE001 - as TRL: the model reads the error
            result = {"error": str(exc)}
        out.append({"role": "tool", "name": fn.get("name"), "content": result if isinstance(result, list)
                    else str(result)})
    return out
