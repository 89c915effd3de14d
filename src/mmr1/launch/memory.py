"""Memory before money: what one trainer GPU holds for the planned layout, printed by the dry run.

``estimate_memory(cfg)`` adds up, per trainer GPU, the model states (weights, gradients, Adam states, the
KL reference copy) as the ZeRO stage shards them, the activations of one training micro-batch under
gradient checkpointing (image tokens and the vision tower included), the LM-head working set, the
rollout's share (transformers' KV cache, or colocated vLLM's ``gpu_memory_utilization``), and compares
the peak with the GPU's memory. ``format_estimate`` renders it in a few lines; ``memory_summary`` is the
one call the dry run needs (it never raises for a model whose sizes are unknown).

Units: "GB" here is 2**30 bytes, what ``torch.cuda.max_memory_allocated() / 2**30`` and nvidia-smi's
MiB / 1024 report (an "80 GB" H100 reports 79.6 of them).

Every term is an upper-bound style estimate with its source next to it. Checked against measured peaks:
the tiny model's GRPO micro-batch on CPU (tests/launch/test_memory.py: estimate / measured 0.86 with gradient
checkpointing, 0.87 without), and on a GPU by ``benchmarks/gpu_step.py``, which prints this estimate beside
``torch.cuda.max_memory_allocated`` for the same step.

>>> arch = arch_from_config(QWEN2_5_VL_3B)
>>> arch.n_params, arch.n_params_vision
(3754622976, 668684288)
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict, dataclass
from typing import Any

GB = 2**30
FP32 = 4

# Qwen/Qwen2.5-VL-3B-Instruct config.json (the hub's published sizes; only what the count and the
# activations need, plus what benchmarks/gpu_step.py builds the random-weight model from). 3,754,622,976
# parameters by arch_from_config below, the hub's "3.75B params" (and transformers' own count on the meta
# device, tests/launch/test_memory.py).
QWEN2_5_VL_3B: dict[str, Any] = {
    "model_type": "qwen2_5_vl",
    "tie_word_embeddings": True,
    "image_token_id": 151655, "video_token_id": 151656,
    "vision_start_token_id": 151652, "vision_end_token_id": 151653,
    "bos_token_id": 151643, "eos_token_id": 151645,
    "text_config": {
        "vocab_size": 151936, "hidden_size": 2048, "num_hidden_layers": 36, "num_attention_heads": 16,
        "num_key_value_heads": 2, "intermediate_size": 11008, "max_position_embeddings": 128000,
        "rms_norm_eps": 1e-6, "tie_word_embeddings": True,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
    },
    "vision_config": {
        "depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "out_hidden_size": 2048,
        "in_channels": 3, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
        "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31], "tokens_per_second": 2,
    },
}
# Qwen/Qwen2.5-VL-7B-Instruct config.json: 8,292,166,656 parameters (the hub's "8.29B"); untied head.
QWEN2_5_VL_7B: dict[str, Any] = {
    **QWEN2_5_VL_3B,
    "tie_word_embeddings": False,
    "text_config": {**QWEN2_5_VL_3B["text_config"], "vocab_size": 152064, "hidden_size": 3584,
                    "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
                    "intermediate_size": 18944, "tie_word_embeddings": False},
    "vision_config": {**QWEN2_5_VL_3B["vision_config"], "out_hidden_size": 3584},
}
KNOWN_CONFIGS: dict[str, dict[str, Any]] = {
    "Qwen/Qwen2.5-VL-3B-Instruct": QWEN2_5_VL_3B, "Qwen/Qwen2.5-VL-3B": QWEN2_5_VL_3B,
    "Qwen/Qwen2.5-VL-7B-Instruct": QWEN2_5_VL_7B, "Qwen/Qwen2.5-VL-7B": QWEN2_5_VL_7B,
}

# The seed's prompts without their image: the R1-V system prompt (398 characters, ~90 tokens), Qwen's chat
# scaffold (~20 tokens) and the longest question, rounded up. A bound for the dry run, which reads no data;
# mmr1.data.preflight measures the real prompts (preflight.json: longest_prompt) -- pass prompt_tokens=.
PROMPT_TEXT_TOKENS = 256
# What a trainer process holds beyond its tensors: the CUDA context (~0.5 GB), NCCL communicators and their
# buffers, caching-allocator slack. An allowance, not a measurement (benchmarks/gpu_step.py reports
# max_memory_reserved next to max_memory_allocated, the allocator's share of it).
OVERHEAD_GB = 2.0
# trl/kernels/chunked_logprob.py (TRL 1.16, the fused LM head GRPOTrainer installs, add_fused_lm_head):
# logits are built in [TOKEN_CHUNK_SIZE, chunk_size] tiles, never [tokens, vocab].
TRL_TOKEN_CHUNK = 4096
TRL_VOCAB_CHUNK = 32768
# TRL's GRPOTrainer keeps vLLM asleep (level 2: weights and KV cache released, trl/generation/
# vllm_generation.py) while it trains; what an asleep engine still holds (its CUDA graphs, workspace).
VLLM_ASLEEP_GB = 1.0


class UnknownArchitecture(ValueError):
    """The model's sizes are not known here (pass ``config=`` with its config.json, or a local path)."""


@dataclass(frozen=True)
class Arch:
    """The sizes the estimate needs (a Qwen2-style decoder and, optionally, a Qwen2.5-VL vision tower)."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tied: bool
    v_depth: int = 0  # 0 = no vision tower
    v_hidden: int = 0
    v_intermediate: int = 0
    v_heads: int = 0
    v_out: int = 0
    v_in_channels: int = 3
    patch_size: int = 14
    temporal_patch: int = 2
    merge: int = 2

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def patch_values(self) -> int:
        """Numbers per vision patch in ``pixel_values``: 3 x 2 x 14 x 14 = 1176."""
        return self.v_in_channels * self.temporal_patch * self.patch_size**2

    @property
    def layer_params(self) -> int:
        # Qwen2DecoderLayer: q/k/v with bias, o without, SwiGLU gate/up/down, two RMSNorm weights.
        h, kv, i = self.hidden, self.kv_dim, self.intermediate
        return (h * h + h) + 2 * (h * kv + kv) + h * h + 3 * h * i + 2 * h

    @property
    def n_params_text(self) -> int:
        embed = self.vocab * self.hidden
        return embed * (1 if self.tied else 2) + self.layers * self.layer_params + self.hidden

    @property
    def block_params(self) -> int:
        # Qwen2_5_VLVisionBlock: fused qkv + proj (with bias), SwiGLU with bias, two RMSNorm weights.
        h, i = self.v_hidden, self.v_intermediate
        return (3 * h * h + 3 * h) + (h * h + h) + 2 * (h * i + i) + (i * h + h) + 2 * h

    @property
    def n_params_vision(self) -> int:
        if not self.v_depth:
            return 0
        h, m2 = self.v_hidden, self.merge**2
        patch_embed = self.patch_values * h  # Conv3d without bias
        merger = h + (h * m2) ** 2 + h * m2 + h * m2 * self.v_out + self.v_out  # ln_q, Linear, GELU, Linear
        return patch_embed + self.v_depth * self.block_params + merger

    @property
    def n_params(self) -> int:
        return self.n_params_text + self.n_params_vision

    def lora_params(self, r: int, vision: bool = False) -> int:
        """LoRA's A (r x in) and B (out x r) on every linear of the decoder layers (and of the vision blocks):
        ``model.lora.target_modules=['all-linear']`` (mmr1.models.lora)."""
        h, kv, i, vh, vi = self.hidden, self.kv_dim, self.intermediate, self.v_hidden, self.v_intermediate
        text = (h + h) * 2 + (h + kv) * 2 + (h + i) * 3  # q, o; k, v; gate, up, down
        blocks = (vh + 3 * vh) + (vh + vh) + (vh + vi) * 3 if vision and self.v_depth else 0  # qkv, proj, MLP
        return r * (self.layers * text + self.v_depth * blocks)


def arch_from_config(config: dict[str, Any]) -> Arch:
    """An ``Arch`` from a Hugging Face config dict (transformers 5 nests ``text_config``; 4.x was flat)."""
    model_type = config.get("model_type", "")
    text = dict(config.get("text_config") or config)
    if "hidden_size" not in text:
        raise UnknownArchitecture(f"config of model_type {model_type!r} has no hidden_size")
    tied = bool(text.get("tie_word_embeddings", config.get("tie_word_embeddings", False)))
    arch: dict[str, Any] = {
        "hidden": int(text["hidden_size"]), "layers": int(text["num_hidden_layers"]),
        "heads": int(text["num_attention_heads"]),
        "kv_heads": int(text.get("num_key_value_heads") or text["num_attention_heads"]),
        "intermediate": int(text["intermediate_size"]), "vocab": int(text["vocab_size"]), "tied": tied,
    }
    vision = config.get("vision_config")
    if vision:
        if model_type not in ("qwen2_5_vl", ""):
            raise UnknownArchitecture(f"model_type {model_type!r}: only Qwen2.5-VL's vision tower is modelled")
        arch.update(v_depth=int(vision["depth"]), v_hidden=int(vision["hidden_size"]),
                    v_intermediate=int(vision["intermediate_size"]), v_heads=int(vision["num_heads"]),
                    v_out=int(vision.get("out_hidden_size", text["hidden_size"])),
                    v_in_channels=int(vision.get("in_channels", vision.get("in_chans", 3))),
                    patch_size=int(vision.get("patch_size", 14)),
                    temporal_patch=int(vision.get("temporal_patch_size", 2)),
                    merge=int(vision.get("spatial_merge_size", 2)))
    return Arch(**arch)


def model_config(name_or_path: str) -> dict[str, Any]:
    """The config dict for ``model.name_or_path`` without loading weights or downloading anything:
    the embedded tiny model (its cached config.json, else its recipe), a known hub id, or a local dir."""
    if name_or_path == "tiny_qwen2_5_vl":
        from mmr1.models.tiny import RECIPE, cache_root, recipe_hash

        built = cache_root() / f"tiny_qwen2_5_vl-{recipe_hash(RECIPE)}" / "config.json"
        if built.exists():  # the exact vocabulary (the trained tokenizer's, <= the recipe's vocab_size)
            return json.loads(built.read_text())
        t, v = RECIPE["text"], RECIPE["vision"]
        return {"model_type": "qwen2_5_vl", "tie_word_embeddings": True,
                "text_config": {**t, "vocab_size": RECIPE["vocab_size"], "tie_word_embeddings": True},
                "vision_config": {**v, "out_hidden_size": t["hidden_size"]}}
    if name_or_path in KNOWN_CONFIGS:
        return KNOWN_CONFIGS[name_or_path]
    path = os.path.join(os.path.expanduser(name_or_path), "config.json")
    if os.path.isfile(path):
        with open(path) as f:
            return json.load(f)
    raise UnknownArchitecture(f"model {name_or_path!r}: sizes unknown offline (not a local directory with a "
                              f"config.json, not one of {sorted(KNOWN_CONFIGS)}); pass config=")


# ---------------------------------------------------------------------------------------------------------
# Activations. Bytes per token (per vision patch) of one layer's tensors that autograd keeps for the backward,
# counted from transformers' Qwen2.5-VL modules (modeling_qwen2_5_vl.py, sdpa attention), a = activation
# bytes (2 in bf16), FP32 = 4 for RMSNorm's float32 upcast:
#   2 RMSNorms          2 x (fp32 copy + normalised copy)                   2(FP32 + a) h
#   q, k, v projections q h + k, v kv                                       a (h + 2 kv)
#   rotary (q, k)       rotated copies                                      a (h + kv)
#   repeat_kv for sdpa  k, v expanded to h (GQA)                            2 a h
#   sdpa output + the contiguous copy o_proj saves                          2 a h
#   SwiGLU MLP          gate, silu(gate), up, silu(gate) * up               4 a I
# = h (2 FP32 + 8 a) + 3 a kv + 4 a I. This is Korthikanti et al. 2022 ("Reducing Activation Recomputation
# in Large Transformer Models", 34 s b h bytes per layer for GPT) redone for GQA + SwiGLU + RMSNorm, without
# their 5 a s / h attention-score term: sdpa's fused kernels keep no s x s scores.
# The backward of a layer adds its gradients in flight: gate/up/product grads (3 a I) and the hidden-size
# gradients (output grad, residual grad, input grad: 4 a h).
def _text_layer_bytes(arch: Arch, a: int) -> int:
    return arch.hidden * (2 * FP32 + 8 * a) + 3 * a * arch.kv_dim + 4 * a * arch.intermediate


def _text_backward_bytes(arch: Arch, a: int) -> int:
    return 3 * a * arch.intermediate + 4 * a * arch.hidden


# Qwen2_5_VLVisionBlock per patch: 2 RMSNorms 2(FP32 + a) vh; fused qkv 3 a vh; rotary upcasts q, k to fp32
# (apply_rotary_pos_emb_vision) 2 FP32 vh and casts back 2 a vh; attention output + proj input 2 a vh; SwiGLU
# 4 a vI. = vh (4 FP32 + 9 a) + 4 a vI; the backward adds 3 a vI + 4 a vh like the text layer.
def _vision_block_bytes(arch: Arch, a: int) -> int:
    return arch.v_hidden * (4 * FP32 + 9 * a) + 4 * a * arch.v_intermediate


def _vision_backward_bytes(arch: Arch, a: int) -> int:
    return 3 * a * arch.v_intermediate + 4 * a * arch.v_hidden


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
              images_per_prompt: int, text_tokens: int) -> tuple[int, int, int, int, list[str]]:
    """(text tokens, image tokens, completion tokens, sequence length, notes) of the longest row.

    Image tokens at ``max_pixels`` (one per 28x28 pixels after Qwen's resize, mmr1.data.images); the prompt
    is bounded by ``trainer.max_length`` (pre-flight rejects longer ones) and prompt + completion by the
    rollout context ``rollout.max_model_len`` (completions end there, mmr1.grpo_trainer). Where a bound cuts,
    each term keeps its own worst case inside it (sequence = the context, completion = what the shortest
    prompt leaves), so their sum still bounds the memory.
    """
    from mmr1.data.images import FACTOR, QWEN_MIN_PIXELS, resolve_pixel_limits

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
                  image_tokens: int | None = None, images_per_prompt: int = 1,
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
        from mmr1.launch.deepspeed import deepspeed_config

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
    text, img, completion, seq, notes = _sequence(
        cfg, max_pixels=max_pixels, prompt_tokens=prompt_tokens, image_tokens=image_tokens,
        images_per_prompt=images_per_prompt, text_tokens=text_tokens)
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
        base_linear_bytes=base_linear_bytes, adapter_act_bytes=adapter_act_bytes,
    )
    if cfg.launcher.nproc_per_node is None and "NPROC_PER_NODE" not in env and world_size is None:
        notes.append("launcher.nproc_per_node unset: estimated for 1 trainer per node (set it to the plan's)")
    return plan, notes


def estimate_plan(p: Plan) -> dict[str, Any]:
    """The estimate for a ``Plan`` (bytes converted to GB at the end); see ``estimate_memory``."""
    arch, n, w, a = p.arch, p.n_params, p.world, p.act_bytes
    zero = p.zero_stage
    cpu: dict[str, float] = {}

    # --- model states. ZeRO paper (Rajbhandari et al. 2020, sec. 3.1 and fig. 1): mixed-precision Adam holds
    # 2 (16-bit weights) + 2 (16-bit gradients) + K = 12 (fp32 master weights, momentum, variance) bytes per
    # parameter; stage 1 shards the 12, stage 2 also the gradients, stage 3 also the weights, over N ranks.
    # ZeRO-Offload (Ren et al. 2021): offload_optimizer moves the optimizer states and the fp32 gradient
    # partitions to CPU (the GPU keeps only reduce buckets); offload_param (stage 3) the 16-bit weights too.
    pb = p.param_bytes
    # LoRA: gradients and Adam states for the adapters only, the base weights frozen (4-bit under qlora, where
    # bitsandbytes quantizes the linear layers and leaves the embeddings and norms 16-bit); t = what trains.
    t = n if p.trainable is None else p.trainable
    base = float(n * pb)
    if p.base_linear_bytes:
        embed = arch.vocab * arch.hidden * (1 if arch.tied else 2)
        base = (n - embed) * p.base_linear_bytes + embed * pb
    model_bytes = base + (0 if p.trainable is None else t * pb)
    weights: float
    grads: float
    optim: float
    if zero is None:
        # No DeepSpeed: the Trainer's torch AdamW keeps exp_avg and exp_avg_sq in the parameters' dtype and no
        # master copy (model.torch_dtype bf16 => 2 + 2 + 4 bytes per parameter).
        weights, grads, optim = model_bytes, t * pb, 2 * t * pb
        if w > 1:
            # torch DDP: gradient_as_bucket_view=False (the Trainer's default) copies every gradient into its
            # communication buckets, a second gradient-sized buffer (torch.nn.parallel.DistributedDataParallel).
            grads *= 2
    else:
        opt_per_param = 12 if p.mixed_precision else 8  # fp32 training: no separate master copy (K = 8)
        weights = model_bytes / (w if zero == 3 else 1)
        grads = t * pb / (w if zero >= 2 else 1)
        optim = t * opt_per_param / (w if zero >= 1 else 1)
        if p.offload_optimizer:
            cpu["optimizer"] = optim + t * FP32 / w  # + the fp32 gradient partition CPU Adam updates from
            optim = 0.0
            grads = 0.0 if zero >= 2 else grads
        if p.offload_param:
            cpu["weights"] = weights
            weights = 0.0
    # TRL (GRPOTrainer.__init__): beta != 0 loads a frozen reference copy in the same dtype; under ZeRO-3 it is
    # wrapped by DeepSpeed (prepare_deepspeed: sharded like the policy, offloaded with it), else whole per GPU.
    reference = 0.0
    if p.reference and p.trainable is None:  # LoRA: TRL's reference is the model with its adapters disabled
        reference = n * pb / (w if zero == 3 else 1)
        if p.offload_param:
            cpu["reference"], reference = reference, 0.0

    # --- activations of one training micro-batch (TRL computes the loss on per_device_train_batch_size rows).
    b, s, c = p.micro_batch, p.seq_len, p.completion_tokens
    tokens = b * s
    h = arch.hidden
    layer, layer_bwd = _text_layer_bytes(arch, a) + p.adapter_act_bytes, _text_backward_bytes(arch, a)
    if p.gradient_checkpointing:
        # transformers checkpoints each decoder layer (GradientCheckpointingLayer): its input hidden state is
        # kept; the backward recomputes one layer at a time (Chen et al. 2016, "Training Deep Nets with
        # Sublinear Memory Cost").
        text_kept = arch.layers * tokens * h * a
        text_peak = tokens * (layer + layer_bwd)
    else:
        text_kept = arch.layers * tokens * layer
        text_peak = tokens * layer_bwd
    # Final RMSNorm, rotary cos/sin (B x S x head_dim, twice), sdpa's boolean 4-D mask with padding (B x S x S).
    text_misc = tokens * h * (FP32 + a) + 2 * tokens * arch.head_dim * FP32 + b * s * s
    patches = b * p.image_tokens * arch.merge**2
    vision_kept = vision_peak = 0.0
    if arch.v_depth and patches:
        vh, block, block_bwd = arch.v_hidden, _vision_block_bytes(arch, a), _vision_backward_bytes(arch, a)
        if p.gradient_checkpointing:  # Qwen2_5_VLVisionBlock is a GradientCheckpointingLayer too
            vision_kept = arch.v_depth * patches * vh * a
            vision_peak = patches * (block + block_bwd)
        else:
            vision_kept = arch.v_depth * patches * block
            vision_peak = patches * block_bwd
        # pixel_values (fp32 from the processor, cast to the model's dtype), the window reorder copies, the merger
        # (RMSNorm, then 4 vh -> 4 vh -> out MLP over patches / 4).
        vision_kept += patches * (arch.patch_values * (FP32 + a) + vh * (FP32 + 3 * a)) + patches * vh * 3 * a
    # LM head. TRL 1.16's fused head (trl/kernels/chunked_logprob.py): keeps the scored hidden states (N x h),
    # builds logits in [4096, 32768] tiles, and its backward accumulates fp32 grad_hidden (N x h) and grad_weight
    # (V x h) then casts both; N = completion tokens on CUDA (labels != -100), every position elsewhere.
    # Unfused (a trainer that takes model(...).logits, as older TRL releases did): the [B, C, V] logits in 16 bit
    # plus their fp32 log-softmax.
    scored = b * c if p.compact_lm_head else b * (s - 1)
    if p.fused_lm_head:
        tile = min(scored, TRL_TOKEN_CHUNK) * min(arch.vocab, TRL_VOCAB_CHUNK) * a
        lm_fwd = scored * h * a + tile
        lm_bwd = scored * h * (FP32 + a) + tile + tokens * h * a
        if p.trainable is None:  # the head's weight gradient; LoRA leaves the head frozen (needs_input_grad)
            lm_bwd += arch.vocab * h * (FP32 + a)
    else:
        lm_fwd = b * c * arch.vocab * (a + FP32)
        lm_bwd = lm_fwd + b * c * arch.vocab * FP32  # the logits' gradient
    # GRPO loss (trl GRPOTrainer._compute_loss): ~12 [B, C] fp32 tensors (logps, old, ref, ratios, clipped
    # terms, KL, entropy, masks): kilobytes to a few MB.
    loss = 12 * b * c * FP32
    # The backward's transient peak: the LM head's first, then one text layer, then one vision block (each after
    # the ones before it have been freed), on top of what the forward kept.
    kept = text_kept + text_misc + vision_kept + loss
    transient = max(lm_bwd, lm_fwd, text_peak, vision_peak)
    activations = kept + transient

    # --- ZeRO communication buffers. transformers' DeepSpeed docs: overlap_comm uses 4.5x allgather_bucket_size
    # and reduce_bucket_size (16-bit elements). ZeRO-3 also holds the parameters it gathered: the current and the
    # prefetched module (at most stage3_max_live_parameters), the largest being the embedding / LM head.
    zero_buffers = 0.0
    if zero is not None:
        if zero == 3:
            largest = max(arch.vocab * h, arch.layer_params, arch.block_params if arch.v_depth else 0)
            zero_buffers = 4.5 * p.reduce_bucket * 2 + 2 * largest * pb
        else:
            zero_buffers = 4.5 * (p.allgather_bucket + p.reduce_bucket) * 2
    # Rollout tensors kept on the device for gen_rows rows: ids, masks, logps (int64/fp32) and pixel_values.
    rollout_batch = p.gen_rows * (s * 8 * 4 + c * FP32 * 4 + p.image_tokens * arch.merge**2 * arch.patch_values * FP32)

    # --- generation phase.
    gen: dict[str, float] = {}
    if p.rollout == "hf":
        # transformers' KV cache: 2 (k, v) x layers x kv_heads x head_dim per token, for gen_rows rows of s tokens;
        # ZeRO-3 gathers the whole 16-bit model for generate (TRL unwrap_model_for_generation,
        # ds3_gather_for_generation); sampling (repetition penalty, top-k/top-p sort) over [rows, V] fp32 + int64.
        gen["kv_cache"] = p.gen_rows * s * arch.layers * 2 * arch.kv_dim * a
        if zero == 3 and p.gather_for_generation:
            gen["gathered_weights"] = n * pb - weights
        gen["sampling"] = p.gen_rows * arch.vocab * (FP32 * 2 + 8)
        gen["prefill"] = p.gen_rows * (s - c) * (2 * h + 2 * arch.kv_dim + 2 * arch.intermediate) * a
    elif p.rollout == "vllm_colocate":
        # vLLM takes gpu_memory_utilization x the GPU's memory on the trainer's own GPU (its weights, KV cache).
        gen["vllm"] = p.vllm_gpu_memory_utilization * p.gpu_memory_gb * GB
    # vllm_server: the engine runs on its own GPUs; the trainer only streams weights (ZeRO-3: one parameter
    # gathered at a time, trl/generation/vllm_generation.py), nothing of note.

    static = weights + grads + optim + reference + rollout_batch + p.overhead_gb * GB
    train_phase = static + activations + zero_buffers
    vllm_during_training = 0.0
    if p.rollout == "vllm_colocate":
        vllm_during_training = VLLM_ASLEEP_GB * GB if p.vllm_sleep else gen["vllm"]
        train_phase += vllm_during_training
    gen_phase = static + sum(gen.values())
    peak = max(train_phase, gen_phase)

    server = None
    if p.rollout == "vllm_server":
        share = p.vllm_gpu_memory_utilization * p.gpu_memory_gb * GB
        server_weights = n * 2 / p.vllm_tp  # vLLM serves in 16 bit
        kv_per_token = arch.layers * 2 * arch.kv_dim * 2 / p.vllm_tp
        kv = max(0.0, share - server_weights - OVERHEAD_GB * GB)
        server = {"gpus": p.server_gpus, "per_gpu_gb": share / GB, "weights_gb": server_weights / GB,
                  "kv_cache_gb": kv / GB, "sequences_at_full_length": int(kv // max(1, kv_per_token * s))}

    def g(x: float) -> float:
        return round(x / GB, 3)

    raw = {
        "weights": weights, "gradients": grads, "optimizer": optim, "reference": reference,
        "activations": activations, "zero_buffers": zero_buffers, "rollout_batch": rollout_batch,
        "vllm": vllm_during_training, "overhead": p.overhead_gb * GB,
    }
    components = {k: g(v) for k, v in raw.items()}
    detail = {
        "text_checkpoints" if p.gradient_checkpointing else "text_layers": g(text_kept),
        "text_misc": g(text_misc), "vision": g(vision_kept), "loss": g(loss),
        "backward_transient": g(transient),
        "lm_head": g(max(lm_fwd, lm_bwd)), "one_text_layer": g(text_peak), "one_vision_block": g(vision_peak),
        "unfused_logits": g(b * c * arch.vocab * (a + FP32)),
    }
    plan = asdict(p)
    plan.pop("arch")
    return {
        "n_params": n, "n_params_text": arch.n_params_text, "n_params_vision": arch.n_params_vision,
        "plan": plan,
        "trainer_gpu_gb": components,
        "trainer_gpu_bytes": {k: int(v) for k, v in raw.items()},
        "activations_gb": detail,
        "generation_gb": {k: g(v) for k, v in gen.items()},
        "train_phase_gb": g(train_phase), "generation_phase_gb": g(gen_phase),
        "peak_gb": g(peak), "gpu_memory_gb": p.gpu_memory_gb,
        "fits": peak <= p.gpu_memory_gb * GB, "headroom_gb": round(p.gpu_memory_gb - peak / GB, 3),
        "cpu_offload_gb_per_node": g(sum(cpu.values()) * p.nproc_per_node),
        "vllm_server": server,
        "notes": [],
    }


def estimate_memory(cfg: Any, *, gpu_memory_gb: float = 80.0, n_params: int | None = None,
                    config: dict | None = None, **kwargs: Any) -> dict[str, Any]:
    """Memory per trainer GPU for the composed config's layout, in GB (2**30 bytes).

    ``n_params`` overrides the parameter count (sizes still come from the architecture); ``config`` is a
    Hugging Face config dict to use instead of ``model.name_or_path``'s. Further keywords (``plan_from_cfg``):
    ``max_pixels`` (default: the resolved model.max_pixels), ``prompt_tokens`` / ``image_tokens`` (measured,
    e.g. preflight.json's longest prompt), ``text_tokens`` (prompt text without images, default 256),
    ``images_per_prompt``, ``world_size``, ``env``.

    Returns ``trainer_gpu_gb`` (the components of the training phase; ``trainer_gpu_bytes`` unrounded),
    ``activations_gb`` (their detail),
    ``generation_gb``, ``train_phase_gb``, ``generation_phase_gb``, ``peak_gb`` (the larger), ``fits`` and
    ``headroom_gb`` against ``gpu_memory_gb``, ``cpu_offload_gb_per_node``, ``vllm_server`` (its own GPUs),
    ``plan`` (every input) and ``notes``.
    """
    plan, notes = plan_from_cfg(cfg, gpu_memory_gb=gpu_memory_gb, n_params=n_params, config=config, **kwargs)
    est = estimate_plan(plan)
    est["model"] = str(cfg.model.name_or_path)
    est["notes"] = notes
    return est


def _fmt(x: float) -> str:
    return f"{x:.1f}" if x >= 0.05 or x == 0 else f"{x:.2f}" if x >= 0.005 else "<0.01"


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.2f}M"


def format_estimate(est: dict[str, Any]) -> str:
    """A few lines for the dry run: GB per trainer GPU by component, the peak, and whether it fits."""
    p, c, act = est["plan"], est["trainer_gpu_gb"], est["activations_gb"]
    zero = f"ZeRO-{p['zero_stage']}" if p["zero_stage"] is not None else ("DDP" if p["world"] > 1 else "no ZeRO")
    if p["offload_optimizer"] or p["offload_param"]:
        zero += " offload " + "+".join(k for k, on in (("optimizer", p["offload_optimizer"]),
                                                     ("params", p["offload_param"])) if on)
    dtype = {2: "16-bit", 4: "fp32"}[p["param_bytes"]]
    gc = "checkpointed" if p["gradient_checkpointing"] else "no checkpointing"
    lines = [
        f"memory estimate per trainer GPU ({p['world']} trainer{'s' if p['world'] > 1 else ''}, {zero}, {dtype} "
        f"weights; {est.get('model', '?')}, {_count(est['n_params'])} params"
        + (f", {_count(p['trainable'])} trainable ({100 * p['trainable'] / est['n_params']:.2f}%, LoRA"
           + (", 4-bit base" if p["base_linear_bytes"] else "") + ")" if p["trainable"] is not None else "") + "):",
        "  " + " | ".join(f"{k.replace('_', ' ')} {_fmt(c[k])}" for k in
                          ("weights", "gradients", "optimizer", "reference", "zero_buffers", "overhead")),
        f"  activations {_fmt(c['activations'])} GB ({gc}; micro-batch {p['micro_batch']} x {p['seq_len']} tokens "
        f"= {p['text_tokens']} text + {p['image_tokens']} image + {p['completion_tokens']} completion; "
        f"layers {_fmt(act.get('text_checkpoints', act.get('text_layers', 0)))}, vision {_fmt(act['vision'])}, "
        f"backward peak {_fmt(act['backward_transient'])}, LM head {_fmt(act['lm_head'])})",
    ]
    if p["rollout"] == "vllm_server":
        s = est["vllm_server"]
        lines.append(f"  rollout: vLLM server on {s['gpus']} other GPU(s), {p['vllm_gpu_memory_utilization']} x "
                     f"{est['gpu_memory_gb']:g} = {_fmt(s['per_gpu_gb'])} GB each ({_fmt(s['kv_cache_gb'])} GB KV "
                     f"cache, ~{s['sequences_at_full_length']} full-length sequences)")
    elif p["rollout"] == "vllm_colocate":
        gen = est["generation_gb"]["vllm"]
        lines.append(f"  rollout: colocated vLLM {_fmt(gen)} GB ({p['vllm_gpu_memory_utilization']} x "
                     f"{est['gpu_memory_gb']:g}) on each trainer GPU"
                     + (f", asleep while training ({_fmt(c['vllm'])} GB)" if p["vllm_sleep"]
                        else ", also while training"))
    else:
        gen = est["generation_gb"]
        lines.append(f"  rollout: transformers generate, {p['gen_rows']} rows: KV cache {_fmt(gen['kv_cache'])} GB"
                     + (f", ZeRO-3 gathers the weights (+{_fmt(gen['gathered_weights'])} GB)"
                        if "gathered_weights" in gen else ""))
    lines.append(f"  train phase {_fmt(est['train_phase_gb'])} GB, generation phase "
                 f"{_fmt(est['generation_phase_gb'])} GB -> peak {_fmt(est['peak_gb'])} GB"
                 + (f"; CPU offload {_fmt(est['cpu_offload_gb_per_node'])} GB per node"
                    if est["cpu_offload_gb_per_node"] else ""))
    lines.append(f"  fits {est['gpu_memory_gb']:g} GB: {'yes' if est['fits'] else 'NO'} "
                 f"(headroom {est['headroom_gb']:.1f} GB)")
    lines += [f"  note: {n}" for n in est.get("notes", [])]
    return "\n".join(lines)


def memory_summary(cfg: Any, **kwargs: Any) -> str:
    """``format_estimate(estimate_memory(cfg, **kwargs))``, or one line saying why there is no estimate."""
    try:
        return format_estimate(estimate_memory(cfg, **kwargs))
    except UnknownArchitecture as err:
        return f"memory estimate: none ({err})"


__all__ = [
    "GB", "KNOWN_CONFIGS", "QWEN2_5_VL_3B", "QWEN2_5_VL_7B", "Arch", "Plan", "UnknownArchitecture",
    "arch_from_config", "estimate_memory", "estimate_plan", "format_estimate", "memory_summary",
    "model_config", "plan_from_cfg",
]
