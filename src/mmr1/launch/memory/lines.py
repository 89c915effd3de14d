"""The estimate in a few printed lines, for the dry run."""

from __future__ import annotations

from typing import Any

from mmr1.launch.memory.arch import UnknownArchitecture
from mmr1.launch.memory.estimate import estimate_memory
from mmr1.models.parts import describe


def _fmt(x: float) -> str:
    return f"{x:.1f}" if x >= 0.05 or x == 0 else f"{x:.2f}" if x >= 0.005 else "<0.01"


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.2f}M"


def _parts_line(est: dict[str, Any]) -> list[str]:
    """Full fine-tuning: parameters and what trains, per part (the seed froze the vision tower and merger)."""
    p = est["plan"]
    if p["trainable"] is not None:  # LoRA: the header gives the adapters' count
        return []
    aligner, vision = est["n_params_aligner"], est["n_params_vision"]
    counts = {"language_model": (est["n_params_text"], est["n_params_text"]),
              "vision_tower": (vision - aligner, (vision - aligner) if p["vision_trains"] else 0),
              "aligner": (aligner, aligner if p["aligner_trains"] else 0)}
    frozen = [k for k, on in (("model.freeze_vision_tower", not p["vision_trains"]),
                              ("model.freeze_aligner", not p["aligner_trains"])) if on]
    return [f"  parameters: {describe(counts)}" + (f" ({', '.join(frozen)})" if frozen else "")]


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
        *_parts_line(est),
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
