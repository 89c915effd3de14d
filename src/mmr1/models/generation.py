"""Batched generation for prompts with one image (``image``) or several (``images``): shared by
``mmr1.evaluate`` and the warm-start's gate."""

from __future__ import annotations

import io
from typing import Any

from mmr1.data.config import VideoConfig
from mmr1.data.videos import processor_video_kwargs


def to_pil(image: Any):
    """PIL from a PIL image or a datasets ``{"bytes", "path"}`` dict."""
    from PIL import Image

    if isinstance(image, dict):
        return Image.open(io.BytesIO(image["bytes"]) if image.get("bytes") else image["path"]).convert("RGB")
    return image


def row_images(row: dict) -> list:
    """A row's images as PIL, in prompt order: ``images`` (several per row), ``image`` (one), or none (a clip row)."""
    if row.get("images") is not None:
        return [to_pil(i) for i in row["images"]]
    return [to_pil(row["image"])] if row.get("image") is not None else []


def media_inputs(rows: list[dict], video: Any = None) -> dict[str, Any]:
    """The processor's media arguments for a batch: ``images`` per row, and the rows' clips (mmr1.data.videos.Clip)
    as ``videos`` with their frame bounds and timing (mmr1.data.videos.processor_video_kwargs)."""
    out: dict[str, Any] = {}
    images = [row_images(r) for r in rows]
    if any(images):
        out["images"] = images
    clips = [c for r in rows for c in (r.get("videos") or [])]
    if clips:
        out["videos"] = [c.frames for c in clips]
        out["videos_kwargs"] = processor_video_kwargs(clips, video or VideoConfig())
    return out


def completion_lengths(ids, eos_ids: set[int], pad_id: int | None) -> tuple[list[int], list[bool]]:
    """Tokens up to and including the first end-of-turn token (TRL counts the same way); truncated if none."""
    lengths, truncated = [], []
    for row in ids.tolist():
        end = next((i for i, t in enumerate(row) if t in eos_ids), None)
        if end is None:
            n = sum(1 for t in row if t != pad_id) if pad_id is not None else len(row)
            lengths.append(n)
            truncated.append(True)
        else:
            lengths.append(end + 1)
            truncated.append(False)
    return lengths, truncated


def generate(model, processor, rows: list[dict], *, n: int, do_sample: bool, max_new_tokens: int,
             temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0, video: Any = None) -> list[list[dict]]:
    """Completions for each row (``n`` of them): ``[{"text", "length", "truncated"}, ...]`` per row; ``video``:
    the run's ``model.video`` (clips' frame bounds)."""
    import torch

    texts = [processor.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=False) for r in rows]
    inputs = processor(text=texts, **media_inputs(rows, video), padding=True, return_tensors="pt").to(model.device)
    gen = model.generation_config
    eos = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
    kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": do_sample, "num_return_sequences": n,
                              "pad_token_id": gen.pad_token_id}
    if do_sample:
        kwargs.update(temperature=temperature, top_p=top_p, top_k=top_k or None)
    else:  # the saved generation config may say do_sample=true with a temperature: greedy ignores both
        kwargs.update(temperature=None, top_p=None, top_k=None)
    with torch.no_grad():
        out = model.generate(**inputs, **kwargs)
    new = out[:, inputs["input_ids"].shape[1]:]
    decoded = processor.batch_decode(new, skip_special_tokens=True)
    lengths, truncated = completion_lengths(new, {e for e in eos if e is not None}, gen.pad_token_id)
    flat = [{"text": t, "length": ln, "truncated": tr} for t, ln, tr in zip(decoded, lengths, truncated)]
    return [flat[i * n:(i + 1) * n] for i in range(len(rows))]


def _image_runs(prompt_ids: list[int], image_token_id: int) -> list[dict[str, int]]:
    """Where each image's expanded placeholders sit in a prompt: ``[{"offset", "length"}, ...]`` per run.

    >>> _image_runs([1, 7, 7, 2, 7, 3], 7)
    [{'offset': 1, 'length': 2}, {'offset': 4, 'length': 1}]
    """
    runs: list[dict[str, int]] = []
    for i, token in enumerate(prompt_ids):
        if token != image_token_id:
            continue
        if runs and runs[-1]["offset"] + runs[-1]["length"] == i:
            runs[-1]["length"] += 1
        else:
            runs.append({"offset": i, "length": 1})
    return runs


def server_generate(client, processor, rows: list[dict], *, n: int, do_sample: bool, max_new_tokens: int,
                    temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0) -> list[list[dict]]:
    """``generate``'s completions, made by a running vLLM server through TRL's client (``trl.generation.vllm_client
    .VLLMClient``): the server turns each row's images into features (``image_features``), which are pointed at the
    prompt's own placeholder runs, as TRL's server rollouts do (``VLLMGeneration._place_features``)."""
    texts = [processor.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=False) for r in rows]
    images = [row_images(r) for r in rows]
    prompt_ids = [list(map(int, processor(text=[t], images=imgs)["input_ids"][0])) for t, imgs in zip(texts, images)]
    features = client.image_features(images)
    placed = []
    for feats, ids in zip(features, prompt_ids, strict=True):
        runs = _image_runs(ids, processor.image_token_id)
        if len(runs) != len(feats["mm_placeholders"]["image"]):
            raise ValueError(f"a prompt holds {len(runs)} image placeholder runs for "
                             f"{len(feats['mm_placeholders']['image'])} images")
        placed.append({**feats, "mm_placeholders": {**feats["mm_placeholders"], "image": runs}})
    out = client.generate(prompts=prompt_ids, features=placed, n=n, max_tokens=max_new_tokens,
                          temperature=temperature if do_sample else 0.0, top_p=top_p if do_sample else 1.0,
                          top_k=(top_k or -1) if do_sample else -1, min_p=0.0, repetition_penalty=1.0)
    tok = processor.tokenizer
    eos = {tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")} - {None}
    flat = []
    for ids in out["completion_ids"]:
        end = next((i for i, t in enumerate(ids) if t in eos), None)
        flat.append({"text": tok.decode(ids, skip_special_tokens=True), "length": len(ids) if end is None else end + 1,
                     "truncated": end is None})
    return [flat[i * n:(i + 1) * n] for i in range(len(rows))]
