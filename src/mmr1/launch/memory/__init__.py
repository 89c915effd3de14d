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

The package: ``arch`` (model sizes from config.json), ``inputs`` (the plan read from a config),
``estimate`` (the terms), ``report`` (the lines).
"""

from mmr1.launch.memory.arch import (
    GB,
    KNOWN_CONFIGS,
    QWEN2_5_VL_3B,
    QWEN2_5_VL_7B,
    Arch,
    UnknownArchitecture,
    arch_from_config,
    model_config,
)
from mmr1.launch.memory.estimate import estimate_memory, estimate_plan
from mmr1.launch.memory.inputs import Plan, plan_from_cfg
from mmr1.launch.memory.lines import format_estimate, memory_summary

__all__ = [
    "GB", "KNOWN_CONFIGS", "QWEN2_5_VL_3B", "QWEN2_5_VL_7B", "Arch", "Plan", "UnknownArchitecture",
    "arch_from_config", "estimate_memory", "estimate_plan", "format_estimate", "memory_summary",
    "model_config", "plan_from_cfg",
]
