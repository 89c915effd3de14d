"""The DeepSpeed JSON that accelerate and the Trainer read (``run_dir/deepspeed.json``).

Built from ``cfg.deepspeed`` (conf/deepspeed/*.yaml). DeepSpeed itself is not imported here: writing
the file needs none, and the CPU path never installs it (optional extra ``[gpu]``).
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mmr1.launch.layout import in_launched_rank
from mmr1.tracking.run_dir import write_atomic

FILENAME = "deepspeed.json"


def _bool_or_auto(value: Any) -> bool | str:
    text = str(value).strip().lower()
    if text == "auto":
        return "auto"
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ValueError(f"deepspeed.bf16 must be auto, true or false, got {value!r}")


def _merge(base: dict, extra: dict) -> dict:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def deepspeed_config(ds: DictConfig) -> dict[str, Any]:
    """The DeepSpeed config dict for ``cfg.deepspeed``.

    "auto" values are filled in by transformers' DeepSpeed integration from the TrainingArguments
    (batch sizes, accumulation, clipping, optimizer, precision), so they cannot drift from grpo_args.json.

    >>> from omegaconf import OmegaConf
    >>> c = deepspeed_config(OmegaConf.create({"enabled": True, "stage": 3, "offload_optimizer": True}))
    >>> c["zero_optimization"]["stage"], c["zero_optimization"]["offload_optimizer"]["device"]
    (3, 'cpu')
    """
    stage = int(ds.stage)
    if stage not in (0, 1, 2, 3):
        raise ValueError(f"deepspeed.stage must be 0..3, got {stage}")
    if (ds.get("offload_param", False)) and stage != 3:
        raise ValueError(f"deepspeed.offload_param needs ZeRO stage 3, got stage {stage}")
    zero: dict[str, Any] = {
        "stage": stage,
        "overlap_comm": bool(ds.get("overlap_comm", True)),
        "contiguous_gradients": bool(ds.get("contiguous_gradients", True)),
        "reduce_bucket_size": "auto",
    }
    if stage == 2:
        zero.update(allgather_partitions=True, allgather_bucket_size=2e8, reduce_scatter=True)
    if stage == 3:
        zero.update(
            stage3_prefetch_bucket_size="auto",
            stage3_param_persistence_threshold="auto",
            sub_group_size=1e9,
            stage3_max_live_parameters=1e9,
            stage3_max_reuse_distance=1e9,
            stage3_gather_16bit_weights_on_model_save=bool(ds.get("gather_16bit_weights_on_model_save", True)),
        )
    # pin_memory: page-locked host buffers make the per-step CPU<->GPU copies asynchronous.
    if ds.get("offload_param", False):
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    config: dict[str, Any] = {}
    if ds.get("offload_optimizer", False):
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        # DeepSpeed refuses a client (torch) optimizer with ZeRO-Offload; its own AdamW (DeepSpeedCPUAdam
        # when offloaded) takes lr/betas/eps/weight_decay from the TrainingArguments through "auto".
        config["optimizer"] = {"type": "AdamW", "params": {
            "lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto"}}
    config.update({
        "bf16": {"enabled": _bool_or_auto(ds.get("bf16", "auto"))},
        "fp16": {"enabled": "auto"},
        "zero_optimization": zero,
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "steps_per_print": 1_000_000,  # the Trainer logs; DeepSpeed's own step prints are noise
        "wall_clock_breakdown": False,
    })
    extra = OmegaConf.to_container(ds.extra, resolve=True) if "extra" in ds and ds.extra else {}
    return _merge(config, dict(extra))  # type: ignore[arg-type]


def write_deepspeed_config(ds: DictConfig, run_dir: str | Path) -> Path:
    """Write ``run_dir/deepspeed.json`` atomically (readers never see a half-written file)."""
    path = Path(run_dir) / FILENAME
    write_atomic(path, json.dumps(deepspeed_config(ds), indent=2) + "\n")
    return path


def cpu_state(cfg: DictConfig, timeout_s: float = 1800) -> dict[str, Any]:
    """In a DeepSpeed rank on a machine without CUDA: set up accelerate's process state on DeepSpeed's CPU
    accelerator and return the GRPOConfig kwargs that make the Trainer use it ({} anywhere else).

    transformers' TrainingArguments builds ``PartialState(use_deepspeed)`` without a backend; accelerate then
    finds no GPU backend and, although DeepSpeed initialises torch.distributed (gloo), records "no
    distributed training": every rank believes it is rank 0 of 1. Given the backend, the same state is
    DeepSpeed on 2+ ranks; ``use_configured_state`` has the Trainer take it as it is.
    """
    if not cfg.deepspeed.enabled or not in_launched_rank():
        return {}
    import torch

    if torch.cuda.is_available():
        return {}
    from accelerate import PartialState
    from deepspeed.accelerator import get_accelerator

    accel = get_accelerator()
    if accel.device_name() != "cpu":
        return {}
    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"  # accelerate launch --use_deepspeed set it already
    PartialState(backend=accel.communication_backend_name(), timeout=timedelta(seconds=timeout_s))
    return {"accelerator_config": {"use_configured_state": True}}
