"""Video prompts through TRL's GRPO step. TRL 1.16 has no video path (trl#4144, open): its prompt tokenization takes
only image parts, its log-prob forwards pass only image tensors, and its loss batch drops every video key.

mmr1 carries a batch's clips itself, in row order, through the three places (mmr1.trainer.grpo wires them):

- tokenization: each prompt rendered by the chat template, its clips' frames given to the processor with their
  frame bounds and timing (``second_per_grid_ts`` = 2 / fps; without the timing transformers assumes 24 fps), so
  the prompt ids hold the expanded ``<|video_pad|>`` runs and generation gets ``pixel_values_videos``;
- every log-prob forward (old, reference, and the loss's): a forward pre-hook on the model adds the rows' video
  tensors and ``mm_token_type_ids`` (2 at video tokens: without them Qwen2.5-VL silently falls back to 1-D
  positions), taking the rows in order, one chunk per call, as TRL's forward loop feeds them;
- the loss batch: each row's video tensors ride in the output under ``videos`` (a list, which TRL's shuffle and
  split keep aligned with the rows), and the loss forward reads them from there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from mmr1.data.config import VideoConfig
from mmr1.data.videos import Clip, processor_video_kwargs
from mmr1.trainer.forward_hooks import forward_pre_hook

VideoRow = dict[str, Any]  # {"pixel_values_videos": Tensor, "video_grid_thw": LongTensor (n, 3), "second_per_grid_ts"}


def row_clips(rows: list[dict]) -> list[list[Clip]] | None:
    """Each row's clips (``videos``), or None when no row of the batch has one."""
    clips = [list(r.get("videos") or []) for r in rows]
    return clips if any(clips) else None


def video_rows(processor: Any, clips: list[list[Clip]], cfg: VideoConfig) -> list[VideoRow]:
    """Each row's video tensors, as the processor makes them; a clip repeated over a group is processed once."""
    done: dict[int, VideoRow] = {}
    out: list[VideoRow] = []
    for row in clips:
        if not row:
            out.append({"pixel_values_videos": None, "video_grid_thw": None, "second_per_grid_ts": []})
            continue
        key = hash(tuple(id(c) for c in row))
        if key not in done:
            kw = processor_video_kwargs(row, cfg)
            feats = processor.video_processor(videos=[c.frames for c in row], return_tensors="pt", **kw)
            done[key] = {"pixel_values_videos": feats["pixel_values_videos"], "video_grid_thw": feats["video_grid_thw"],
                         "second_per_grid_ts": [2.0 / c.fps for c in row]}
        out.append(done[key])
    return out


def tokenize_prompts(processor: Any, prompts: list[list[dict]], clips: list[list[Clip]], cfg: VideoConfig,
                     chat_template: Any = None) -> tuple[list[list[int]], None, dict[str, Any]]:
    """TRL's ``_tokenize_prompts`` result for prompts with clips: (unpadded prompt ids, no images, the generation's
    multimodal fields)."""
    if len(prompts) != len(clips):
        raise RuntimeError(f"{len(prompts)} prompts to tokenize for {len(clips)} rows of clips: TRL's generation no "
                           "longer tokenizes one prompt per row (mmr1.trainer.video)")
    texts = [processor.apply_chat_template(p, chat_template=chat_template, add_generation_prompt=True,
                                           tokenize=False) for p in prompts]
    flat = [c for row in clips for c in row]
    out = processor(text=texts, videos=[c.frames for c in flat], videos_kwargs=processor_video_kwargs(flat, cfg),
                    return_tensors="pt", padding=True)
    ids = [row[mask.bool()].tolist() for row, mask in zip(out["input_ids"], out["attention_mask"], strict=True)]
    fields = {k: v for k, v in out.items() if k not in ("input_ids", "attention_mask")}
    if "mm_token_type_ids" in fields:  # per-token: unpadded lists, TRL left-pads them for generate
        fields["mm_token_type_ids"] = [row[mask.bool()].tolist() for row, mask in
                                       zip(fields["mm_token_type_ids"], out["attention_mask"], strict=True)]
    return ids, None, fields


def mm_token_type_ids(input_ids: torch.Tensor, image_id: int | None, video_id: int | None) -> torch.Tensor:
    """The processor's per-token modality (0 text, 1 image, 2 video), recomputed from the ids."""
    out = torch.zeros_like(input_ids)
    if image_id is not None:
        out[input_ids == image_id] = 1
    if video_id is not None:
        out[input_ids == video_id] = 2
    return out


@contextlib.contextmanager
def feed_videos(model: torch.nn.Module, rows: list[VideoRow], image_id: int | None,
                video_id: int | None) -> Iterator[None]:
    """While open, each forward of ``model`` gets the video tensors of its rows: the next ``len(input_ids)`` rows of
    ``rows``. On exit every row must have been fed exactly once (TRL's forward loop covers the rows in order)."""
    cursor = 0

    def hook(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        nonlocal cursor
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            raise RuntimeError("a log-prob forward without input_ids (mmr1.trainer.video)")
        chunk = rows[cursor:cursor + ids.shape[0]]
        cursor += ids.shape[0]
        with_video = [r for r in chunk if r["pixel_values_videos"] is not None]
        if with_video:
            device = ids.device
            kwargs["pixel_values_videos"] = torch.cat([r["pixel_values_videos"] for r in with_video]).to(device)
            kwargs["video_grid_thw"] = torch.cat([r["video_grid_thw"] for r in with_video]).to(device)
            kwargs["second_per_grid_ts"] = torch.tensor([t for r in with_video for t in r["second_per_grid_ts"]],
                                                        device=device)
        if kwargs.get("mm_token_type_ids") is None:
            kwargs["mm_token_type_ids"] = mm_token_type_ids(ids, image_id, video_id)
        return args, kwargs

    with forward_pre_hook(model, hook):
        yield
    if cursor != len(rows):
        raise RuntimeError(f"the log-prob forwards saw {cursor} rows for {len(rows)} rows of clips: TRL's forward "
                           "loop no longer covers the batch once in order (mmr1.trainer.video)")
