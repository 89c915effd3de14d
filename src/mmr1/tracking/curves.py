"""``curves.png``: reward, per-reward means, KL, grad norm and completion length against step."""

from __future__ import annotations

from pathlib import Path

from mmr1.tracking.metrics import read_metrics

PANELS = [
    ("reward", ["reward"]),
    ("per-reward mean", None),  # every rewards/<name>/mean
    ("kl", ["kl"]),
    ("grad_norm", ["grad_norm"]),
    ("completion length", ["completions/mean_length"]),
]


def _series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for r in rows:
        v = r.get(key)
        if isinstance(v, (int, float)):
            xs.append(r["step"])
            ys.append(float(v))
    return xs, ys


def plot_curves(metrics_path: str | Path, out_path: str | Path, *, events: list[dict] | None = None) -> Path:
    """Draw the run's curves; ``events`` (e.g. guard trips: {"step", "label"}) become vertical lines."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    reward_keys = sorted({k for r in rows for k in r if k.startswith("rewards/") and k.endswith("/mean")})
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4 * len(PANELS), 3.2))
    for ax, (title, keys) in zip(axes, PANELS):
        for key in keys if keys is not None else reward_keys:
            xs, ys = _series(rows, key)
            if xs:
                ax.plot(xs, ys, label=key.removeprefix("rewards/").removesuffix("/mean"), lw=1)
        for ev in events or []:
            ax.axvline(ev["step"], color="red", ls="--", lw=0.8)
        ax.set_title(title)
        ax.set_xlabel("step")
        if keys is None and reward_keys:
            ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(out_path)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
