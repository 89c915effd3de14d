"""The launch plan: every process mmr1 starts on this node, with its command line, environment
differences and role; written to ``run_dir/launch.json`` by the dry run and by every real launch."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from mmr1.launch.deepspeed import FILENAME as DS_FILENAME
from mmr1.launch.layout import LAUNCHED_ENV, Layout, generation_batch_size
from mmr1.launch.vllm_server import server_command, server_env, server_url

# Keys mmr1 sets for the ranks itself: one fixed run directory for all (Hydra issue 2070), no per-rank
# .hydra/ copies racing each other (the launching process wrote one); and a dry run's plan shows the
# real run's command lines.
_OWN_KEYS = ("hydra.run.dir=", "hydra.output_subdir=", "dry_run=")


def rank_args(overrides: list[str], run_dir: str | Path) -> list[str]:
    """The ranks' command-line arguments: the user's overrides as given, and one fixed run directory."""
    kept = [o for o in overrides if not o.lstrip("+~").startswith(_OWN_KEYS)]
    return [*kept, f"hydra.run.dir={Path(run_dir).resolve()}", "hydra.output_subdir=null"]


def uses_cpu(layout: Layout) -> bool:
    return not layout.gpus_per_node


def accelerate_command(cfg: DictConfig, layout: Layout, run_dir: str | Path, overrides: list[str]) -> list[str]:
    """``accelerate launch`` for this node's trainer ranks (flags: accelerate/commands/launch.py)."""
    ds = cfg.deepspeed
    cmd = [sys.executable, "-m", "accelerate.commands.launch",
           "--num_processes", str(layout.world_size),
           "--num_machines", str(layout.nnodes),
           "--machine_rank", str(layout.node_rank),
           "--main_process_ip", layout.master_addr,
           "--main_process_port", str(layout.master_port),
           "--mixed_precision", "bf16" if cfg.trainer.bf16 else "no",
           "--dynamo_backend", "no"]
    if ds.enabled:
        # Only the file: accelerate refuses zero_stage & co. next to a config file, and the "auto"
        # values in it are filled by the Trainer from grpo_args.json.
        cmd += ["--use_deepspeed", "--deepspeed_config_file", str(Path(run_dir).resolve() / DS_FILENAME)]
    elif layout.world_size > 1:
        # torchrun under the hood; on a CPU machine ACCELERATE_USE_CPU makes the ranks use gloo.
        cmd += ["--multi_gpu"]
    elif uses_cpu(layout):
        cmd += ["--cpu"]
    cmd += [str(a) for a in cfg.launcher.extra_args]
    return cmd + ["--module", "mmr1.train", *rank_args(overrides, run_dir)]


def launcher_env(layout: Layout, deepspeed: bool = False) -> dict[str, str]:
    """Environment differences of the accelerate process (inherited by every rank it starts)."""
    env = {LAUNCHED_ENV: "1"}
    if uses_cpu(layout):
        if deepspeed:
            # Not ACCELERATE_USE_CPU: accelerate (state.py) and transformers (training_args.py) then skip
            # DeepSpeed without a word and train plain DDP. DeepSpeed's CPU accelerator instead (gloo
            # without oneCCL); the ranks hand accelerate its backend (mmr1.launch.deepspeed.cpu_state).
            env["DS_ACCELERATOR"] = "cpu"
        else:
            env["ACCELERATE_USE_CPU"] = "true"
    else:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(layout.trainer_gpu_ids)
    return env


def build_plan(cfg: DictConfig, layout: Layout, run_dir: str | Path, overrides: list[str], *,
               model_path: str | None = None) -> dict[str, Any]:
    run_dir = Path(run_dir).resolve()
    r = cfg.rollout
    processes: list[dict[str, Any]] = []
    if layout.relaunch:
        base_env = launcher_env(layout, bool(cfg.deepspeed.enabled))
        processes.append({"role": "launcher", "command": accelerate_command(cfg, layout, run_dir, overrides),
                          "env": base_env})
        for local in range(layout.nproc_per_node):
            rank = layout.node_rank * layout.nproc_per_node + local
            env = {**base_env, "RANK": str(rank), "LOCAL_RANK": str(local), "WORLD_SIZE": str(layout.world_size),
                   "LOCAL_WORLD_SIZE": str(layout.nproc_per_node), "MASTER_ADDR": layout.master_addr,
                   "MASTER_PORT": str(layout.master_port)}
            processes.append({
                "role": "trainer", "rank": rank, "local_rank": local,
                "gpu": layout.trainer_gpu_ids[local] if layout.trainer_gpu_ids else None,
                "command": [sys.executable, "-m", "mmr1.train", *rank_args(overrides, run_dir)], "env": env,
            })
    else:
        processes.append({"role": "trainer", "rank": 0, "local_rank": 0, "gpu": None, "in_process": True,
                          "command": [sys.executable, "-m", "mmr1.train", *rank_args(overrides, run_dir)[:-1]],
                          "env": {}})
    if layout.starts_server and layout.node_rank == 0:
        processes.append({
            "role": "rollout_server", "gpus": layout.server_gpu_ids,
            "command": server_command(cfg, model_path), "env": server_env(layout.server_gpu_ids),
            "ports": {"http": r.server_port, "weight_sync": r.group_port},
            "health_url": f"{server_url(r)}/health", "log": str(run_dir / "vllm_server.log"),
        })

    t = cfg.trainer
    warnings = list(layout.warnings)
    if not layout.gpus_per_node:
        if r.backend == "vllm" or cfg.deepspeed.enabled:
            warnings.append("no GPUs here and launcher.gpus_per_node unset: the GPU layout was not checked; "
                            "set launcher.gpus_per_node=N to plan (and check) for an N-GPU node")
    return {
        "launcher": layout.launcher, "relaunch": layout.relaunch,
        "nnodes": layout.nnodes, "node_rank": layout.node_rank, "nproc_per_node": layout.nproc_per_node,
        "world_size": layout.world_size, "gpus_per_node": layout.gpus_per_node,
        "gpus_checked": bool(layout.gpus_per_node), "trainer_gpus": layout.trainer_gpu_ids,
        "server_gpus": layout.server_gpu_ids, "master_addr": layout.master_addr, "master_port": layout.master_port,
        "sources": layout.sources, "run_dir": str(run_dir),
        "deepspeed": ({"stage": cfg.deepspeed.stage, "config": str(run_dir / DS_FILENAME),
                       "offload_optimizer": cfg.deepspeed.offload_optimizer,
                       "offload_param": cfg.deepspeed.offload_param} if cfg.deepspeed.enabled else None),
        "rollout": {"backend": r.backend, "vllm_mode": r.vllm_mode if r.backend == "vllm" else None,
                    "server_url": server_url(r) if r.backend == "vllm" and r.vllm_mode == "server" else None,
                    "attach": bool(r.backend == "vllm" and r.vllm_mode == "server" and r.server_base_url)},
        "batch": {"per_device_train_batch_size": t.per_device_train_batch_size,
                  "gradient_accumulation_steps": t.gradient_accumulation_steps,
                  "num_generations": t.num_generations,
                  "generation_batch_size": generation_batch_size(t, layout.world_size)[0]},
        "warnings": warnings,
        "processes": processes,
    }
