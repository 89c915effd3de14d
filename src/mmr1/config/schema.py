"""Typed schemas for mmr1's own settings, stored in Hydra's ConfigStore.

``conf/train.yaml`` lists ``train_schema`` first in its defaults, so every group option merges into
these dataclasses: a typo (``optimizer.lrr=1``) or a wrong type fails at startup naming the key.
TRL's ``GRPOConfig`` is deliberately not stored here (its Union fields do not fit OmegaConf);
``mmr1.config.grpo_args`` builds it from the resolved config and its own ``__post_init__`` validates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

from mmr1.data.config import DatasetConfig
from mmr1.rewards.config import RewardConfig


@dataclass
class WarmStartConfig:
    """Supervised warm-start (TRL's SFTTrainer) of a model before GRPO; cached by recipe."""

    enabled: bool = False
    max_steps: int = 400
    learning_rate: float = 1e-3
    warmup_steps: int = 50
    batch_size: int = 32
    num_samples: int = 2048
    # Stop once greedy held-out accuracy reaches the gate: the point is a model that follows the
    # format and is imperfect at the task, so that GRPO has something to improve.
    gate_accuracy: float = 0.45
    gate_start: int = 100
    gate_every: int = 5
    gate_samples: int = 100
    think: str = "I count the objects."
    seed: int = 1234


@dataclass
class ModelConfig:
    # A hub id, a local directory, or the name of an embedded builder ("tiny_qwen2_5_vl").
    name_or_path: str = "tiny_qwen2_5_vl"
    torch_dtype: str = "float32"
    attn_implementation: str | None = None
    train_type: str = "full"
    # One image-resolution setting for trainer and rollout; None = the processor's default.
    min_pixels: int | None = None
    max_pixels: int | None = None
    trust_remote_code: bool = False
    warmstart: WarmStartConfig = field(default_factory=WarmStartConfig)


@dataclass
class RolloutConfig:
    # hf = transformers generate inside the trainer; vllm = TRL's vLLM integration (server|colocate).
    backend: str = "hf"
    vllm_mode: str | None = None
    gpu_memory_utilization: float = 0.6
    max_model_len: int | None = None
    tensor_parallel_size: int = 1
    data_parallel_size: int = 1
    server_gpus: int = 0
    server_host: str = "0.0.0.0"
    server_port: int = 8000
    server_base_url: str | None = None
    server_timeout_s: float = 600.0
    enable_sleep_mode: bool = False
    # The seed (ms-swift at the time) had no vLLM importance-sampling correction; TRL's default is on.
    importance_sampling_correction: bool = False


@dataclass
class OptimizerConfig:
    name: str = "adamw_torch"
    lr: float = 1e-6
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    # None = no clipping.
    max_grad_norm: float | None = 1.0
    lr_scheduler_type: str = "linear"
    warmup_ratio: float = 0.0
    warmup_steps: int = 0


@dataclass
class TrainerConfig:
    """GRPO and Trainer settings under TRL's own names (passed to GRPOConfig as they are)."""

    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    num_generations: int = 8
    num_generations_eval: int | None = None
    max_completion_length: int = 1024
    # ms-swift's --max_length (prompt + completion); TRL 1.16 has no such field: mmr1's pre-flight
    # check enforces it before any GPU work.
    max_length: int | None = None
    num_train_epochs: float = 1.0
    max_steps: int = -1
    beta: float = 0.001
    loss_type: str = "grpo"
    scale_rewards: str = "group"
    epsilon: float = 0.2
    num_iterations: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    mask_truncated_completions: bool = False
    save_strategy: str = "steps"
    save_steps: float = 500
    save_total_limit: int | None = None
    save_only_model: bool = False
    eval_strategy: str = "no"
    eval_steps: float | None = None
    logging_steps: float = 1
    dataloader_num_workers: int = 0
    bf16: bool = False
    gradient_checkpointing: bool = False
    log_completions: bool = False
    num_completions_to_print: int | None = 0
    seed: int = 42
    # Any other GRPOConfig field, passed through verbatim (GRPOConfig validates it).
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoggerConfig:
    # Integrations for TRL's report_to (e.g. ["wandb"]); metrics.jsonl and curves.png are always written.
    report_to: list[str] = field(default_factory=list)
    project: str = "mmr1"
    entity: str | None = None
    group: str | None = None
    name: str | None = None
    # online | offline | auto (offline when no WANDB_API_KEY is set)
    mode: str = "auto"
    tags: list[str] = field(default_factory=list)


@dataclass
class LauncherConfig:
    # local = this process only; accelerate = re-launch through `accelerate launch`.
    name: str = "local"
    nproc_per_node: int | None = None
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    gpus_per_node: int | None = None


@dataclass
class DeepSpeedConfig:
    enabled: bool = False
    stage: int = 3
    offload_optimizer: bool = False
    offload_param: bool = False


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    run_dir: str = "${hydra:runtime.output_dir}"
    # Compose, build what needs no weights, write config.yaml + grpo_args.json, and exit.
    dry_run: bool = False
    # auto = continue from the run directory's last complete checkpoint if there is one;
    # never = start fresh; or a checkpoint path.
    resume: str = "auto"


def register_configs() -> None:
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)
