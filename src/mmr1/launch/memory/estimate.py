"""The estimate itself: per trainer GPU, model states by ZeRO stage, activations, LM head, rollout share.

Every term is an upper-bound style estimate with its source next to it (mmr1.launch.memory says how it
was checked against measured peaks).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from mmr1.launch.memory.arch import FP32, GB, Arch
from mmr1.launch.memory.inputs import OVERHEAD_GB, Plan, plan_from_cfg

# trl/kernels/chunked_logprob.py (TRL 1.16, the fused LM head GRPOTrainer installs, add_fused_lm_head):
# logits are built in [TOKEN_CHUNK_SIZE, chunk_size] tiles, never [tokens, vocab].
TRL_TOKEN_CHUNK = 4096
TRL_VOCAB_CHUNK = 32768
# TRL's GRPOTrainer keeps vLLM asleep (level 2: weights and KV cache released, trl/generation/
# vllm_generation.py) while it trains; what an asleep engine still holds (its CUDA graphs, workspace).
VLLM_ASLEEP_GB = 1.0


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


def frozen_params(p: Plan) -> int:
    """Parameters a full fine-tune keeps frozen: the vision tower and/or its aligner (mmr1.models.parts)."""
    tower = p.arch.n_params_vision - p.arch.n_params_aligner
    return (0 if p.vision_trains else tower) + (0 if p.aligner_trains else p.arch.n_params_aligner)


# One derivation read top to bottom, each term cited where it is computed; its branches are the layouts it covers
# (ZeRO stage, offload, LoRA, checkpointing, rollout backend), and splitting it would pass a dozen terms around.
def estimate_plan(p: Plan) -> dict[str, Any]:  # noqa: C901
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
    t = n - frozen_params(p) if p.trainable is None else p.trainable
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
    # A frozen tower (full fine-tuning with model.freeze_vision_tower) runs without autograd: its pixel_values
    # need no gradient, so it keeps nothing for the backward; a frozen merger behind it keeps nothing either.
    vision_grad = p.vision_trains or p.trainable is not None
    vh = arch.v_hidden
    merger_kept = patches * vh * (FP32 + a) + patches * vh * 3 * a  # the merger: its RMSNorm, then 4 vh -> 4 vh -> out
    if arch.v_depth and patches and vision_grad:
        block, block_bwd = _vision_block_bytes(arch, a), _vision_backward_bytes(arch, a)
        if p.gradient_checkpointing:  # Qwen2_5_VLVisionBlock is a GradientCheckpointingLayer too
            vision_kept = arch.v_depth * patches * vh * a
            vision_peak = patches * (block + block_bwd)
        else:
            vision_kept = arch.v_depth * patches * block
            vision_peak = patches * block_bwd
        # pixel_values (fp32 from the processor, cast to the model's dtype), the window reorder copies, the merger.
        vision_kept += patches * (arch.patch_values * (FP32 + a) + 2 * a * vh) + merger_kept
    elif arch.v_depth and patches and p.aligner_trains:
        vision_kept = merger_kept  # a frozen tower, a training merger: only the merger keeps activations
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
        "n_params_aligner": arch.n_params_aligner, "n_trainable": t,
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
    ``images_per_prompt``, ``videos_per_prompt`` (clips, each at its ``model.video`` budget's bound; measured
    ``image_tokens`` count a row's clips too), ``world_size``, ``env``.

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
