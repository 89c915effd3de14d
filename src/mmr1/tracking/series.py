"""Per-step series read from metrics.jsonl rows: one reader for the run's curves, its summary and sweep reports."""

from __future__ import annotations

from mmr1.tracking.jsonl import as_number
from mmr1.tracking.per_task import parse_key

WINDOW = 10  # steps of the rolling means drawn over raw values (curves.png, sweep overlays, summaries)


def series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    xs: list[int] = []
    ys: list[float] = []
    for r in rows:
        v = as_number(r.get(key))
        if v is not None:
            xs.append(int(r.get("step", len(xs) + 1)))
            ys.append(v)
    return xs, ys


def rolling(ys: list[float], window: int = WINDOW) -> list[float]:
    """Trailing mean over up to ``window`` values (shorter at the start)."""
    out, acc = [], 0.0
    for i, y in enumerate(ys):
        acc += y
        if i >= window:
            acc -= ys[i - window]
        out.append(acc / min(i + 1, window))
    return out


def reward_roles(names: list[str]) -> tuple[str | None, str | None]:
    """(accuracy reward, format reward) among reward names: the accuracy reward is the one named like it
    (``external_r1v_acc``, ``accuracy``...), else the first reward that is not ``format``.

    >>> reward_roles(["format", "my_reward"]), reward_roles(["format"])
    (('my_reward', 'format'), (None, 'format'))
    """
    fmt = "format" if "format" in names else None
    others = [n for n in names if n != fmt]
    return next((n for n in others if "acc" in n.lower()), others[0] if others else None), fmt


def reward_names(rows: list[dict]) -> tuple[str | None, str | None]:
    """``reward_roles`` of the logged ``rewards/<name>/mean`` keys."""
    names = []
    for r in rows:
        for k in r:
            parsed = parse_key(k)
            if parsed is not None and parsed[1] is None:  # not a task's mean (mmr1.tracking.per_task)
                if parsed[0] not in names:
                    names.append(parsed[0])
    return reward_roles(names)
