"""What a run directory says about its run: status, overrides, metrics, guard trips, evaluations.

Everything is read from files, never from a live process, so the report works on a sweep that ran on
another machine or is still running: ``run_info.json`` (written by ``mmr1.train`` when the run ends,
``mmr1.tracking.run_dir.write_run_info``, its one writer), ``metrics.jsonl`` / ``eval_metrics.jsonl`` (one row
per logged step), ``guard_events.jsonl`` (collapse-guard trips, when the guard is on), ``eval.json`` (``mmr1.evaluate``)
and Hydra's ``.hydra/overrides.yaml``.
"""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmr1.tracking.jsonl import read_metrics
from mmr1.tracking.run_dir import RUN_INFO, read_run_info, write_run_info

GUARD_EVENTS = "guard_events.jsonl"
# A run without run_info.json is running, unless nothing in it changed for this long: a killed process
# (kill -9, node lost) writes no end record, and calling it "running" forever would hide that.
STALE_AFTER_S = 3600.0
_PROGRESS_FILES = ("metrics.jsonl", "eval_metrics.jsonl", "train.log", "config.yaml", ".hydra/config.yaml")


def first_error_line(err: BaseException) -> str:
    """``TypeName: first line of the message`` -- what a table cell can hold."""
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    if not lines:
        return type(err).__name__
    first = lines[0]
    if first.endswith(":") and len(lines) > 1:  # "...does not fit:" says nothing without its first item
        first = f"{first} {lines[1].lstrip('- ')}"
    return f"{type(err).__name__}: {first}"


def record_failure(run_dir: str | Path, err: BaseException, started: float | None = None) -> None:
    """Write ``run_info.json`` with status failed (unless the run already wrote its own end record).

    Never raises: it runs while another exception is propagating, which must stay the one reported.
    """
    try:
        if (read_run_info(run_dir) or {}).get("status") not in (None, "running"):
            return
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        info: dict[str, Any] = {"error": first_error_line(err),  # redacted by the writer, like the rest
                                "traceback_tail": traceback.format_exception(err)[-3:]}
        rows = read_metrics(Path(run_dir) / "metrics.jsonl")
        if rows:
            info["steps"] = rows[-1].get("step")
        if started is not None:
            info["wall_time_s"] = round(time.time() - started, 1)
        write_run_info(run_dir, "failed", **info)
    except Exception:  # noqa: BLE001 - recording a failure must never mask the failure being recorded
        pass


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and any((path / f).exists() for f in (RUN_INFO, "metrics.jsonl", "config.yaml",
                                                              ".hydra/overrides.yaml"))


def find_runs(sweep_dir: str | Path) -> list[Path]:
    """Run directories directly under a sweep directory (or the directory itself if it is a run)."""
    root = Path(sweep_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"no such directory: {root}")
    runs = [p for p in root.iterdir() if not p.name.startswith(".") and is_run_dir(p)]
    if not runs and is_run_dir(root):
        return [root]

    def order(p: Path):  # Hydra's job number first (the "<num>_" prefix), then name
        head = p.name.split("_", 1)[0]
        return (0, int(head), p.name) if head.isdigit() else (1, 0, p.name)

    return sorted(runs, key=order)


@dataclass
class RunRecord:
    path: Path
    status: str  # finished | failed | running | stale | whatever run_info.json says (e.g. stopped)
    error: str | None = None
    overrides: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict] = field(default_factory=list)
    eval_metrics: list[dict] = field(default_factory=list)
    guard_events: list[dict] = field(default_factory=list)
    eval_json: dict[str, Any] | None = None
    wall_time_s: float | None = None
    idle_s: float | None = None  # seconds since the run last wrote anything (running runs)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def job_overrides(run_dir: Path) -> list[str]:
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.exists():
        return []
    from omegaconf import OmegaConf

    try:
        return [str(o) for o in OmegaConf.to_container(OmegaConf.load(path)) or []]
    except Exception:  # noqa: BLE001 - a torn or foreign overrides.yaml only costs the overrides column
        return []


def _started_at(run_dir: Path) -> float | None:
    times = [p.stat().st_mtime for p in (run_dir / ".hydra" / "config.yaml", run_dir / "config.yaml") if p.exists()]
    return min(times) if times else None


def read_run(run_dir: str | Path, now: float | None = None) -> RunRecord:
    run_dir = Path(run_dir)
    now = time.time() if now is None else now
    info = read_run_info(run_dir) or {}
    rec = RunRecord(path=run_dir, status=str(info.get("status") or "running"), info=info,
                    overrides=job_overrides(run_dir))
    rec.error = info.get("error")
    rec.metrics = read_metrics(run_dir / "metrics.jsonl")
    rec.eval_metrics = read_metrics(run_dir / "eval_metrics.jsonl")
    rec.guard_events = read_metrics(run_dir / GUARD_EVENTS)
    rec.eval_json = _read_json(run_dir / "eval.json")
    rec.wall_time_s = info.get("wall_time_s")
    if rec.status == "running" and _is_dry_run(run_dir):
        rec.status = "dry run"  # config and GRPO arguments only: it never writes an end record
    if rec.status == "running":
        touched = [p.stat().st_mtime for f in _PROGRESS_FILES if (p := run_dir / f).exists()]
        rec.idle_s = now - max(touched) if touched else None
        started = _started_at(run_dir)
        if started is not None:
            rec.wall_time_s = round((max(touched) if touched else now) - started, 1)
        if rec.idle_s is not None and rec.idle_s > STALE_AFTER_S:
            rec.status = "stale"
    return rec


def _is_dry_run(run_dir: Path) -> bool:
    path = run_dir / "config.yaml"
    try:
        return any(line.strip() == "dry_run: true" for line in path.read_text().splitlines())
    except OSError:
        return False


def status_cell(rec: RunRecord) -> str:
    if rec.status == "failed":
        return f"failed ({rec.error})" if rec.error else "failed"
    if rec.status == "stale":
        return f"stale (no update for {(rec.idle_s or 0) / 3600:.1f} h: killed?)"
    return rec.status
