"""``curves.png``: what a run did, step by step, drawn to be read at the size it is written.

Six panels: the total reward; each reward's mean (accuracy and format) with the in-training
evaluation's points and the warm-start's gate accuracy as the starting reference (a task mixture: the
accuracy on each task too, dashed); KL (or a note saying
why there is none: ``beta=0`` computes no KL); grad norm; completion length against the cap; and the
share of completions clipped at the cap, the reward-hacking signal seen on the tiny model (it learns to
fill the cap with tags the format regex still accepts). Every series is drawn raw (thin) with its
``WINDOW``-step trailing mean over it (thick): one GRPO step sees a handful of prompts, so the raw line
alone is mostly noise. Guard trips and rollbacks are dashed red verticals.

``plot_curves`` returns what it drew, read back from the figure's own artists (``Panel``/``Line``), so
tests check the plotted data rather than pixels.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmr1.tracking.jsonl import read_metrics
from mmr1.tracking.per_task import parse_key, reward_key
from mmr1.tracking.series import WINDOW, reward_names, rolling, series

# (panel key, title). The order is the grid's, row by row.
PANELS = [
    ("reward", "total reward"),
    ("rewards", "reward means (accuracy, format)"),
    ("kl", "KL to the reference"),
    ("grad_norm", "grad norm (before clipping)"),
    ("length", "completion length (tokens)"),
    ("clipped", "clipped completions (hit the cap)"),
]
KL_OFF_NOTE = "KL not computed: beta=0"
KL_MISSING_NOTE = "KL not logged"
_RAW = {"lw": 0.8, "alpha": 0.35}
_SMOOTH = {"lw": 1.8}


@dataclass
class Line:
    label: str
    kind: str  # raw | rolling | eval | reference | event | cap
    xs: list[float]
    ys: list[float]


@dataclass
class Panel:
    key: str
    title: str
    lines: list[Line] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def line(self, label: str, kind: str) -> Line:
        for ln in self.lines:
            if ln.label == label and ln.kind == kind:
                return ln
        raise KeyError(f"{self.key}: no {kind} line {label!r}; have {[(ln.label, ln.kind) for ln in self.lines]}")

    def kinds(self) -> set[str]:
        return {ln.kind for ln in self.lines}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _draw_series(ax, xs: list[int], ys: list[float], label: str, color: str) -> None:
    """The raw line (thin, faint) and its trailing mean over it (thick), in one colour."""
    few = {"marker": ".", "ms": 5} if len(xs) <= 30 else {}  # a short run: show where the steps are
    ax.plot(xs, ys, color=color, label=label, gid="raw", **_RAW, **few)
    ax.plot(xs, rolling(ys, WINDOW), color=color, label=label, gid="rolling", **_SMOOTH)


def _draw_eval(ax, xs: list[int], ys: list[float], label: str, color: str) -> None:
    ax.plot(xs, ys, color=color, label=label, gid="eval", ls="none", marker="o", ms=6, mec="black", mew=0.8)


def _note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=12, color="0.3",
            gid="note")
    ax.set_xticks([])
    ax.set_yticks([])  # no data: 0..1 ticks would read as a scale


def plot_curves(metrics_path: str | Path, out_path: str | Path, *, events: list[dict] | None = None,
                eval_path: str | Path | None = None, beta: float | None = None,
                warmstart_gate: float | None = None, max_completion_length: int | None = None,
                ) -> dict[str, Panel]:
    """Draw the run's curves into ``out_path``; return what was drawn, panel key -> ``Panel``.

    ``events`` (guard trips, rollbacks: ``{"step", "label"}``) become vertical lines. ``eval_path``
    defaults to ``eval_metrics.jsonl`` beside ``metrics_path``; ``beta`` and ``max_completion_length``
    to the run's ``grpo_args.json`` there. ``warmstart_gate``: the warm-start's greedy held-out accuracy
    (``mmr1.tracking.summary.warmstart_gate``), drawn as the accuracy's starting reference.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    metrics_path = Path(metrics_path)
    run_dir = metrics_path.parent
    rows = read_metrics(metrics_path)
    eval_rows = read_metrics(Path(eval_path) if eval_path is not None else run_dir / "eval_metrics.jsonl")
    grpo_args = _read_json(run_dir / "grpo_args.json")
    if beta is None and isinstance(grpo_args.get("beta"), (int, float)):
        beta = float(grpo_args["beta"])
    if max_completion_length is None and isinstance(grpo_args.get("max_completion_length"), int):
        max_completion_length = grpo_args["max_completion_length"]

    fig, grid = plt.subplots(2, 3, figsize=(14, 7.4))
    axes = dict(zip((k for k, _ in PANELS), grid.flat))
    titles = dict(PANELS)
    _reward_panel(axes["reward"], rows, eval_rows)
    _rewards_panel(axes["rewards"], rows, eval_rows, warmstart_gate)
    _kl_panel(axes["kl"], rows, beta)
    _grad_norm_panel(axes["grad_norm"], rows)
    _length_panel(axes["length"], rows, max_completion_length)
    _clipped_panel(axes["clipped"], rows)
    for key, ax in axes.items():
        _frame(ax, key, titles[key], events or [])
    fig.suptitle(f"{run_dir.name}: raw per step (thin), {WINDOW}-step rolling mean (thick), "
                 "in-training eval (dots)", fontsize=10, color="0.3")
    fig.tight_layout()
    fig.savefig(Path(out_path), dpi=90)
    drawn = _read_back(axes, titles)
    plt.close(fig)
    return drawn


def _reward_panel(ax, rows: list[dict], eval_rows: list[dict]) -> None:
    """Total reward, with the evaluation's."""
    xs, ys = series(rows, "reward")
    if xs:
        _draw_series(ax, xs, ys, "reward", "C0")
    ex, ey = series(eval_rows, "eval_reward")
    if ex:
        _draw_eval(ax, ex, ey, "reward", "C0")
    if not xs and not ex:
        _note(ax, "reward not logged")


def _rewards_panel(ax, rows: list[dict], eval_rows: list[dict], warmstart_gate: float | None) -> None:
    """Each reward's mean: accuracy first, then format, then any other; a mixture's accuracy per task."""
    acc, fmt = reward_names(rows + eval_rows)
    parsed = {p for r in rows for k in r if (p := parse_key(k))} | {
        p for r in eval_rows for k in r if (p := parse_key(k, "eval_rewards/"))}
    names = sorted({name for name, task in parsed if task is None}, key=lambda n: (n != acc, n != fmt, n))
    for i, name in enumerate(names):
        label = f"accuracy ({name})" if name == acc else name
        _series_and_eval(ax, rows, eval_rows, f"rewards/{name}/mean", label, f"C{i + 1}")
    # A task mixture (mmr1.tracking.per_task): the accuracy's rolling mean on each task, dashed, with its eval dots.
    for i, task in enumerate(sorted({task for name, task in parsed if task is not None and name == acc})):
        color, label = f"C{len(names) + i + 1}", f"{task} (accuracy)"
        xs, ys = series(rows, reward_key(str(acc), task))
        if xs:
            ax.plot(xs, rolling(ys, WINDOW), color=color, label=label, gid="task", lw=1.3, ls="--")
        ex, ey = series(eval_rows, "eval_" + reward_key(str(acc), task))
        if ex:
            _draw_eval(ax, ex, ey, label, color)
    if warmstart_gate is not None:
        ax.axhline(warmstart_gate, color="0.3", ls=":", lw=1.4, gid="reference",
                   label=f"warm-start gate {warmstart_gate:.2f} (greedy, held-out)")
    if not names:
        _note(ax, "no rewards/<name>/mean logged")
        return
    values = [y for ln in ax.get_lines() for y in ln.get_ydata() if math.isfinite(y)]
    if min([0.0] + values) >= 0.0 and max([1.0] + values) <= 1.0:
        ax.set_ylim(-0.03, 1.05)  # rewards in [0, 1]: the whole range, so a plateau reads as one


def _series_and_eval(ax, rows: list[dict], eval_rows: list[dict], key: str, label: str, color: str) -> None:
    xs, ys = series(rows, key)
    if xs:
        _draw_series(ax, xs, ys, label, color)
    ex, ey = series(eval_rows, "eval_" + key)
    if ex:
        _draw_eval(ax, ex, ey, label, color)


def _kl_panel(ax, rows: list[dict], beta: float | None) -> None:
    """TRL logs no KL when beta=0 (no reference model): say so instead of an empty frame."""
    xs, ys = series(rows, "kl")
    if xs:
        _draw_series(ax, xs, ys, "kl", "C5")
    else:
        _note(ax, KL_OFF_NOTE if beta == 0 else KL_MISSING_NOTE)


def _grad_norm_panel(ax, rows: list[dict]) -> None:
    xs, ys = series(rows, "grad_norm")
    if not xs:
        _note(ax, "grad_norm not logged")
        return
    _draw_series(ax, xs, ys, "grad_norm", "C6")
    finite = sorted(y for y in ys if math.isfinite(y) and y > 0)
    if finite and finite[-1] > 20 * finite[len(finite) // 2]:
        ax.set_yscale("symlog", linthresh=max(finite[0], 1e-3))  # a spike is orders of magnitude


def _length_panel(ax, rows: list[dict], max_completion_length: int | None) -> None:
    xs, ys = series(rows, "completions/mean_length")
    if xs:
        _draw_series(ax, xs, ys, "mean length", "C7")
    if max_completion_length:
        ax.axhline(max_completion_length, color="black", ls="--", lw=1.0,
                   label=f"cap {max_completion_length}", gid="cap")
        ax.set_ylim(0, max_completion_length * 1.08)
    if not xs:
        _note(ax, "completion length not logged")


def _clipped_panel(ax, rows: list[dict]) -> None:
    xs, ys = series(rows, "completions/clipped_ratio")
    if xs:
        _draw_series(ax, xs, ys, "clipped ratio", "C3")
        ax.set_ylim(-0.03, 1.03)
    else:
        _note(ax, "completions/clipped_ratio not logged")


def _frame(ax, key: str, title: str, events: list[dict]) -> None:
    """Guard events as vertical lines (labelled once, on the reward panel), titles, integer steps, legend."""
    from matplotlib.ticker import MaxNLocator  # matplotlib only when drawing, as in plot_curves

    for i, ev in enumerate(events):
        ax.axvline(ev["step"], color="red", ls="--", lw=1.0, gid="event",
                   label=ev.get("label", "guard") if key == "reward" and i == 0 else f"_{ev.get('label')}")
    ax.set_title(title, fontsize=11)
    ax.set_xlabel("step", fontsize=9)
    ax.tick_params(labelsize=8)
    if ax.get_xticks().size:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps, not 1.25
    ax.grid(alpha=0.25)
    _legend(ax, key)


def _legend(ax, key: str) -> None:
    """One entry per series (its rolling line), plus eval dots, the gate, the cap and the first event."""
    handles, seen = [], set()
    for ln in ax.get_lines():
        kind, label = ln.get_gid(), ln.get_label()
        if label.startswith("_") or kind == "raw":
            continue
        text = {"rolling": label, "eval": f"{label} (eval)"}.get(kind, label)
        if key in ("reward", "kl", "grad_norm", "length", "clipped") and kind == "rolling":
            text = f"rolling mean ({WINDOW})"
        if text in seen:
            continue
        seen.add(text)
        handles.append((ln, text))
    if handles:
        ax.legend([h for h, _ in handles], [t for _, t in handles], fontsize=8, loc="best", framealpha=0.8)


def _read_back(axes: dict, titles: dict[str, str]) -> dict[str, Panel]:
    out = {}
    for key, ax in axes.items():
        panel = Panel(key, titles[key])
        for ln in ax.get_lines():
            label = ln.get_label().lstrip("_")
            panel.lines.append(Line(label, ln.get_gid() or "", [float(x) for x in ln.get_xdata()],
                                    [float(y) for y in ln.get_ydata()]))
        panel.notes = [t.get_text() for t in ax.texts if t.get_gid() == "note"]
        out[key] = panel
    return out
