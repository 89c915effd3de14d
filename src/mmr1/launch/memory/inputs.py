"""What the estimate is computed from: a ``Plan`` of sizes and counts, read from a composed config."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any

from mmr1.config.typed import typed_config
from mmr1.data.config import VideoConfig
from mmr1.data.images import FACTOR, QWEN_MIN_PIXELS, resolve_pixel_limits
from mmr1.data.videos import clip_token_bound
from mmr1.launch.deepspeed import deepspeed_config
from mmr1.launch.memory.arch import Arch, arch_from_config, model_config

# The seed's prompts without their image: the R1-V system prompt (398 characters, ~90 tokens), Qwen's chat
# scaffold (~20 tokens) and the longest question, rounded up. A bound for the dry run, which reads no data;
# mmr1.data.preflight measures the real prompts (preflight.json: longest_prompt) -- pass prompt_tokens=.
PROMPT_TEXT_TOKENS = 256
# What a trainer process holds beyond its tensors: the CUDA context (~0.5 GB), NCCL communicators and their
# buffers, caching-allocator slack. An allowance, not a measurement (benchmarks/gpu_step.py reports
# max_memory_reserved next to max_memory_allocated, the allocator's share of it).
OVERHEAD_GB = 2.0

@dataclass(frozen=True)
class Plan:
    """The numbers the estimate is computed from (``plan_from_cfg`` fills it from a composed config)."""

    arch: Arch
    n_params: int
    world: int  # trainer processes over all nodes (what ZeRO shards by)
    nproc_per_node: int
    param_bytes: int  # weights on the GPU: 2 (bf16/fp16) or 4
    act_bytes: int  # activations: 2 under bf16/fp16 autocast or a 16-bit model, else 4
    zero_stage: int | None  # None = no DeepSpeed (torch DDP across processes, or one process)
    offload_optimizer: bool
    offload_param: bool
    mixed_precision: bool  # DeepSpeed bf16/fp16: fp32 master weights inside the optimizer
    reference: bool  # beta != 0: TRL keeps a frozen reference model
    micro_batch: int  # rows per forward/backward (per_device_train_batch_size)
    gen_rows: int  # rows one device generates per rollout (per_device x steps_per_generation)
    text_tokens: int  # prompt text tokens (no image)
    image_tokens: int  # LM image tokens per row (all its images)
    completion_tokens: int
    seq_len: int  # prompt + completion, within the context
    gradient_checkpointing: bool
    rollout: str  # "hf" | "vllm_colocate" | "vllm_server"
    vllm_gpu_memory_utilization: float = 0.0
    vllm_sleep: bool = False
    server_gpus: int = 0
    vllm_tp: int = 1
    gather_for_generation: bool = True
    fused_lm_head: bool = True  # TRL 1.16's GRPOTrainer (add_fused_lm_head); False: full [B, C, V] logits
    compact_lm_head: bool = True  # CUDA: only completion positions are scored; elsewhere every position
    # LoRA/QLoRA (model.train_type): the adapters' parameter count (None = full fine-tuning: all n_params train),
    # and bytes per frozen base weight of the linear layers (0 = param_bytes; qlora: 4-bit NF4 + its constants).
    trainable: int | None = None
    # Full fine-tuning (model.freeze_vision_tower / freeze_aligner, mmr1.models.parts): whether the vision tower
    # (patch embedding + blocks) and its aligner (the merger) train; frozen parts keep weights, no grads or Adam.
    vision_trains: bool = True
    aligner_trains: bool = True
    base_linear_bytes: float = 0.0
    adapter_act_bytes: int = 0  # per token and decoder layer: what the LoRA layers keep for their backward
    allgather_bucket: float = 2e8
    reduce_bucket: float = 0.0
    overhead_gb: float = OVERHEAD_GB
    gpu_memory_gb: float = 80.0


def _world(cfg: Any, env: dict[str, str]) -> tuple[int, int]:
    lc = cfg.launcher
    nproc = lc.nproc_per_node if lc.nproc_per_node is not None else int(env.get("NPROC_PER_NODE") or 1)
    nnodes = lc.nnodes if lc.nnodes is not None else int(env.get("NNODES") or 1)
    return int(nproc), int(nproc) * int(nnodes)


def _gen_rows(t: Any, world: int) -> int:
    """Rows one device generates per rollout: TRL's generation batch (GRPOConfig.__post_init__) / processes."""
    extra = t.get("extra") or {}
    if extra.get("generation_batch_size") is not None:
        return max(1, int(extra["generation_batch_size"]) // world)
    steps = int(extra.get("steps_per_generation") or t.gradient_accumulation_steps)
    return int(t.per_device_train_batch_size) * steps


def _sequence(cfg: Any, *, max_pixels: int | None, prompt_tokens: int | None, image_tokens: int | None,
              images_per_prompt: int, text_tokens: int,
              videos_per_prompt: int = 0) -> tuple[int, int, int, int, list[str]]:
    """(text tokens, image tokens, completion tokens, sequence length, notes) of the longest row.

    Image tokens at ``max_pixels`` (one per 28x28 pixels after Qwen's resize, mmr1.data.images); the prompt
    is bounded by ``trainer.max_length`` (pre-flight rejects longer ones) and prompt + completion by the
    rollout context ``rollout.max_model_len`` (completions end there, mmr1.trainer.grpo). Where a bound cuts,
    each term keeps its own worst case inside it (sequence = the context, completion = what the shortest
    prompt leaves), so their sum still bounds the memory.
    """
    notes: list[str] = []
    t = cfg.trainer
    completion = int(t.max_completion_length)
    if prompt_tokens is not None:  # measured (preflight.json longest_prompt): text + image tokens
        img = int(image_tokens) if image_tokens is not None else 0
        text = max(0, int(prompt_tokens) - img)
    else:
        if max_pixels is None:
            with warnings.catch_warnings():  # the dry run already warned about config-vs-env clashes
                warnings.simplefilter("ignore")
                max_pixels = resolve_pixel_limits(cfg.model.max_pixels, cfg.model.min_pixels).max_pixels
        per_image = max_pixels // (FACTOR * FACTOR)
        img = per_image * images_per_prompt if image_tokens is None else int(image_tokens)
        if videos_per_prompt and image_tokens is None:  # clips at their budget's bound (mmr1.data.videos)
            img += videos_per_prompt * clip_token_bound(typed_config(VideoConfig, cfg.model.get("video"),
                                                                     key="model.video"))
        text = text_tokens
    prompt = text + img
    max_length = t.get("max_length")
    if max_length is not None and prompt > max_length:
        notes.append(f"prompt bound {prompt} tokens > trainer.max_length {max_length}: capped (pre-flight "
                     "rejects longer prompts)")
        prompt = int(max_length)
    context = cfg.rollout.get("max_model_len")
    seq = prompt + completion
    if context is not None and seq > context:
        shortest = text + images_per_prompt * (QWEN_MIN_PIXELS // (FACTOR * FACTOR))
        notes.append(f"prompt {prompt} + completion {completion} > rollout.max_model_len {context}: sequences "
                     f"end at the context (completions at most {max(1, context - shortest)} tokens)")
        seq = int(context)
        prompt = min(prompt, seq - 1)
        completion = max(1, min(completion, context - shortest))
    img = max(0, min(img, prompt - min(text, prompt)))
    return text, img, completion, seq, notes


def plan_from_cfg(cfg: Any, *, gpu_memory_gb: float = 80.0, n_params: int | None = None,
                  config: dict | None = None, max_pixels: int | None = None, prompt_tokens: int | None = None,
                  image_tokens: int | None = None, images_per_prompt: int = 1, videos_per_prompt: int = 0,
                  text_tokens: int = PROMPT_TEXT_TOKENS, world_size: int | None = None,
                  env: dict[str, str] | None = None) -> tuple[Plan, list[str]]:
    env = dict(os.environ if env is None else env)
    arch = arch_from_config(config if config is not None else model_config(cfg.model.name_or_path))
    nproc, world = _world(cfg, env)
    if world_size is not None:
        world = int(world_size)
        nproc = min(nproc, world)
    t, ds, r = cfg.trainer, cfg.deepspeed, cfg.rollout
    torch_bytes = 4 if str(cfg.model.torch_dtype) in ("float32", "fp32") else 2
    half = bool(t.bf16) or bool(t.get("fp16", False))
    zero = int(ds.stage) if ds.enabled else None
    ds_half = half
    reduce_bucket, allgather_bucket = float(arch.hidden**2), 2e8
    if zero is not None:
        dsc = deepspeed_config(ds)
        bf16 = dsc.get("bf16", {}).get("enabled", "auto")
        ds_half = half if bf16 == "auto" else bool(bf16)
        zo = dsc["zero_optimization"]
        # transformers' DeepSpeed integration fills reduce_bucket_size "auto" with hidden_size**2.
        if not isinstance(zo.get("reduce_bucket_size", "auto"), str):
            reduce_bucket = float(zo["reduce_bucket_size"])
        allgather_bucket = float(zo.get("allgather_bucket_size", allgather_bucket))
    # DeepSpeed casts the module to bf16/fp16 when enabled; otherwise the weights are in model.torch_dtype.
    param_bytes = 2 if (zero is not None and ds_half) else torch_bytes
    act_bytes = 2 if (half or param_bytes == 2) else 4
    tool_calls = int(r.get("max_tool_calls") or 0) if r.get("tools") else 0
    if tool_calls and image_tokens is None:
        # rollout.tools: each call may return an image (at most model.max_pixels: mmr1.rollout.tools.settings) that
        # the trainer's forward encodes. Counted as prompt images: their tokens, inside max_completion_length already,
        # count twice in the sequence, an over-estimate of at most max_tool_calls images.
        images_per_prompt += tool_calls
    text, img, completion, seq, notes = _sequence(
        cfg, max_pixels=max_pixels, prompt_tokens=prompt_tokens, image_tokens=image_tokens,
        images_per_prompt=images_per_prompt, text_tokens=text_tokens, videos_per_prompt=videos_per_prompt)
    trainable, base_linear_bytes, adapter_act_bytes = None, 0.0, 0
    if cfg.model.train_type in ("lora", "qlora"):
        lora = cfg.model.lora
        trainable = arch.lora_params(int(lora.r), vision=bool(lora.vision_tower))
        if list(lora.target_modules) != ["all-linear"]:
            notes.append(f"model.lora.target_modules={list(lora.target_modules)}: adapters counted as all-linear's")
        # bitsandbytes NF4: 4 bits + one fp32 absmax per 64 weights, double-quantized to 8 bits (+ fp32 per 256).
        base_linear_bytes = 0.5 + (1 + 4 / 256) / 64 if cfg.model.train_type == "qlora" else 0.0
        # peft's Linear keeps A's output (r) of each of the 7 adapted linears and, with dropout, its own dropped
        # copy of each input (q, k, v, o, gate, up: h each; down: i) with torch's bool mask: measured on the tiny
        # model's micro-batch, full 337 MiB -> LoRA 407 MiB above the weights (benchmarks/lora.py).
        adapter_act_bytes = 7 * int(lora.r) * act_bytes
        if float(lora.dropout) > 0:
            adapter_act_bytes += (6 * arch.hidden + arch.intermediate) * (act_bytes + 1)
    full = cfg.model.train_type == "full"
    if r.backend == "vllm":
        rollout = "vllm_server" if r.vllm_mode == "server" else "vllm_colocate"
    else:
        rollout = "hf"
    plan = Plan(
        arch=arch, n_params=int(n_params) if n_params is not None else arch.n_params, world=world,
        nproc_per_node=nproc, param_bytes=param_bytes, act_bytes=act_bytes, zero_stage=zero,
        offload_optimizer=zero is not None and bool(ds.offload_optimizer),
        offload_param=zero == 3 and bool(ds.offload_param), mixed_precision=zero is not None and ds_half,
        reference=float(t.beta) != 0.0, micro_batch=int(t.per_device_train_batch_size),
        gen_rows=_gen_rows(t, world), text_tokens=text, image_tokens=img, completion_tokens=completion,
        seq_len=seq, gradient_checkpointing=bool(t.gradient_checkpointing), rollout=rollout,
        vllm_gpu_memory_utilization=float(r.gpu_memory_utilization), vllm_sleep=bool(r.enable_sleep_mode),
        server_gpus=int(r.server_gpus), vllm_tp=int(r.tensor_parallel_size),
        gather_for_generation=bool(ds.get("gather_for_generation", True)), allgather_bucket=allgather_bucket,
        reduce_bucket=reduce_bucket, gpu_memory_gb=float(gpu_memory_gb), trainable=trainable,
        vision_trains=not (full and bool(cfg.model.get("freeze_vision_tower", False))),
        aligner_trains=not (full and bool(cfg.model.get("freeze_aligner", False))),
        base_linear_bytes=base_linear_bytes, adapter_act_bytes=adapter_act_bytes,
    )
    if cfg.launcher.nproc_per_node is None and "NPROC_PER_NODE" not in env and world_size is None:
        notes.append("launcher.nproc_per_node unset: estimated for 1 trainer per node (set it to the plan's)")
    return plan, notes
