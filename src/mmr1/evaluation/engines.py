"""Who generates an evaluation's completions: vLLM in this process (``eval.backend=vllm``; ``auto`` picks it whenever
vLLM is installed, its CPU build included), a running vLLM server (``eval.server_url``), or transformers' ``generate``
(``hf``). Each is ``gen(rows, *, n, do_sample, max_new_tokens, temperature, top_p, top_k)`` returning
``[{"text", "length", "truncated"}, ...]`` per row (mmr1.models.generation's shape), so the scoring never knows.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from mmr1.data.images import FACTOR, PixelLimits
from mmr1.models import load_processor
from mmr1.models.generation import generate, row_images, server_generate
from mmr1.rollout.tools.settings import tool_runner
from mmr1.rollout.tools.template import enable_tools
from mmr1.rollout.tools.transcripts import generate_with_tools
from mmr1.rollout.vllm_engine import engine_options, vllm_build, with_clips

log = logging.getLogger("mmr1.evaluate")
BACKENDS = ("auto", "hf", "vllm")


def backend(ev: DictConfig) -> str:
    """``hf``, ``vllm`` or ``server``: what ``eval.backend`` (and ``eval.server_url``) resolve to here."""
    if ev.backend not in BACKENDS:
        raise ValueError(f"eval.backend={ev.backend!r}: one of {list(BACKENDS)}")
    if ev.server_url:
        return "server"
    if ev.backend == "vllm" and vllm_build() is None:
        raise ImportError("eval.backend=vllm: vLLM is not installed (pip install 'mmr1[gpu]', or on a CPU its CPU "
                          "build: README 'vLLM on a CPU'); eval.backend=hf generates with transformers")
    return "vllm" if ev.backend == "vllm" or (ev.backend == "auto" and vllm_build()) else "hf"


def make_generator(cfg: DictConfig, model_path: str, proc_path: str, limits: PixelLimits, *, max_new: int,
                   images_per_prompt: int = 1, videos_per_prompt: int = 0) -> Any:
    ev = cfg.eval
    kind = backend(ev)
    processor = load_processor(proc_path, min_pixels=limits.min_pixels, max_pixels=limits.max_pixels,
                               trust_remote_code=cfg.model.trust_remote_code)
    runner = tool_runner(cfg, limits)
    if runner is not None:  # rollout.tools: the tools run between turns, in transformers' generate
        if kind != "hf" and (ev.backend != "auto" or ev.server_url):
            raise ValueError("rollout.tools: mmr1.evaluate runs the tool loop with transformers only "
                             "(eval.backend=hf; its vLLM and server engines generate single turns)")
        kind = "hf"
    if kind == "server":
        from trl.generation.vllm_client import VLLMClient

        client = VLLMClient(base_url=str(ev.server_url), connection_timeout=cfg.rollout.server_timeout_s)
        return functools.partial(server_generate, client, processor)
    if kind == "vllm":
        engine = _engine(cfg, model_path, proc_path, limits, max_new, images_per_prompt, videos_per_prompt)
        return functools.partial(vllm_generate, engine, processor)
    import torch

    from mmr1.models import load_model

    device = ("cuda" if torch.cuda.is_available() else "cpu") if ev.device == "auto" else ev.device
    model = load_model(model_path, cfg.model).to(device).eval()
    if runner is not None:
        return functools.partial(generate_with_tools, model, enable_tools(processor), runner)
    return functools.partial(generate, model, processor, video=cfg.model.video)


def _engine(cfg: DictConfig, model_path: str, proc_path: str, limits: PixelLimits, max_new: int,
            images: int, videos: int) -> Any:
    """``vllm.LLM`` on the evaluated weights, with the run's dtype and engine settings (mmr1.rollout.vllm_engine)
    and the evaluation's image limits; the context fits the largest image, a prompt's text and ``max_new``."""
    from vllm import LLM

    options = engine_options(cfg)
    options["mm_processor_kwargs"] = {"min_pixels": limits.min_pixels, "max_pixels": limits.max_pixels}
    max_len = cfg.eval.max_model_len or max_new + limits.max_pixels // (FACTOR * FACTOR) + 1024
    model_max = _max_positions(Path(model_path))
    if model_max is not None:
        max_len = min(max_len, model_max)
    log.info("eval: vLLM engine on %s (max_model_len %d, %s)", model_path, max_len, options)
    # The run's memory share (rollout.gpu_memory_utilization; on vLLM's CPU build the share of host memory it
    # reserves at start, whose own default of 0.92 fails beside any other process).
    return LLM(model=model_path, tokenizer=proc_path, seed=int(cfg.eval.seed), max_model_len=int(max_len),
               gpu_memory_utilization=float(cfg.rollout.gpu_memory_utilization),
               limit_mm_per_prompt={"image": max(1, images), "video": videos}, **options)


def _max_positions(model_dir: Path) -> int | None:
    """The checkpoint's context (``text_config.max_position_embeddings``; a hub id: None, vLLM knows it)."""
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except OSError:
        return None
    value = (config.get("text_config") or {}).get("max_position_embeddings", config.get("max_position_embeddings"))
    return int(value) if value else None


def _media(row: dict) -> dict[str, Any]:
    """A row's images, and its clips as (frames, metadata) pairs (mmr1.rollout.vllm_engine.with_clips's form)."""
    images = row_images(row)
    media = {"image": images} if images else {}
    return with_clips([{"multi_modal_data": media}], [list(row.get("videos") or [])])[0]["multi_modal_data"]


def vllm_generate(llm: Any, processor: Any, rows: list[dict], *, n: int, do_sample: bool, max_new_tokens: int,
                  temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0) -> list[list[dict]]:
    """One batched ``LLM.generate``: the chat-templated text with its one placeholder per image, and the images
    (vLLM expands the placeholders itself). Greedy is temperature 0. A completion's length counts its end-of-turn
    token (vLLM keeps the stop token id), as mmr1.models.generation counts; ``length`` finish = truncated."""
    from vllm import SamplingParams

    params = SamplingParams(n=n, max_tokens=max_new_tokens, temperature=temperature if do_sample else 0.0,
                            top_p=top_p if do_sample else 1.0, top_k=(top_k or -1) if do_sample else -1)
    prompts = [{"prompt": processor.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=False),
                "multi_modal_data": _media(r)} for r in rows]
    outs = llm.generate(prompts, params, use_tqdm=False)
    return [[{"text": o.text, "length": len(o.token_ids), "truncated": o.finish_reason == "length"}
             for o in out.outputs] for out in outs]
