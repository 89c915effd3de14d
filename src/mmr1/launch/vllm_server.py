"""The rollout server of ``rollout=vllm_server``: TRL's ``trl vllm-serve`` command, its health check.

``trl vllm-serve`` (not a hand-written ``vllm serve`` line) because TRL adds the flags its client
needs (NCCL weight-transfer engine, processed logprobs, dev-mode endpoints); mmr1 only chooses the
model, GPUs, ports and memory. vLLM is never imported here: the server is another process.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from mmr1.config.grpo_args import client_host


def _trl_executable() -> str:
    # The `trl` next to this interpreter (same virtualenv), else whichever is on PATH.
    local = Path(sys.executable).parent / "trl"
    return str(local) if local.exists() else (shutil.which("trl") or "trl")


def server_url(rollout: DictConfig) -> str:
    if rollout.server_base_url:
        return str(rollout.server_base_url).rstrip("/")
    return f"http://{client_host(rollout.server_host)}:{rollout.server_port}"


def _mm_processor_kwargs(model: DictConfig, max_model_len: int | None = None) -> dict[str, int]:
    """The run's image limits for vLLM's own processor, so rollout and trainer see the same image tokens
    (TRL has no such setting, TRL issue 6401; a mismatch is vLLM issue 13285's placeholder error).

    With a context (``rollout.max_model_len``) the largest image is also capped to what fits in it: vLLM
    profiles its memory at start-up with a dummy image at ``max_pixels``, and with ``max_pixels`` null
    (Qwen's 12845056 = 16384 tokens) against ClevrCount's 1024 that dummy prompt cannot fit. The cap never
    changes a training image: mmr1 resizes every image itself, and the pre-flight refuses any prompt whose
    image tokens leave no room in the context, so each real image is within (max_model_len - 1) tokens.

    >>> from omegaconf import OmegaConf
    >>> _mm_processor_kwargs(OmegaConf.create({"max_pixels": None, "min_pixels": None}), 1024)["max_pixels"]
    802032
    """
    from mmr1.data import resolve_pixel_limits
    from mmr1.data.images import FACTOR

    limits = resolve_pixel_limits(model.max_pixels, model.min_pixels)
    max_pixels = limits.max_pixels
    if max_model_len is not None:
        max_pixels = min(max_pixels, (max_model_len - 1) * FACTOR * FACTOR)
    return {"min_pixels": min(limits.min_pixels, max_pixels), "max_pixels": max_pixels}


def server_command(cfg: DictConfig, model_path: str | None = None) -> list[str]:
    """The ``trl vllm-serve`` command line for ``cfg.rollout`` (flags: trl/scripts/vllm_serve.py)."""
    r = cfg.rollout
    dtype = r.dtype or cfg.model.torch_dtype or "auto"
    cmd = [
        _trl_executable(), "vllm-serve",
        "--model", str(model_path or cfg.model.name_or_path),
        "--tensor_parallel_size", str(r.tensor_parallel_size),
        "--data_parallel_size", str(r.data_parallel_size),
        "--host", str(r.server_host),
        "--port", str(r.server_port),
        "--gpu_memory_utilization", str(r.gpu_memory_utilization),
        "--dtype", str(dtype),
        "--vllm_model_impl", str(r.model_impl),
    ]
    if r.max_model_len is not None:
        cmd += ["--max_model_len", str(r.max_model_len)]
    if r.enable_prefix_caching is not None:
        cmd += ["--enable_prefix_caching", str(bool(r.enable_prefix_caching)).lower()]
    if r.enforce_eager:
        cmd += ["--enforce_eager", "true"]
    if cfg.model.trust_remote_code:
        cmd += ["--trust_remote_code", "true"]
    # Unknown to `trl vllm-serve`, forwarded by it to `vllm serve` as they are.
    mm_kwargs = _mm_processor_kwargs(cfg.model, r.max_model_len)
    cmd += [f"--mm-processor-kwargs={json.dumps(mm_kwargs, sort_keys=True)}"]
    return cmd + [str(a) for a in r.server_extra_args]


def server_env(gpu_ids: list[str]) -> dict[str, str]:
    return {"CUDA_VISIBLE_DEVICES": ",".join(gpu_ids)} if gpu_ids else {}


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
