"""Typed schemas for mmr1's own settings, stored in Hydra's ConfigStore.

``conf/train.yaml`` lists ``schema: train`` first in its defaults, so every group option merges into
these dataclasses (``conf/evaluate.yaml`` swaps it for ``schema: evaluate``, the same plus ``eval``):
a typo (``optimizer.lrr=1``) or a wrong type fails at startup naming the key.
TRL's ``GRPOConfig`` is deliberately not stored here (its Union fields do not fit OmegaConf);
``mmr1.config.grpo_args`` builds it from the resolved config and its own ``__post_init__`` validates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

from mmr1.data.config import DatasetConfig, VideoConfig
from mmr1.evaluation.config import BenchmarkConfig
from mmr1.reliability.config import GuardConfig
from mmr1.rewards.config import AuditConfig, RewardConfig


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
    # 0.6, not the notes' 0.45: at 0.45 the gate can fire on a chance blip (3 classes: chance is 0.33 and
    # 100 held-out rows swing by +-0.1) and GRPO then starts from a model that ignores the image. Measured:
    # the gate's 100 greedy answers hit 0.51 at step 135 by chance (0.32 five steps later), and GRPO from that
    # model stayed at chance for 700 steps. The real transition is a plateau (0.45-0.69, steps 225-265) before a
    # jump to 1.0 within 5 steps; 0.6 stops inside it and is 5 sigma above chance.
    gate_accuracy: float = 0.6
    gate_start: int = 100
    gate_every: int = 5
    gate_samples: int = 100
    # The gate scores with a registered reward (mmr1.rewards), so "accurate" means what GRPO will reward.
    gate_reward: str = "external_r1v_acc"
    think: str = "I count the objects."
    seed: int = 1234
    # A curriculum: generators whose plain SFT (answers, no tools; gated and cached like this one) runs first, in
    # order, each from the last; this warm-start then starts from the end of it. The tool-using task learns to count
    # on plain scenes before it learns to crop (conf/experiment/tiny_zoom_count.yaml).
    curriculum: list[str] = field(default_factory=list)


@dataclass
class LoraConfig:
    """``model.train_type=lora|qlora``: peft's LoRA on TRL's ``peft_config`` (mmr1.models.lora).

    Defaults are ms-swift v3.2.1's (swift/llm/argument/tuner_args.py), the seed's framework.
    """

    r: int = 8  # --lora_rank (tuner_args.py:116)
    alpha: int = 32  # --lora_alpha (tuner_args.py:117)
    dropout: float = 0.05  # --lora_dropout (tuner_args.py:118)
    # all-linear = every nn.Linear of the language model: not lm_head, embeddings or the vision merger, as
    # ms-swift's multimodal 'all-linear' (tuner_args.py:110, swift/llm/train/tuner.py:45-83). Other entries go
    # to peft as they are (module-name suffixes, which match the vision tower too where its names are alike).
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    vision_tower: bool = False  # also the vision blocks' linears (ms-swift's freeze_vit=True, tuner_args.py:107)
    # qlora: bitsandbytes 4-bit base weights as ms-swift's bnb settings (base_args/quant_args.py:37-38); compute
    # in model.torch_dtype.
    quant_type: str = "nf4"
    double_quant: bool = True


@dataclass
class ModelConfig:
    # A hub id, a local directory, or the name of an embedded builder. Default: the embedded ~1M-parameter
    # Qwen2.5-VL built locally from a config (no download; mmr1.models.tiny).
    name_or_path: str = "tiny_qwen2_5_vl"
    torch_dtype: str = "float32"  # CPU: bf16 matmuls are slow and lossy there
    attn_implementation: str | None = None  # e.g. flash_attention_2 where installed
    train_type: str = "full"  # full (the seed's) | lora | qlora (settings: model.lora)
    lora: LoraConfig = field(default_factory=LoraConfig)
    # Full fine-tuning only (mmr1.models.parts): freeze the vision tower (without its aligner) and the aligner
    # (Qwen's patch merger). ms-swift v3.2.1 freezes both by default (freeze_vit / freeze_aligner,
    # swift/llm/argument/tuner_args.py:107-108), so the seed's recipe sets both true; the embedded default trains
    # every part (its measured learning curves are with the tower trained). Under lora/qlora peft freezes the base
    # and model.lora.vision_tower decides the vision adapters.
    freeze_vision_tower: bool = False
    freeze_aligner: bool = False
    # One image-resolution setting for trainer and rollout; None = the processor's default (Qwen: 3136 to
    # 12845056 pixels, or the MIN_PIXELS/MAX_PIXELS env vars the seed sets). 50176 = 224x224, 64 image tokens
    # at most: a tiny model, tiny images (its counting scenes are 84x84 = 9 tokens).
    min_pixels: int | None = None
    max_pixels: int | None = 50176
    trust_remote_code: bool = False
    # The embedded tiny model only: its tokenizer with Qwen2.5's tool-call tokens (<tool_call>, </tool_call>, added
    # tokens of the real Qwen2.5-VL tokenizer) and merges for Qwen's tool format (mmr1.models.tiny.TOOL_CORPUS), so a
    # call is a handful of tokens the tiny model can learn (rollout.tools; conf/experiment/tiny_zoom_count.yaml).
    tool_tokens: bool = False
    # The seed starts from an Instruct model "to rapidly achieve format rewards"; the tiny analogue is a short
    # SFT on synthetic answers that teaches the format and leaves counting imperfect.
    warmstart: WarmStartConfig = field(default_factory=lambda: WarmStartConfig(enabled=True))
    # Clips (a dataset's `videos` column): frame sampling and the per-frame and per-clip pixel budgets.
    video: VideoConfig = field(default_factory=VideoConfig)


@dataclass
class RolloutConfig:
    """Who generates the completions: TRL's own generate (hf) or TRL's vLLM integration.

    Mapped onto GRPOConfig's ``vllm_*`` fields by ``mmr1.config.grpo_args``; in server mode the engine
    settings are arguments of the ``vllm serve`` process that ``mmr1.launch`` starts (mmr1.launch.vllm_server).
    """

    # hf = transformers generate inside the trainer; vllm = TRL's vLLM integration (server|colocate).
    backend: str = "hf"
    vllm_mode: str | None = None
    gpu_memory_utilization: float = 0.6  # the seed's --vllm_gpu_memory_utilization (the rest is the trainer's)
    # The rollout context: prompt + completion tokens. Completions end where it does, on every backend
    # (mmr1.trainer.grpo); None = the model's own length.
    max_model_len: int | None = None
    tensor_parallel_size: int = 1  # colocate: must divide the number of trainer processes
    data_parallel_size: int = 1
    # GPUs reserved for the server on node 0; must equal data_parallel_size x tensor_parallel_size.
    server_gpus: int = 0
    # Comma-separated device ids for the server; null = the server_gpus GPUs after the trainers'.
    server_gpu_ids: str | None = None
    server_host: str = "0.0.0.0"
    server_port: int = 8000
    # Set to attach to a server that is already running (mmr1 then starts none, only checks /health).
    server_base_url: str | None = None
    server_timeout_s: float = 600.0
    # NCCL port of the weight-sync group between trainer rank 0 and the server (TRL: vllm_group_port).
    group_port: int = 51216
    # Engine options, server and colocate alike. dtype null = the run's (model.torch_dtype): vLLM samples from the
    # weights the trainer scores (vLLM's own "auto" picks bf16 on a CPU even for a float32 checkpoint).
    dtype: str | None = None
    enable_prefix_caching: bool | None = None
    enforce_eager: bool = False  # no CUDA graphs / torch.compile: a shorter engine start, slower decoding
    # Colocate: tokens per engine step (null = TRL's 4096); a smaller one shortens vLLM's start-up profiling run.
    max_num_batched_tokens: int | None = None
    # Colocate: the KV cache in GiB (vLLM's kv_cache_memory_bytes; on a CPU what VLLM_CPU_KVCACHE_SPACE sets); null =
    # vLLM's default (a CPU: 4 GiB; a GPU: what gpu_memory_utilization leaves).
    kv_cache_gib: float | None = None
    # Verbatim extra arguments for `vllm serve`, after the ones TRL's builder sets.
    server_extra_args: list[str] = field(default_factory=list)
    model_impl: str = "vllm"
    enable_sleep_mode: bool = False
    # Vision tokens (<|image_pad|>, <|vision_start|>, ...) banned from completions at sampling time
    # (mmr1.rollout.vision_tokens): a sampled one crashes the next forward (R1-V#91). The ban renormalises the
    # sampler over the other tokens, which TRL's importance-sampling metrics then count as sampler/trainer mismatch
    # (log(1 - p_banned) per token; ~0 for an instruct model). false = no ban, only the last-line cut.
    ban_vision_tokens: bool = True
    # The seed (ms-swift at the time) had no vLLM importance-sampling correction; TRL's default is on.
    importance_sampling_correction: bool = False
    # backend=hf: transformers' KV cache ("static" preallocates it: on a CPU 3.7x faster than the dynamic
    # cache's per-token concatenation for 96 sequences x 200 tokens; null = transformers' default).
    cache_implementation: str | None = None
    # Tools the model may call mid-answer (mmr1.rollout.tools): built-in names (crop), 'pkg.module:function' or
    # 'file.py:function', each a plain function with type hints and a Google docstring (TRL's tool signature).
    # Empty: single-turn rollouts, as the seed.
    tools: list[str] = field(default_factory=list)
    # Tool calls per completion, at most (TRL's max_tool_calling_iterations; a further call gets an error message).
    # The completion budget (trainer.max_completion_length) holds the tool results too: the pre-flight checks it
    # covers max_tool_calls tool images.
    max_tool_calls: int = 1
    # One call's wall clock, and all calls of one generation round together: a hung tool costs its rollout an error,
    # never the step (mmr1.rollout.tools.runner). The reward sandbox's defaults (reward.timeout_s, batch_timeout_s).
    tool_timeout_s: float = 10.0
    tool_round_timeout_s: float = 60.0
    tool_workers: int = 2
    # A tool image's pixel bound (smart_resize); null: model.max_pixels, the prompt images' own.
    tool_image_max_pixels: int | None = None


@dataclass
class OptimizerConfig:
    """AdamW (torch). Defaults: the embedded tiny CPU job; the seed's recipe sets its own."""

    name: str = "adamw_torch"
    lr: float = 1e-4  # the tiny model: 1e-6 would not move a 1M-parameter model; 1e-3 collapsed in ~80 steps
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float | None = 1.0  # None = no clipping
    lr_scheduler_type: str = "constant"  # a short run whose signal is still strong at its end
    warmup_ratio: float = 0.0
    warmup_steps: int = 0


@dataclass
class TrainerConfig:
    """GRPO and Trainer settings under TRL's own names (passed to GRPOConfig as they are). Defaults: the
    embedded tiny CPU job (4 prompts x 8 generations per step, 300 steps); the seed's recipe sets its own."""

    per_device_train_batch_size: int = 32
    per_device_eval_batch_size: int = 32
    gradient_accumulation_steps: int = 1
    num_generations: int = 8
    num_generations_eval: int | None = None
    max_completion_length: int = 24  # "<think>...</think><answer>k</answer>" fits in ~12 tokens
    # ms-swift's --max_length, a bound on the prompt; TRL 1.16 has no such field: mmr1's pre-flight
    # (mmr1.data.preflight) enforces it on every row before any GPU work.
    max_length: int | None = 512
    num_train_epochs: float = 1.0
    max_steps: int = 300
    beta: float = 0.0  # no reference model on the tiny job (halves the forward passes on CPU)
    loss_type: str = "grpo"  # TRL's default is "dapo"; the seed's recipe sets "bnpo"
    scale_rewards: str = "group"
    epsilon: float = 0.2
    # The policy-optimisation variants (conf/algorithm/: dapo, dr_grpo, gspo), TRL's fields. null = TRL's own
    # default, and then not written to grpo_args.json (a run that sets none of them records what it did before).
    epsilon_high: float | None = None  # clip-higher's upper bound (DAPO 0.28); null: = epsilon
    delta: float | None = None  # two-sided clipping's cap on the ratio (INTELLECT-2); > 1 + epsilon_high
    importance_sampling_level: str | None = None  # token | sequence (GSPO); null: TRL's token
    top_entropy_quantile: float | None = None  # keep the top-rho entropy tokens in the loss; null: TRL's 1.0
    # The algorithm file this run composed (conf/algorithm/), recorded for the sweep report; null: none chosen.
    algorithm: str | None = None
    num_iterations: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    # The tiny model otherwise learns to fill the length cap with tags the seed's format regex still accepts
    # (`<answer>3</answer>2</answer>...`, a reward hack seen in its first runs).
    mask_truncated_completions: bool = True
    # DAPO's dynamic sampling (mmr1.trainer.dynamic_sampling): drop groups whose rewards all agree and refill with fresh
    # prompts, at most dynamic_sampling_max_batches generation batches per step (3: ms-swift's max_resample_times).
    # Off: the seed (ms-swift v3.2.1 as it ran) had none.
    dynamic_sampling: bool = False
    dynamic_sampling_max_batches: int = 3
    save_strategy: str = "steps"
    save_steps: float = 100
    save_total_limit: int | None = 2
    save_only_model: bool = False
    eval_strategy: str = "no"
    eval_steps: float | None = None
    logging_steps: float = 1
    dataloader_num_workers: int = 0
    bf16: bool = False
    gradient_checkpointing: bool = False  # TRL defaults to true; on a tiny CPU model it only costs time
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
    """How many processes on which GPUs. Unset (null) keys fall back to the seed's env conventions
    (NPROC_PER_NODE, NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT, CUDA_VISIBLE_DEVICES): config wins.
    With ``auto``, more than one process in total re-launches through `accelerate launch` (see mmr1.launch)."""

    # auto = this process when one process is asked for, else `accelerate launch`; local = this process or
    # an error; accelerate = always `accelerate launch`. The YAML of each option says why.
    name: str = "auto"
    nproc_per_node: int | None = None
    nnodes: int | None = None
    node_rank: int | None = None
    master_addr: str | None = None
    master_port: int | None = None
    # GPUs on one node; null = detected. Set it to compute (and check) a launch plan on another machine.
    gpus_per_node: int | None = None
    # Comma-separated device ids this run may use (CUDA_VISIBLE_DEVICES); null = env, else 0..gpus-1.
    gpu_ids: str | None = None
    # Seconds the children get to exit after SIGTERM (Ctrl-C, scancel, a failed rank) before SIGKILL.
    shutdown_grace_s: float = 30.0
    # Verbatim extra `accelerate launch` arguments.
    extra_args: list[str] = field(default_factory=list)


@dataclass
class DeepSpeedConfig:
    """DeepSpeed ZeRO through accelerate/Trainer; mmr1.launch.deepspeed writes the JSON (run_dir/deepspeed.json).

    Batch sizes, clipping and precision are "auto": the Trainer fills them from the GRPOConfig, so the
    two can never disagree.
    """

    enabled: bool = False
    stage: int = 3
    offload_optimizer: bool = False
    offload_param: bool = False
    # "auto" follows trainer.bf16; true/false pins it.
    bf16: str = "auto"
    # ZeRO-3 shards the weights: gather a 16-bit copy when saving so that checkpoints (and the final
    # model) are loadable by transformers / vLLM without DeepSpeed's zero_to_fp32 step.
    gather_16bit_weights_on_model_save: bool = True
    overlap_comm: bool = True
    contiguous_gradients: bool = True
    # TRL's ds3_gather_for_generation: gather ZeRO-3 weights for generation (required with vLLM).
    gather_for_generation: bool = True
    # Merged last into the JSON; add keys with +, e.g. +deepspeed.extra.zero_optimization.sub_group_size=1e8.
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class RehearsalConfig:
    """``+preset=rehearsal`` (mmr1.config.rehearsal): the experiment's exact configuration for real on a CPU."""

    enabled: bool = False
    max_steps: int = 2  # optimizer steps; the one evaluation and the one checkpoint come at the last
    # Who rolls out: hf (transformers generate, any install) or vllm (vLLM colocate in this one process: the CPU
    # build, scripts/vllm_cpu_env.sh; the experiment's server becomes colocate, a listed swap, so vLLM itself
    # enforces its context, image limits and sampling settings).
    rollout: str = "hf"
    # false: +preset=cpu, only the hardware swaps (the preset's YAML shrinks batch, lengths and steps instead of
    # keeping the experiment's generation batch).
    exact: bool = True
    # Filled by mmr1.config.rehearsal.apply_rehearsal: what was swapped (key, experiment value, rehearsal value).
    applied: bool = False
    swaps: list[Any] = field(default_factory=list)


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
    # Collapse guard and Ctrl-C behaviour (mmr1.reliability; why of each value in conf/guard/default.yaml).
    guard: GuardConfig = field(default_factory=GuardConfig)
    rehearsal: RehearsalConfig = field(default_factory=RehearsalConfig)
    # The reward audit (mmr1.rewards.audit): its command's settings, and the warn-only check at training start.
    audit: AuditConfig = field(default_factory=AuditConfig)
    run_dir: str = "${hydra:runtime.output_dir}"
    # Compose, build what needs no weights, write config.yaml + grpo_args.json, and exit.
    dry_run: bool = False
    # auto = continue from the run directory's last complete checkpoint if there is one;
    # never = start fresh; or a checkpoint path.
    resume: str = "auto"


@dataclass
class EvalConfig:
    """``python -m mmr1.evaluate``'s own settings (mmr1.evaluate says what each evaluates)."""

    checkpoint: str | None = None
    split: str = "eval"                 # eval = the held-out rows (dataset.eval_size); train = training rows
    limit: int | None = None            # first N rows of the split
    batch_size: int = 32                # prompts per generate() call
    max_new_tokens: int | None = None   # null: trainer.max_completion_length (what training allowed)
    greedy: bool = True
    num_samples: int = 0                # n sampled completions per prompt for pass@k; 0 = greedy only
    temperature: float | None = None    # sampling settings, null: the trainer's (what rollouts used)
    top_p: float | None = None
    top_k: int | None = None
    pass_k: list[int] = field(default_factory=lambda: [1])
    output: str | None = None           # null: <run dir>/eval.json (see module docstring)
    device: str = "auto"                # auto = cuda if available, else cpu
    # Generate through a running vLLM server (`vllm serve`, e.g. the line mmr1's launch plan starts) at this URL
    # instead of in this process; it must serve the model being evaluated (eval.checkpoint is then only its name).
    server_url: str | None = None
    seed: int = 0
    # Who generates (mmr1.evaluation.engines): auto = vLLM in this process when it is installed (its CPU build
    # too), else transformers; hf; vllm. max_model_len: vLLM's context (null: the largest image's tokens + a
    # prompt's text + the new tokens, capped at the model's).
    backend: str = "auto"
    max_model_len: int | None = None
    # A fixed test set under its authors' protocol (conf/eval/benchmark/: geoqa_test, superclevr_200,
    # clevr_count), chosen with eval.benchmark=NAME; none = the task's held-out split under the training protocol.
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    # Score these completions (jsonl {question, ground_truth, completion}, or an R1-V result file) under the
    # benchmark's protocol instead of generating (mmr1.evaluation.completions).
    completions: str | None = None


@dataclass
class EvaluateConfig(TrainConfig):
    eval: EvalConfig = field(default_factory=EvalConfig)


def register_configs() -> None:
    """The schemas as options of a ``schema`` group at the root (package ``_global_``): an entry point's
    config picks its own with ``override /schema: ...`` and nothing is stored twice under one name."""
    cs = ConfigStore.instance()
    cs.store(group="schema", name="train", node=TrainConfig, package="_global_")
    cs.store(group="schema", name="evaluate", node=EvaluateConfig, package="_global_")
