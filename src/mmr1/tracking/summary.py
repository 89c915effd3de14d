"""The end of a run, as the user reads it: a few lines of summary, then the run directory.

``build_summary`` reads the run directory's files (``metrics.jsonl``, ``eval_metrics.jsonl``,
``guard_events.jsonl``, ``reward_failures.jsonl``) into a JSON-able dict, which ``mmr1.train`` stores
in ``run_info.json`` under ``summary``; ``format_summary`` turns it into the lines printed before
``Run directory: ...``. ``print_ending`` is what the one process that speaks for the run calls
(the launching process, not each rank): the summary from ``run_info.json`` and the run directory.

Reward and accuracy are compared as "first ``WINDOW`` logged steps -> last ``WINDOW``" (the
sweep report's window), halved for runs shorter than two windows so the two ends never overlap.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from mmr1.tracking.jsonl import read_metrics
from mmr1.tracking.series import WINDOW, reward_names, series

GUARD_EVENTS = "guard_events.jsonl"  # mmr1.reliability.guard.EVENTS_FILE
REWARD_FAILURES = "reward_failures.jsonl"  # mmr1.rewards.funcs.FAILURES_FILE
WARMSTART_INFO = "mmr1_warmstart.json"  # next to a cached warm-start (mmr1.models.warmstart)
_STATUS = {"finished": "finished", "guard_gave_up": "stopped by the collapse guard (gave up)",
           "interrupted": "interrupted", "failed": "failed"}


def warmstart_gate(model_path: str | Path | None) -> float | None:
    """The warm-start's last greedy held-out gate accuracy, if ``model_path`` is a cached warm-start."""
    if not model_path:
        return None
    try:
        info = json.loads((Path(model_path) / WARMSTART_INFO).read_text())
    except (OSError, ValueError):
        return None
    acc = info.get("gate_accuracy")
    return float(acc) if isinstance(acc, (int, float)) else None


def _ends(xs: list[int], ys: list[float]) -> dict[str, Any] | None:
    ys_f = [(x, y) for x, y in zip(xs, ys) if math.isfinite(y)]
    if not ys_f:
        return None
    w = min(WINDOW, max(1, len(ys_f) // 2))
    first, last = ys_f[:w], ys_f[-w:]
    return {"first": round(sum(y for _, y in first) / w, 4), "last": round(sum(y for _, y in last) / w, 4),
            "window": w, "first_steps": [first[0][0], first[-1][0]], "last_steps": [last[0][0], last[-1][0]]}


def _reward_failures(run_dir: Path, rows: list[dict], world_size: int) -> dict[str, Any]:
    """Failed reward items. ``rewards/<name>/timeouts|errors`` is TRL's mean per reward call over the
    ranks (GRPOTrainer._log_metric), so a row's value x world_size is that step's count when each rank
    scores once per logged step (the default); reward_failures.jsonl keeps only the first few items."""
    out: dict[str, Any] = {"timeouts": 0, "errors": 0, "steps": 0}
    kinds = {"timeout": "timeouts", "error": "errors"}
    records = read_metrics(run_dir / REWARD_FAILURES)
    from_file = {"timeouts": 0, "errors": 0}
    for rec in records:
        k = kinds.get(str(rec.get("kind")))
        if k:
            from_file[k] += 1
    from_metrics = {"timeouts": 0.0, "errors": 0.0}
    for r in rows:
        hit = False
        for key, v in r.items():
            if key.startswith("rewards/") and key.endswith(("/timeouts", "/errors")) and isinstance(v, (int, float)):
                if v > 0 and math.isfinite(v):
                    from_metrics[key.rsplit("/", 1)[1]] += v * world_size
                    hit = True
        out["steps"] += hit
    for k in ("timeouts", "errors"):
        out[k] = max(from_file[k], round(from_metrics[k]))
    out["logged"] = len(records)
    return out


def _guard(run_dir: Path) -> dict[str, Any]:
    events = read_metrics(run_dir / GUARD_EVENTS)
    trips = [e for e in events if e.get("event", "trip") == "trip"]
    return {"trips": len(trips), "rollbacks": sum(1 for e in events if e.get("event") == "rollback"),
            "gave_up": any(e.get("event") == "gave_up" for e in events),
            "first_trip_step": trips[0].get("step") if trips else None,
            "first_trip_reason": trips[0].get("reason") if trips else None}


def _sweep_report(run_dir: Path) -> Path | None:
    """A sweep point's run directory sits in the sweep directory, where Hydra writes multirun.yaml
    before the first job and mmr1.sweep.callback writes report.md as each point ends."""
    sweep = run_dir.resolve().parent
    return sweep / "report.md" if (sweep / "multirun.yaml").exists() else None


def build_summary(run_dir: str | Path, *, status: str, steps: int, wall_time_s: float, world_size: int = 1,
                  max_steps: int | None = None, warmstart_gate: float | None = None) -> dict[str, Any]:
    """What the run did, from its files: the dict ``format_summary`` prints and run_info.json keeps."""
    run_dir = Path(run_dir)
    rows = read_metrics(run_dir / "metrics.jsonl")
    eval_rows = read_metrics(run_dir / "eval_metrics.jsonl")
    acc, _ = reward_names(rows)
    summary: dict[str, Any] = {
        "status": status, "steps": steps, "max_steps": max_steps, "wall_time_s": round(float(wall_time_s), 1),
        "world_size": world_size, "logged_steps": len(rows),
        "reward": _ends(*series(rows, "reward")),
        "accuracy": None, "accuracy_metric": f"rewards/{acc}/mean" if acc else None,
        "warmstart_gate": warmstart_gate, "eval": None,
        "guard": _guard(run_dir), "reward_failures": _reward_failures(run_dir, rows, world_size),
    }
    if acc:
        summary["accuracy"] = _ends(*series(rows, f"rewards/{acc}/mean"))
        ex, ey = series(eval_rows, f"eval_rewards/{acc}/mean")
        if ex:
            summary["eval"] = {"accuracy": round(ey[-1], 4), "step": ex[-1], "metric": f"eval_rewards/{acc}/mean",
                               "points": len(ex)}
    files = [run_dir / f for f in ("curves.png", "metrics.jsonl", "eval_metrics.jsonl")]
    if summary["guard"]["trips"]:
        files.append(run_dir / GUARD_EVENTS)
    if summary["reward_failures"]["logged"]:
        files.append(run_dir / REWARD_FAILURES)
    summary["files"] = [str(p) for p in files if p.exists()]
    report = _sweep_report(run_dir)
    if report is not None:
        summary["files"].append(str(report))  # rewritten as soon as this point ends
    return summary


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _span(ends: dict[str, Any]) -> str:
    w = ends["window"]
    return f"{ends['first']:.3f} -> {ends['last']:.3f}   (mean of the first {w} -> last {w} logged steps)"


def format_summary(summary: dict[str, Any], run_dir: str | Path | None = None) -> str:
    """A few short lines; file paths relative to ``run_dir`` when inside it."""
    status = _STATUS.get(str(summary.get("status")), str(summary.get("status")))
    steps = summary.get("steps")
    of = f"/{summary['max_steps']}" if summary.get("max_steps") and summary["max_steps"] != steps else ""
    n = summary.get("world_size") or 1
    noun = "step" if steps == 1 and not of else "steps"
    lines = [f"Run {status}: {steps}{of} {noun} in {_duration(summary.get('wall_time_s') or 0)}"
             f" ({n} process{'es' if n != 1 else ''})"]
    if summary.get("reward"):
        lines.append(f"  reward     {_span(summary['reward'])}")
    if summary.get("accuracy"):
        name = summary["accuracy_metric"].removeprefix("rewards/").removesuffix("/mean")
        lines.append(f"  accuracy   {summary['accuracy']['first']:.3f} -> {summary['accuracy']['last']:.3f}   "
                     f"({name}"
                     + (f"; warm-start gate {summary['warmstart_gate']:.2f}, greedy held-out"
                        if summary.get("warmstart_gate") is not None else "") + ")")
    ev = summary.get("eval")
    if ev:
        lines.append(f"  held-out   {ev['accuracy']:.3f} accuracy at step {ev['step']} (in-training eval)")
    g = summary.get("guard") or {}
    if g.get("trips"):
        more = f", {g['rollbacks']} rollback(s)" if g.get("rollbacks") else ""
        more += ", gave up" if g.get("gave_up") else ""
        lines.append(f"  guard      {g['trips']} trip(s), first at step {g['first_trip_step']} "
                     f"({g['first_trip_reason']}){more}")
    else:
        lines.append("  guard      no trips")
    f = summary.get("reward_failures") or {}
    if f.get("timeouts") or f.get("errors"):
        lines.append(f"  rewards    {f['timeouts']} timeout(s), {f['errors']} error(s) in {f['steps']} step(s)")
    else:
        lines.append("  rewards    no failures or timeouts")
    files = summary.get("files") or []
    if files:
        base = Path(run_dir).resolve() if run_dir is not None else None

        def rel(p: str) -> str:
            path = Path(p).resolve()
            return str(path.relative_to(base)) if base is not None and path.is_relative_to(base) else str(path)

        lines.append("  open       " + "  ".join(rel(p) for p in files))
    return "\n".join(lines)


def print_ending(run_dir: str | Path, *, with_summary: bool = True) -> None:
    """The run's last lines: its summary from run_info.json (when it has one), then the run directory."""
    run_dir = Path(run_dir).resolve()
    if with_summary:
        try:
            summary = json.loads((run_dir / "run_info.json").read_text()).get("summary")
        except (OSError, ValueError):
            summary = None
        if summary:
            print(format_summary(summary, run_dir))
    print(f"Run directory: {run_dir}", flush=True)
