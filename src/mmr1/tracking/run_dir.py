"""The run directory: checked before any work, and what a run writes there besides metrics."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mmr1.tracking.secrets import redact

RUN_INFO = "run_info.json"
# The statuses a run records when it ends; a directory without run_info.json is running (or was killed).
END_STATUSES = ("finished", "guard_gave_up", "interrupted", "failed")

# A tiny run writes a few MB; a checkpoint of the 3B model ~7 GB (bf16 weights) + optimizer state.
MIN_FREE_BYTES = 64 * 1024 * 1024


class RunDirError(RuntimeError):
    """The run directory cannot hold the run (unwritable, or the disk is full)."""


def prepare_run_dir(path: str | Path, min_free_bytes: int = MIN_FREE_BYTES) -> Path:
    """Create the run directory and prove it writable with room to spare, before any training."""
    run_dir = Path(path)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".mmr1_write_probe"
        with open(probe, "wb") as f:
            f.write(b"0" * 4096)
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
    except OSError as err:
        raise RunDirError(f"run directory {run_dir} is not writable: {err.strerror or err}. "
                          "Set hydra.run.dir=<a writable path>.") from err
    free = shutil.disk_usage(run_dir).free
    if free < min_free_bytes:
        raise RunDirError(f"run directory {run_dir} has {free / 2**20:.0f} MiB free, need at least "
                          f"{min_free_bytes / 2**20:.0f} MiB: free disk space or set hydra.run.dir elsewhere.")
    return run_dir


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write via a temp file and rename: readers never see half a file, and a per-process temp name
    keeps concurrent writers (sweep jobs rewriting one report, ranks) from clobbering each other's temp."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(redact(obj), indent=2, sort_keys=True, default=str) + "\n")


def write_config(cfg: DictConfig, run_dir: Path) -> None:
    """The resolved config, secrets redacted."""
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(redact(resolved))))


def write_run_info(run_dir: str | Path, status: str, **fields: Any) -> None:
    """The run's end record, ``run_info.json``: the one writer, so every record has the same shape.

    ``status`` is one of END_STATUSES; ``fields`` are what that ending knows (steps, wall time, the
    error's first line, the checkpoint to resume from, the summary). Secrets are redacted (write_json).
    """
    if status not in END_STATUSES:
        raise ValueError(f"run_info.json status {status!r} is not one of {END_STATUSES}")
    write_json(Path(run_dir) / RUN_INFO, {"status": status, **fields})


def read_run_info(run_dir: str | Path) -> dict[str, Any] | None:
    """``run_info.json`` as a dict, or None when the run has not written it (running, killed) or it is unreadable."""
    try:
        info = json.loads((Path(run_dir) / RUN_INFO).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None
