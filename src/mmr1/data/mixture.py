"""Task mixtures: several tasks' rows in one training set, each row built by its own task, tagged ``task``.

A mixture is a dataset node whose ``tasks`` holds one dataset node per task (conf/dataset/synthetic_mix.yaml
composes each task's YAML there), so each task loads, checks, resizes and splits its rows exactly as it
would alone (mmr1.data.datasets): its own source, prompt suffix, system prompt and solution format, its own
held-out rows. The mixed training set is then fixed up front from the seed:

- shares: ``dataset.tasks.<task>.weight`` over the sum of weights, of ``L`` rows in all, where ``L`` is
  ``dataset.limit`` or, unset, the tasks' training rows together; each task gets its share rounded by
  largest remainder (so the counts add up to ``L`` and follow the weights to within one row);
- rows: a task gives its first rows in its own shuffled order, cycling when its share exceeds its rows
  (a small task weighted up is repeated, a large one weighted down is subsampled);
- order: the ``L`` task slots are permuted by ``numpy.random.default_rng(seed)``.

The same seed therefore gives the same mixed set, row for row, and a resumed run continues it: TRL's
sampler shuffles that fixed set with ``trainer.seed`` and the Trainer's resume skips the batches already
seen, so nothing about the mixture lives in mutable sampler state. The held-out rows are each task's eval
split, one after the other, tagged the same way, so ``mmr1.evaluate`` reports each task's accuracy.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from mmr1.data.config import DatasetConfig
from mmr1.data.datasets import DataBundle, build_datasets
from mmr1.data.images import DecodedImageCache

log = logging.getLogger(__name__)
TASK_COLUMN = "task"


def task_counts(weights: dict[str, float], total: int) -> dict[str, int]:
    """Each task's rows of ``total``, proportional to its weight, rounded by largest remainder.

    >>> task_counts({"count": 1.0, "geoqa": 1.0, "chart": 2.0}, 10)
    {'count': 3, 'geoqa': 2, 'chart': 5}
    """
    for name, w in weights.items():
        if not w > 0:
            raise ValueError(f"dataset.tasks.{name}.weight must be > 0, got {w} (drop the task from the mixture "
                             "instead of weighting it 0)")
    norm = sum(weights.values())
    exact = {k: total * w / norm for k, w in weights.items()}
    counts = {k: int(v) for k, v in exact.items()}
    # Ties go to the task listed first: deterministic whatever the floats.
    by_remainder = sorted(weights, key=lambda k: (-(exact[k] - counts[k]), list(weights).index(k)))
    for k in by_remainder[: total - sum(counts.values())]:
        counts[k] += 1
    return counts


def mixture_order(counts: dict[str, int], seed: int) -> list[tuple[str, int]]:
    """(task, its k-th row) for every slot of the mixed set, in the seed's order.

    >>> mixture_order({"a": 2, "b": 1}, seed=0) == mixture_order({"a": 2, "b": 1}, seed=0)
    True
    >>> sorted(mixture_order({"a": 2, "b": 1}, seed=0))
    [('a', 0), ('a', 1), ('b', 0)]
    """
    slots = [(task, k) for task, n in counts.items() for k in range(n)]
    perm = np.random.default_rng(seed).permutation(len(slots))
    return [slots[i] for i in perm]


def _rows(ds: Any, task: str) -> list[dict]:
    """A task's rows as stored (images still encoded: no decode), tagged with the task."""
    rows = ds.with_format(None).to_list()
    for r in rows:
        if TASK_COLUMN in r and r[TASK_COLUMN] != task:
            raise ValueError(f"dataset.tasks.{task}: its rows already have a {TASK_COLUMN!r} column "
                             f"({r[TASK_COLUMN]!r}), which the mixture writes")
        r[TASK_COLUMN] = task
    return rows


def _to_dataset(rows: list[dict], cache: DecodedImageCache) -> Any:
    """One Arrow table for every task's rows: the union of their columns (None where a task has none), and
    the ``images`` list column as soon as one task has several images per row (a column has one type)."""
    import datasets

    if any("images" in r for r in rows):
        for r in rows:
            if "image" in r:
                r["images"], r["image_ids"], r["image_sizes_before"] = (
                    [r.pop("image")], [r.pop("image_id")], [r.pop("image_size_before")])
    columns = list(dict.fromkeys(k for r in rows for k in r))
    ds = datasets.Dataset.from_list([{k: r.get(k) for k in columns} for r in rows])
    if "image" in ds.column_names:
        ds = ds.cast_column("image", datasets.Image(decode=False))
    else:
        ds = ds.cast_column("images", datasets.List(datasets.Image(decode=False)))
    return ds.with_transform(cache)


def build_mixture(cfg: DatasetConfig, *, min_pixels: int | None, max_pixels: int | None, seed: int,
                  video: Any = None) -> DataBundle:
    """Build every task of ``cfg.tasks``, then mix their training rows (see the module docstring)."""
    mix_seed = seed if cfg.seed is None else cfg.seed
    weights = {name: task.weight for name, task in cfg.tasks.items()}
    for name, task in cfg.tasks.items():
        if task.tasks:
            raise ValueError(f"dataset.tasks.{name}: a mixture inside a mixture; list its tasks in the outer one")
    task_counts(weights, 0)  # a weight <= 0 fails here, before any task is built
    planned = task_counts(weights, cfg.limit) if cfg.limit is not None else None
    bundles: dict[str, DataBundle] = {}
    for name, task in cfg.tasks.items():
        own = dict(vars(task))
        if cfg.eval_size == 0:
            own["eval_size"] = 0  # dataset.eval_size=0 (previews, the reward audit): no task holds rows out
        if planned is not None:  # dataset.limit: no task builds more rows than its share
            own["limit"] = planned[name] if task.limit is None else min(task.limit, planned[name])
        bundles[name] = build_datasets(DatasetConfig(**own), min_pixels=min_pixels, max_pixels=max_pixels,
                                       seed=mix_seed, video=video)
    sizes = {name: len(b.train) for name, b in bundles.items()}
    counts = planned if planned is not None else task_counts(weights, sum(sizes.values()))
    task_rows = {name: _rows(b.train, name) for name, b in bundles.items()}
    train = [task_rows[t][k % sizes[t]] for t, k in mixture_order(counts, mix_seed)]
    evals = [r for name, b in bundles.items() if b.eval is not None for r in _rows(b.eval, name)]
    cache = DecodedImageCache(cfg.image_cache_mb * 2**20)
    first = next(iter(bundles.values()))
    stats: dict[str, Any] = {
        "dataset": cfg.name, "source": "mixture", "rows": len(train), "eval_rows": len(evals),
        "skipped": sum(b.stats["skipped"] for b in bundles.values()),
        "min_pixels": first.limits.min_pixels, "max_pixels": first.limits.max_pixels,
        "max_image_tokens": max(b.stats["max_image_tokens"] for b in bundles.values()),
        "max_images_per_row": max(b.stats["max_images_per_row"] for b in bundles.values()),
        "mixture": {name: {"weight": weights[name], "rows": counts[name], "task_rows": sizes[name],
                           "share": counts[name] / max(1, len(train)),
                           "eval_rows": sum(r[TASK_COLUMN] == name for r in evals)}
                    for name in bundles},
        "tasks": {name: b.stats for name, b in bundles.items()},
    }
    repeated = [f"{n} ({counts[n]} rows from {sizes[n]})" for n in bundles if counts[n] > sizes[n]]
    if repeated:
        log.info("dataset %r: tasks repeated to reach their weight: %s", cfg.name, ", ".join(repeated))
    return DataBundle(_to_dataset(train, cache), _to_dataset(evals, cache) if evals else None, stats,
                      first.limits, first.system_prompt, first.resizer, cache)



def describe_source(dataset: Any) -> str:
    """Where a dataset node's rows come from, for the dry run: its source, or each task's source and weight.

    >>> describe_source({"source": "hf", "tasks": {}})
    'hf'
    >>> describe_source({"source": "synthetic", "tasks": {"a": {"source": "hf", "weight": 2.0}}})
    'mixture of a (hf, weight 2.0)'
    """
    def source(node: Any) -> str:
        value = node["source"]
        return str(getattr(value, "value", value))

    tasks = dataset.get("tasks") or {}
    if not tasks:
        return source(dataset)
    return "mixture of " + ", ".join(f"{name} ({source(t)}, weight {t['weight']})" for name, t in tasks.items())
