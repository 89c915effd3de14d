"""One comparison for a sweep: ``report.md``, ``report.csv`` and overlay plots in the sweep directory.

One row per run: its swept overrides, status, steps, final/best accuracy reward, format reward, KL, max
grad norm, completion length, wall time, whether it collapsed, and its evaluation accuracy. "Final" is
the mean of the last ``WINDOW`` logged steps and "best" the highest ``WINDOW``-step rolling mean: single
GRPO steps see 4-16 prompts, so one step's reward is too noisy to rank runs by.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from mmr1.config.typed import container
from mmr1.evaluation.protocol import published
from mmr1.sweep.naming import point_overrides, short_label, swept_keys
from mmr1.sweep.status import RunRecord, find_runs, read_run, status_cell
from mmr1.tracking.per_task import reward_key, task_names
from mmr1.tracking.run_dir import write_atomic  # parallel sweep jobs may all rewrite the report
from mmr1.tracking.series import WINDOW, reward_names, rolling, series

COLUMNS = ["run", "overrides", "algorithm", "status", "steps", "acc_final", "acc_best", "format_final", "kl_final",
           "clip_low", "clip_high", "grad_norm_max", "completion_length", "wall_time_s", "collapsed", "eval_acc",
           "eval_step"]
PLOTS = {  # file -> (metrics key or "acc" for the accuracy reward, title)
    "reward.png": ("acc", f"accuracy reward (raw, {WINDOW}-step rolling mean; dots: in-training eval)"),
    "kl.png": ("kl", f"KL to the reference ({WINDOW}-step rolling mean)"),
    "grad_norm.png": ("grad_norm", f"grad norm before clipping ({WINDOW}-step rolling mean)"),
    "completion_length.png": ("completions/mean_length", f"mean completion length ({WINDOW}-step rolling mean)"),
    # The reward-hacking signal seen on the tiny model: completions filling the cap.
    "clipped_ratio.png": ("completions/clipped_ratio", f"clipped completions, share ({WINDOW}-step rolling mean)"),
}


def _tail_mean(ys: list[float]) -> float | None:
    tail = ys[-WINDOW:]
    return sum(tail) / len(tail) if tail else None


def guard_trips(rec: RunRecord) -> list[dict]:
    """The collapse guard's trips (guard_events.jsonl also records its rollbacks and give-ups). A trip is
    GuardCallback.on_log's record (mmr1.reliability.guard): ``event``, ``action`` and the Trip's fields
    (``step``, ``reason``, ``streak_start``, ``numbers``)."""
    return [e for e in rec.guard_events if e.get("event") == "trip"]


def collapse_verdict(rec: RunRecord) -> str:
    """``no``, ``yes (...)`` or ``-`` (too short to tell), by the collapse guard's own definition: its
    recorded trips when it ran, else its detector replayed over the run's metrics with the run's guard
    settings (config.yaml), so the report and the guard can never disagree about what a collapse is."""
    trips = guard_trips(rec)
    if trips:
        ev = trips[0]
        return f"yes (guard: {len(trips)} trip(s), first at step {ev['step']}: {ev['reason']} -> {ev['action']})"
    from mmr1.reliability.config import as_guard_config
    from mmr1.reliability.guard import CollapseDetector

    guard = as_guard_config(_run_config(rec).get("guard"))
    detector = CollapseDetector(guard)
    for row in rec.metrics:
        trip = detector.update(row.get("step", 0), row)
        if trip is not None:
            return f"yes (guard replay: {trip.describe()})"
    return "-" if len(rec.metrics) < guard.min_history else "no"


def _run_config(rec: RunRecord) -> dict[str, Any]:
    from omegaconf import OmegaConf

    path = rec.path / "config.yaml"
    if not path.exists():
        return {}
    return container(OmegaConf.load(path), resolve=False)


def _algorithm(rec: RunRecord) -> str | None:
    """The run's conf/algorithm/ choice (trainer.algorithm in its config.yaml); None when it chose none."""
    return (_run_config(rec).get("trainer") or {}).get("algorithm")


def summarize(rec: RunRecord, label: str) -> dict[str, Any]:
    acc, fmt = reward_names(rec.metrics)
    _, acc_ys = series(rec.metrics, f"rewards/{acc}/mean") if acc else ([], [])
    _, fmt_ys = series(rec.metrics, f"rewards/{fmt}/mean") if fmt else ([], [])
    _, grad = series(rec.metrics, "grad_norm")
    steps = rec.info.get("steps")
    if steps is None and rec.metrics:
        steps = rec.metrics[-1].get("step")
    row: dict[str, Any] = {
        "run": rec.path.name, "overrides": label, "algorithm": _algorithm(rec), "status": status_cell(rec),
        "steps": steps, "acc_final": _tail_mean(acc_ys), "acc_best": max(rolling(acc_ys)) if acc_ys else None,
        "format_final": _tail_mean(fmt_ys), "kl_final": _tail_mean(series(rec.metrics, "kl")[1]),
        # TRL's share of tokens whose ratio was clipped below 1 - epsilon / above 1 + epsilon_high (last-WINDOW mean).
        "clip_low": _tail_mean(series(rec.metrics, "clip_ratio/low_mean")[1]),
        "clip_high": _tail_mean(series(rec.metrics, "clip_ratio/high_mean")[1]),
        "grad_norm_max": max(grad) if grad else None,
        "completion_length": _tail_mean(series(rec.metrics, "completions/mean_length")[1]),
        "wall_time_s": rec.wall_time_s, "collapsed": collapse_verdict(rec), "eval_acc": None, "eval_step": None,
    }
    # A task mixture (mmr1.tracking.per_task): each task's final accuracy reward and its evaluation accuracy.
    evaluated = (rec.eval_json or {}).get("tasks") or {}
    for task in sorted(set(task_names(rec.metrics, acc) if acc else []) | set(evaluated)):
        row[f"acc_final/{task}"] = _tail_mean(series(rec.metrics, reward_key(acc, task))[1]) if acc else None
        eval_ys = series(rec.eval_metrics, "eval_" + reward_key(acc, task))[1] if acc else []
        row[f"eval_acc/{task}"] = (evaluated.get(task) or {}).get("accuracy", eval_ys[-1] if eval_ys else None)
    # Evaluation: mmr1.evaluate's eval.json in the run dir wins (greedy, the number the READMEs quote);
    # else the last in-training evaluation (TRL's, at trainer.eval_steps).
    if rec.eval_json and rec.eval_json.get("accuracy") is not None:
        bench = (rec.eval_json.get("benchmark") or {}).get("name")
        row["eval_acc"], row["eval_step"] = rec.eval_json["accuracy"], bench or "eval.json"
        if rec.eval_json.get("baselines"):  # a benchmark's published numbers, beside the run's score
            row["published"] = published(rec.eval_json["baselines"])
    elif acc:
        xs, ys = series(rec.eval_metrics, f"eval_rewards/{acc}/mean")
        if ys:
            row["eval_acc"], row["eval_step"] = ys[-1], xs[-1]
    return row


def point_overrides_for(runs: list[RunRecord], sweep_dir: Path) -> list[list[str]]:
    """Each run's swept overrides: the keys recorded by Hydra's multirun.yaml, else those that differ."""
    keys = swept_keys(sweep_dir)
    if keys is None and len(runs) > 1:
        seen: dict[str, set[str]] = {}
        for rec in runs:
            for o in rec.overrides:
                k, _, v = o.lstrip("+~").partition("=")
                seen.setdefault(k, set()).add(v)
        keys = [k for k, vs in seen.items() if len(vs) > 1] or None
    return [point_overrides(rec.overrides, keys) for rec in runs]


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.3g}" if abs(v) >= 100 else f"{v:.3f}"
    return str(v).replace("|", "\\|")


def task_columns(rows: list[dict]) -> list[str]:
    """A mixture's per-task columns (``acc_final/<task>``, ``eval_acc/<task>``) over all runs, task by task."""
    tasks = sorted({k.split("/", 1)[1] for r in rows for k in r if k.startswith("acc_final/")})
    return [f"{kind}/{t}" for t in tasks for kind in ("acc_final", "eval_acc")]


def render_markdown(rows: list[dict], sweep_dir: Path, plots: list[str]) -> str:
    per_task = task_columns(rows)
    head = ["run", "overrides", "algorithm", "status", "steps", f"acc final ({WINDOW})", "acc best", "format", "KL",
            "clip low", "clip high", "max grad norm", "compl. len", "wall s", "collapsed", "eval acc",
            *(f"{t} {'acc' if kind == 'acc_final' else 'eval'}" for kind, t in (c.split("/", 1) for c in per_task))]
    published = any(r.get("published") for r in rows)
    head += ["published (before -> after)"] if published else []
    keys = COLUMNS[:-2] + ["eval_acc"]
    lines = [f"# Sweep report: {sweep_dir}", "",
             f"{len(rows)} runs: " + ", ".join(f"{n} {s}" for s, n in _count_status(rows).items()), "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [_fmt(r[k]) for k in keys]
        if r["wall_time_s"] is not None:
            cells[keys.index("wall_time_s")] = f"{r['wall_time_s']:.0f}"
        if r["eval_acc"] is not None:
            cells[-1] = f"{_fmt(r['eval_acc'])} @{r['eval_step']}"
        cells += [_fmt(r.get(k)) for k in per_task]
        cells += [_fmt(r.get("published"))] if published else []
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"acc = mean accuracy reward; final = mean of the last {WINDOW} logged steps, best = highest "
              f"{WINDOW}-step rolling mean; format, KL and completion length are last-{WINDOW} means. "
              "collapsed: the collapse guard's trips when it ran, else its detector replayed over the run's "
              "metrics with the run's guard settings (a reward drop together with a KL or grad-norm spike for "
              "guard.patience steps, or a non-finite loss); '-' = fewer than guard.min_history steps. "
              "clip low / high: TRL's share of tokens whose importance ratio was clipped below 1 - epsilon / above "
              f"1 + epsilon_high (last-{WINDOW} means); algorithm: the run's conf/algorithm/ choice. "
              "eval acc: mmr1.evaluate's eval.json when present (@ its benchmark, with the benchmark's published "
              "numbers beside it), else the "
              "last in-training evaluation (@ its step). A task mixture adds each task's final accuracy "
              "reward (<task> acc) and evaluation accuracy (<task> eval).", ""]
    lines += [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def _count_status(rows: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in rows:
        s = r["status"].split(" ", 1)[0]
        counts[s] = counts.get(s, 0) + 1
    return counts


def _beta(rec: RunRecord) -> float | None:
    try:
        import json

        beta = json.loads((rec.path / "grpo_args.json").read_text()).get("beta")
    except (OSError, ValueError):
        return None
    return float(beta) if isinstance(beta, (int, float)) else None


def _metric_key(rec: RunRecord, key: str) -> str:
    """The metrics key a plot draws for ``rec``: ``key``, or for "acc" the run's own accuracy reward ("" if none)."""
    if key != "acc":
        return key
    acc, _ = reward_names(rec.metrics)
    return f"rewards/{acc}/mean" if acc else ""


def _draw_run(ax: Any, rec: RunRecord, key: str, label: str, color: str) -> bool:
    """One run's curve on ``ax`` (False when it logged nothing for this plot)."""
    k = _metric_key(rec, key)
    xs, ys = series(rec.metrics, k)
    if not xs:
        return False
    # Raw per step (faint) under its rolling mean: single GRPO steps are too noisy to compare runs by.
    ax.plot(xs, ys, color=color, alpha=0.2, lw=0.8)
    ax.plot(xs, rolling(ys), color=color, lw=1.6, label=label)
    if key == "acc" and k:
        ex, ey = series(rec.eval_metrics, "eval_" + k)
        if ex:
            ax.plot(ex, ey, color=color, ls="none", marker="o", ms=6, mec="black", mew=0.8)
    for ev in guard_trips(rec):
        ax.axvline(ev["step"], color=color, ls="--", lw=0.8)
    return True


def _finish_axes(ax: Any, key: str, title: str, runs: list[RunRecord], drawn: int, no_kl: list[str]) -> None:
    """What a plot says besides its curves: why runs are missing, a readable scale, title, labels, legend."""
    if no_kl:
        note = "KL not computed (beta=0): " + ", ".join(no_kl)
        ax.text(0.5, 0.5 if not drawn else 0.95, note, ha="center", va="center" if not drawn else "top",
                transform=ax.transAxes, fontsize=9, color="0.3", wrap=True)
    elif not drawn:
        ax.text(0.5, 0.5, "not logged by any run", ha="center", va="center", transform=ax.transAxes)
    if key == "grad_norm" and drawn:
        vals = sorted(y for r in runs for y in series(r.metrics, key)[1] if math.isfinite(y) and y > 0)
        if vals and vals[-1] > 20 * vals[len(vals) // 2]:  # a spike is orders of magnitude; keep the rest readable
            ax.set_yscale("symlog", linthresh=vals[len(vals) // 2])
    if key == "completions/clipped_ratio" and drawn:
        ax.set_ylim(-0.03, 1.03)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("step")
    ax.grid(alpha=0.25)
    if drawn:
        ax.legend(fontsize=8, loc="best")


def plot_overlays(runs: list[RunRecord], labels: list[str], out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    written = []
    for fname, (key, title) in PLOTS.items():
        fig, ax = plt.subplots(figsize=(7, 4))
        drawn, no_kl = 0, []
        for i, (rec, label) in enumerate(zip(runs, labels)):
            if _draw_run(ax, rec, key, label, f"C{i % 10}"):
                drawn += 1
            elif key == "kl" and _beta(rec) == 0:
                no_kl.append(label)
        _finish_axes(ax, key, title, runs, drawn, no_kl)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90)
        plt.close(fig)
        write_atomic(out_dir / fname, buf.getvalue())
        written.append(fname)
    return written


def write_report(sweep_dir: str | Path, *, plots: bool = True) -> list[dict]:
    """Write report.md, report.csv (and the overlay PNGs) into ``sweep_dir``; return the rows."""
    sweep_dir = Path(sweep_dir)
    runs = [read_run(p) for p in find_runs(sweep_dir)]
    overrides = point_overrides_for(runs, sweep_dir)
    rows = [summarize(rec, ",".join(ov)) for rec, ov in zip(runs, overrides)]
    labels = [short_label(ov) or rec.path.name for rec, ov in zip(runs, overrides)]
    written = plot_overlays(runs, labels, sweep_dir) if plots and runs else []
    buf = io.StringIO()
    published = ["published"] if any(r.get("published") for r in rows) else []
    writer = csv.DictWriter(buf, fieldnames=COLUMNS + task_columns(rows) + published)
    writer.writeheader()
    writer.writerows(rows)
    from mmr1.tracking.secrets import redact  # an override or error message may carry a secret

    write_atomic(sweep_dir / "report.csv", redact(buf.getvalue()))
    write_atomic(sweep_dir / "report.md", redact(render_markdown(rows, sweep_dir, written)))
    return rows
