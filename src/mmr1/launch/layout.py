"""Which processes run where: the launcher config + the seed's env conventions -> one checked Layout.

Config keys win; an unset (null) key falls back to the env variable the seed's commands use
(NPROC_PER_NODE, NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT, CUDA_VISIBLE_DEVICES), then to a
default. Every clash is reported at once, each naming the numbers that clash, before anything starts.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig

# Set by mmr1 in the environment of the processes it launches: they train and never re-launch.
LAUNCHED_ENV = "MMR1_LAUNCHED"
DEFAULT_MASTER_PORT = 29500
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class LayoutError(ValueError):
    """The processes the config asks for do not fit the machine (or each other)."""


# auto = here when one process will do, else `accelerate launch`; local = here or an error; accelerate = always.
LAUNCHERS = ("auto", "local", "accelerate")


def in_launched_rank(env: Mapping[str, str] | None = None) -> bool:
    """True inside a process started by mmr1's relaunch, or by a user's own torchrun / accelerate launch."""
    env = os.environ if env is None else env
    return env.get(LAUNCHED_ENV) == "1" or "LOCAL_RANK" in env


@dataclass
class Layout:
    launcher: str
    nproc_per_node: int
    nnodes: int
    node_rank: int
    master_addr: str
    master_port: int
    gpus_per_node: int | None  # None: unknown here (no GPU, none configured): GPU checks are skipped
    gpu_ids: list[str]  # the devices of this run on this node
    trainer_gpu_ids: list[str]
    server_gpu_ids: list[str]  # on node 0 when this run starts a vLLM server
    starts_server: bool
    relaunch: bool
    sources: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes


def _env_value(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    return value if value not in (None, "") else None


def _submitit_env() -> dict[str, str]:
    """Inside a SLURM job started by the submitit launcher: nodes, node id and the first host."""
    try:
        import submitit

        job = submitit.JobEnvironment()
        return {"NNODES": str(job.num_nodes), "NODE_RANK": str(job.node), "MASTER_ADDR": job.hostnames[0]}
    except Exception:  # noqa: BLE001 - not in a submitit job after all: the plain env conventions apply
        return {}


def _pick(key: str, cfg_value: Any, env: Mapping[str, str], env_name: str, default: Any, cast, sources: dict):
    if cfg_value is not None:
        sources[key] = "config"
        return cast(cfg_value)
    value = _env_value(env, env_name)
    if value is not None:
        sources[key] = f"env {env_name}"
        try:
            return cast(value)
        except ValueError as err:
            raise LayoutError(f"env {env_name}={value!r} is not a valid {key}") from err
    sources[key] = "default"
    return default


def detect_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _ids(text: str) -> list[str]:
    return [p.strip() for p in str(text).split(",") if p.strip()]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def resolve_layout(cfg: DictConfig, env: Mapping[str, str] | None = None, *, gpus: int | None = None,
                   job_num: int | None = None, pick_free_port: bool = False) -> Layout:
    """The layout of this node's processes. ``gpus`` replaces detection (tests); ``job_num`` offsets the
    default master port so concurrent sweep jobs on one machine do not collide."""
    env = dict(os.environ if env is None else env)
    from_slurm: set[str] = set()
    if env.get("SUBMITIT_EXECUTOR") == "slurm":
        # A SLURM job from the submitit launcher: the job's nodes are the defaults (explicit env wins).
        slurm = {k: v for k, v in _submitit_env().items() if _env_value(env, k) is None}
        env, from_slurm = {**env, **slurm}, set(slurm)
    lc, r = cfg.launcher, cfg.rollout
    if lc.name not in LAUNCHERS:
        raise LayoutError(f"launcher.name must be one of {', '.join(LAUNCHERS)}, got {lc.name!r}")
    src: dict[str, str] = {}
    nnodes = _pick("nnodes", lc.nnodes, env, "NNODES", 1, int, src)
    node_rank = _pick("node_rank", lc.node_rank, env, "NODE_RANK", 0, int, src)
    master_addr = _pick("master_addr", lc.master_addr, env, "MASTER_ADDR", "127.0.0.1", str, src)
    for key, name in (("nnodes", "NNODES"), ("node_rank", "NODE_RANK"), ("master_addr", "MASTER_ADDR")):
        if name in from_slurm and src[key] == f"env {name}":
            src[key] = "SLURM job"
    port_default = DEFAULT_MASTER_PORT + (job_num or 0)
    master_port = _pick("master_port", lc.master_port, env, "MASTER_PORT", port_default, int, src)
    if pick_free_port and src["master_port"] == "default" and nnodes == 1 and not port_is_free(master_port):
        # One node: any free port will do, and a busy default (another run) would kill this one at start.
        master_port, src["master_port"] = free_port(), "free port (default busy)"

    errors: list[str] = []
    gpus_per_node, ids = _node_gpus(lc, env, gpus, src, errors)

    server_mode = r.backend == "vllm" and r.vllm_mode == "server"
    starts_server = server_mode and not r.server_base_url
    server_here = starts_server and node_rank == 0
    server_ids = _ids(r.server_gpu_ids) if r.server_gpu_ids else []
    reserved = len(server_ids) or (r.server_gpus if server_here else 0)
    auto_nproc = max(1, (gpus_per_node or 0) - reserved) if lc.name == "accelerate" and gpus_per_node else 1
    nproc = _pick("nproc_per_node", lc.nproc_per_node, env, "NPROC_PER_NODE", auto_nproc, int, src)
    if src["nproc_per_node"] == "default" and lc.name == "accelerate" and gpus_per_node:
        src["nproc_per_node"] = "GPUs not reserved for rollouts"

    trainer_ids = ids[:nproc] if gpus_per_node else []
    if server_here and gpus_per_node and not server_ids:
        server_ids = ids[nproc:nproc + r.server_gpus]
    world = nproc * nnodes
    # Train in this process only when nothing needs a separate process or hidden GPUs (a single process
    # that sees spare GPUs would turn them into a silent torch DataParallel).
    hides_gpus = bool(gpus_per_node) and len(ids) > len(trainer_ids)
    # DeepSpeed initialises torch.distributed from the launcher's env (RANK, WORLD_SIZE, ...): in a bare process
    # it falls back to MPI discovery (mpi4py), so even one DeepSpeed process goes through accelerate launch.
    needs = [why for why, needed in ((f"{world} processes", world > 1), ("DeepSpeed", bool(cfg.deepspeed.enabled)),
                                     (f"hiding {len(ids) - len(trainer_ids)} of {len(ids)} GPUs", hides_gpus))
             if needed]
    relaunch = lc.name == "accelerate" or bool(needs)
    if lc.name == "local" and needs:
        errors.append(f"launcher=local trains in this process, but this run needs a launcher ({'; '.join(needs)}): "
                      "use launcher=auto or launcher=accelerate (or one process, DeepSpeed off, CUDA_VISIBLE_DEVICES "
                      "set to the one GPU)")
    layout = Layout(lc.name, nproc, nnodes, node_rank, master_addr, master_port, gpus_per_node, ids,
                    trainer_ids, server_ids if server_here else [], starts_server, relaunch, src)
    errors += check_layout(cfg, layout)
    if errors:
        raise LayoutError("launch layout does not fit:\n  - " + "\n  - ".join(errors))
    return layout


def _node_gpus(lc: DictConfig, env: dict[str, str], gpus: int | None, src: dict[str, str],
               errors: list[str]) -> tuple[int | None, list[str]]:
    """(GPUs per node, their ids): launcher.gpus_per_node / gpu_ids, else CUDA_VISIBLE_DEVICES, else detected.
    Where each came from goes into ``src``; a contradiction into ``errors``."""
    ids = _ids(lc.gpu_ids) if lc.gpu_ids is not None else None
    src["gpu_ids"] = "config" if ids is not None else "default"
    if ids is None and _env_value(env, "CUDA_VISIBLE_DEVICES") is not None:
        ids, src["gpu_ids"] = _ids(env["CUDA_VISIBLE_DEVICES"]), "env CUDA_VISIBLE_DEVICES"
    if lc.gpus_per_node is not None:
        configured = int(lc.gpus_per_node)
        src["gpus_per_node"] = "config"
        if ids is not None and len(ids) < configured:
            errors.append(f"launcher.gpus_per_node={configured} but {src['gpu_ids']} lists only "
                          f"{len(ids)} GPUs ({','.join(ids)})")
        return configured, (ids or [str(i) for i in range(configured)])[:configured]
    if ids is not None:
        src["gpus_per_node"] = src["gpu_ids"]
        return len(ids), ids
    n = detect_gpus() if gpus is None else gpus
    src["gpus_per_node"] = "detected" if n else "none detected"
    return (n or None), [str(i) for i in range(n)]


def _label(layout: Layout, key: str, value: Any) -> str:
    """A number with where it came from, for error messages: "6 (launcher.nproc_per_node)"."""
    where = layout.sources.get(key, "config")
    return f"{value} ({'launcher.' + key if where == 'config' else where})"


# A list of independent rules, each adding its own message: split up, the rules would only be harder to read together.
def check_layout(cfg: DictConfig, lay: Layout) -> list[str]:  # noqa: C901
    """Every clash between the layout, the rollout and the batch, each message naming its numbers."""
    r, t = cfg.rollout, cfg.trainer
    errors: list[str] = []
    nproc = _label(lay, "nproc_per_node", lay.nproc_per_node)
    if lay.nproc_per_node < 1 or lay.nnodes < 1:
        errors.append(f"need at least one process and one node, got {nproc} processes, {lay.nnodes} nodes")
    if not 0 <= lay.node_rank < lay.nnodes:
        errors.append(f"node_rank {lay.node_rank} is outside 0..{lay.nnodes - 1} (nnodes {lay.nnodes})")
    if lay.nnodes > 1 and lay.master_addr in LOOPBACK:
        errors.append(f"{_label(lay, 'nnodes', lay.nnodes)} nodes but master_addr "
                      f"{_label(lay, 'master_addr', lay.master_addr)} is loopback: the other nodes cannot "
                      "reach it (set MASTER_ADDR to node 0's address)")

    server_mode = r.backend == "vllm" and r.vllm_mode == "server"
    server_here = lay.starts_server and lay.node_rank == 0
    if lay.gpus_per_node:
        gpus = _label(lay, "gpus_per_node", lay.gpus_per_node)
        # Explicit server ids are checked for overlap instead; the default ones follow the trainers'.
        reserved = r.server_gpus if server_here and not r.server_gpu_ids else 0
        if lay.nproc_per_node + reserved > lay.gpus_per_node:
            what = f"{nproc} trainer processes"
            if reserved:
                what += f" + {reserved} (rollout.server_gpus) vLLM server GPUs = {lay.nproc_per_node + reserved}"
            errors.append(f"{what} > {gpus} GPUs per node")
        if server_here and r.server_gpu_ids:
            missing = [i for i in lay.server_gpu_ids if i not in lay.gpu_ids]
            if missing:
                errors.append(f"rollout.server_gpu_ids={r.server_gpu_ids}: GPU {','.join(missing)} is not one of "
                              f"this node's GPUs {','.join(lay.gpu_ids)}")
        clash = [i for i in lay.server_gpu_ids if i in lay.trainer_gpu_ids]
        if clash:
            errors.append(f"vLLM server GPUs {','.join(lay.server_gpu_ids)} overlap the trainer GPUs "
                          f"{','.join(lay.trainer_gpu_ids)} (both use {','.join(clash)})")
    if server_mode and lay.starts_server:
        if r.server_gpus != r.data_parallel_size * r.tensor_parallel_size:
            errors.append(f"rollout.server_gpus={r.server_gpus} but data_parallel_size {r.data_parallel_size} x "
                          f"tensor_parallel_size {r.tensor_parallel_size} = "
                          f"{r.data_parallel_size * r.tensor_parallel_size}")
        if r.server_gpu_ids and len(_ids(r.server_gpu_ids)) != r.server_gpus:
            errors.append(f"rollout.server_gpu_ids={r.server_gpu_ids} lists {len(_ids(r.server_gpu_ids))} GPUs, "
                          f"rollout.server_gpus={r.server_gpus}")
        ports = {"launcher.master_port": lay.master_port, "rollout.server_port": r.server_port,
                 "rollout.group_port": r.group_port}
        if len(set(ports.values())) < len(ports):
            errors.append("ports clash: " + ", ".join(f"{k}={v}" for k, v in ports.items()))
    if r.backend == "vllm" and r.vllm_mode == "colocate" and lay.world_size % r.tensor_parallel_size:
        errors.append(f"rollout.tensor_parallel_size={r.tensor_parallel_size} must divide the "
                      f"{lay.world_size} trainer processes (colocated vLLM runs one engine per TP group)")
    if r.backend == "vllm" and cfg.deepspeed.enabled and cfg.deepspeed.stage == 3 and not cfg.deepspeed.get(
            "gather_for_generation", True):
        errors.append("deepspeed.gather_for_generation=false cannot push weights to vLLM (TRL needs it on)")
    errors += check_batch(t, lay.world_size)
    return errors


def generation_batch_size(t: DictConfig, world: int) -> tuple[int, str]:
    """TRL's generation batch (GRPOConfig.__post_init__) and how it was computed, for messages."""
    extra = t.get("extra") or {}
    if extra.get("generation_batch_size") is not None:
        n = int(extra["generation_batch_size"])
        return n, f"trainer.extra.generation_batch_size {n}"
    key = "steps_per_generation" if extra.get("steps_per_generation") else "gradient_accumulation_steps"
    steps = int(extra.get("steps_per_generation") or t.gradient_accumulation_steps)
    n = t.per_device_train_batch_size * world * steps
    return n, f"per_device_train_batch_size {t.per_device_train_batch_size} x {world} processes x {key} {steps} = {n}"


def check_batch(t: DictConfig, world: int) -> list[str]:
    """TRL's rule, checked before anything starts: the generation batch holds whole prompt groups.

    TRL checks the same in ``GRPOConfig.__post_init__`` (trl/trainer/grpo_config.py, the
    ``generation_batch_size % num_generations`` and global eval batch checks), but only inside each rank
    after the launch (the vLLM server already up) and without the numbers that made the batch. This
    runs in the launching process for the planned world size and names them; tests/launch pins the two
    rules together on the installed TRL (test_batch_rule_is_trls).
    """
    errors = []
    gen_batch, formula = generation_batch_size(t, world)
    if gen_batch % t.num_generations:
        errors.append(f"{formula} is not divisible by num_generations {t.num_generations}: each prompt's group "
                      "must fit in one generation batch")
    if t.eval_strategy != "no":
        eval_gens = t.num_generations_eval or t.num_generations
        eval_batch = t.per_device_eval_batch_size * world
        if eval_batch % eval_gens:
            errors.append(f"per_device_eval_batch_size {t.per_device_eval_batch_size} x {world} processes = "
                          f"{eval_batch} is not divisible by num_generations{'_eval' if t.num_generations_eval else ''}"
                          f" {eval_gens}")
    return errors
