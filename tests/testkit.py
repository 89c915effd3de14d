"""Shared test helpers: compose the real config (conf/) the way `python -m mmr1.train` does, shrunk for CPU.

A module of its own (not conftest.py): pytest registers every directory's conftest.py under the same
module name, so `from conftest import ...` can resolve to another directory's file in a whole-suite run."""

from __future__ import annotations

import itertools
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from mmr1.train import CONF_DIR

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = ["clevr_count", "geoqa", "openr1_mm"]

# The smallest GRPO run that still exercises every part: 2 prompts x 4 generations, short completions,
# no warm-start (its own tests cover it), a handful of synthetic rows.
TINY = [
    "model.warmstart.enabled=false",
    "dataset.num_samples=16",
    "trainer.per_device_train_batch_size=8",
    "trainer.num_generations=4",
    "trainer.max_completion_length=8",
    "trainer.save_steps=1000",
]


def compose_cfg(overrides: list[str] | tuple[str, ...] = (), run_dir: str | Path | None = None) -> DictConfig:
    """The composed training config, as the CLI would build it from the same overrides."""
    extra = [f"run_dir={run_dir}"] if run_dir is not None else ["run_dir=/tmp/mmr1-unused"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("train", overrides=[*overrides, *extra])


# What a developer's shell may hold that steers a run: the launch layout, image limits, cluster and wandb settings.
# tests/conftest.py drops them from the test session's environment; subprocess runs also see no GPU and use one
# thread each (two test workers share two cores), unless a test passes its own values.
STEERING_ENV = ("NPROC_PER_NODE", "NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK",
                "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MAX_PIXELS", "MIN_PIXELS", "WANDB_API_KEY", "WANDB_PROJECT",
                "WANDB_ENTITY", "WANDB_MODE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
STEERING_PREFIXES = ("SLURM_", "SUBMITIT_", "ACCELERATE_", "MMR1_TEST_")
RUN_ENV = {"CUDA_VISIBLE_DEVICES": "", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false"}


def clean_environ(environ: dict[str, str]) -> dict[str, str]:
    """``environ`` without the variables that steer a run (STEERING_ENV, STEERING_PREFIXES)."""
    return {k: v for k, v in environ.items() if k not in STEERING_ENV and not k.startswith(STEERING_PREFIXES)}


def run_env(extra: dict | None = None) -> dict[str, str]:
    """The environment of a run a test starts: the session's (already clean), RUN_ENV, then ``extra``."""
    return {**clean_environ(dict(os.environ)), **RUN_ENV, **(extra or {})}


_port_offset = itertools.count(random.Random(os.getpid()).randrange(0, 900, 3))


def free_port() -> int:
    """A free TCP port for a master or a server, unlikely to be another test worker's: below the kernel's ephemeral
    range (32768 and up, where bind-to-0 helpers get theirs), in a block of 1000 per pytest-xdist worker, each call
    the port after the last, checked bindable."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    block = 20000 + 1000 * (int(worker[2:]) if worker[2:].isdigit() else 0)
    for _ in range(300):
        port = block + next(_port_offset) % 1000
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port in {block}..{block + 999}")


def run_cli(args: list[str], *, module: str = "mmr1.train", env: dict | None = None, timeout: int = 600,
            check: bool = True) -> subprocess.CompletedProcess:
    """Run ``python -m <module> <args>`` from the repo root, as a user would (in ``run_env(env)``)."""
    full_env = run_env(env)
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=full_env, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} {' '.join(args)} exited {proc.returncode}\n"
                             f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-6000:]}")
    return proc


def changed_parts(start: str | Path, final: str | Path) -> dict[str, bool]:
    """Which parts (mmr1.models.parts: language_model, vision_tower, aligner) of the model saved at ``final`` differ
    from the one at ``start``, bit for bit: every tensor of a part compared."""
    from safetensors.torch import load_file

    from mmr1.models.parts import VISION_PREFIXES, first_prefix, part_of

    def weights(folder) -> dict:
        out: dict = {}
        for f in sorted(Path(folder).glob("*.safetensors")):
            out.update(load_file(str(f)))
        return out

    a, b = weights(start), weights(final)
    assert a and set(a) == set(b), f"{start} and {final} hold different tensors"
    modules = {n.rsplit(".", i)[0] for n in a for i in range(1, n.count(".") + 1)}
    vision = first_prefix(modules, VISION_PREFIXES)
    changed: dict[str, bool] = {}
    for name in a:
        part = part_of(name, vision)
        changed[part] = changed.get(part, False) or not bool((a[name] == b[name]).all())
    return changed
