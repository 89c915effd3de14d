"""The colocate engine TRL builds, with ``mmr1.rollout.vllm_engine``'s options and prompt rule, and its weight sync
made to load on vLLM's CPU build (the reasons are in that module's docstring and ``sync_colocate_weights``)."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from omegaconf import DictConfig

from mmr1.internals import colocate_llm_factory, replace_vllm_sync, vllm_weights
from mmr1.rollout.vllm_engine import collapse_placeholders, engine_options, with_clips

log = logging.getLogger("mmr1.rollout")


@contextlib.contextmanager
def colocate_engine(cfg: DictConfig, processor: Any) -> Iterator[dict[str, Any]]:
    """While the trainer is constructed: TRL's colocate ``LLM(...)`` call gets ``engine_options`` on top of its own,
    and the engine it returns collapses each prompt's runs of placeholders (the processor's image / video pad ids)
    in the prompts that carry images or videos, before vLLM expands them itself.

    TRL calls ``LLM`` through its module's global name, wrapped by ``mmr1.internals.colocate_llm_factory`` and
    restored on exit, whatever happens. A TRL without that name fails there, naming it.
    """
    options = engine_options(cfg)
    placeholders: set[int] = {int(t) for t in (getattr(processor, "image_token_id", None),
                                               getattr(processor, "video_token_id", None)) if t is not None}

    def make(real: Any) -> Any:
        return functools.partial(_engine, real, options, placeholders)

    with colocate_llm_factory(make):
        yield options


# The clips of the prompts being generated, one list per prompt in TRL's order (set by mmr1.trainer.grpo around a
# generation round): TRL hands vLLM only images (trl/generation/vllm_generation.py builds {"image": ...}).
ROLLOUT_CLIPS: ContextVar[list | None] = ContextVar("mmr1_rollout_clips", default=None)


def _engine(real: Any, options: dict[str, Any], placeholders: set[int], *args: Any, **kwargs: Any) -> Any:
    """``vllm.LLM(*args, **kwargs)`` with mmr1's options, generating from prompts with collapsed placeholders."""
    kwargs.update(options)
    log.info("vLLM colocate engine: %s", ", ".join(f"{k}={v}" for k, v in options.items()))
    engine = real(*args, **kwargs)
    generate = engine.generate

    def generate_unexpanded(prompts: Any, *gen_args: Any, **gen_kwargs: Any) -> Any:
        if isinstance(prompts, list):
            prompts = with_clips(prompts, ROLLOUT_CLIPS.get())
            prompts = [{**p, "prompt_token_ids": collapse_placeholders(p["prompt_token_ids"], placeholders)}
                       if isinstance(p, dict) and p.get("multi_modal_data") else p for p in prompts]
        return generate(prompts, *gen_args, **gen_kwargs)

    engine.generate = generate_unexpanded
    return engine


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

    def reload_on_cpu() -> None:
        from vllm.model_executor.layers.vocab_parallel_embedding import UnquantizedEmbeddingMethod

        runner = gen.llm.llm_engine.model_executor.driver_worker.model_runner
        # Copies: the reload buffers each tensor until its whole layer has arrived, and TRL's iterator changes the
        # tensors it yielded in place once it ends (the LoRA unmerge), before the last layers are loaded.
        tensors = ((name, tensor.detach().clone()) for name, tensor in vllm_weights(gen))
        runner.reload_weights(weights_iterator=tensors, is_checkpoint_format=True)
        # A tied LM head (Qwen2.5-VL-3B's and the tiny model's tie_word_embeddings) loads nothing of its own, so the
        # reload never repacks it and its GEMM keeps the old embedding.
        for module in runner.model.modules():
            method = getattr(module, "quant_method", None)
            if isinstance(method, UnquantizedEmbeddingMethod):
                method.process_weights_after_loading(module)
        gen.llm.reset_prefix_cache()

    def sync_weights(trl_sync: Any) -> None:
        (reload_on_cpu if on_cpu else trl_sync)()
        gen.llm.llm_engine.reset_encoder_cache()

    replace_vllm_sync(gen, sync_weights)
