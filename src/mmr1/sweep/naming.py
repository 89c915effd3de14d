"""Readable names for sweep points: the overrides that vary across the sweep, not only an index.

Hydra names each point's directory ``hydra.sweep.subdir`` (``${hydra.job.num}`` by default) and its
``override_dirname`` holds *every* override of the job, shared ones included (``trainer.max_steps=2,...``),
which grows past the 255-byte limit of a path component on real command lines. The swept keys are
known only to the sweep as a whole: the sweeper's ``params`` and the command-line overrides with sweep
syntax (``a=1,2``, ``range(...)``, ``choice(...)``), both of which Hydra records in the sweep directory's
``multirun.yaml`` before the first job starts. ``${mmr1_point:...}`` reads them from there.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from omegaconf import OmegaConf

from mmr1.config.typed import container

RESOLVER = "mmr1_point"
MAX_NAME = 120  # well under the 255-byte component limit, and still readable in a legend
_UNSAFE = re.compile(r"[^A-Za-z0-9=,._+-]")


def _key_value(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


def _parse(overrides: Iterable[str]):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides(list(overrides))


def swept_keys_of(task_overrides: Iterable[str], sweeper_params: dict | None = None) -> list[str]:
    """Keys that take several values in a sweep: sweep-syntax command-line overrides + sweeper params."""
    keys: list[str] = []
    for o in _parse(task_overrides):
        if o.is_sweep_override() and not o.is_hydra_override():
            keys.append(o.key_or_group)
    for k, v in (sweeper_params or {}).items():
        parsed = _parse([f"{k}={v}"])[0]
        if parsed.is_sweep_override() and parsed.key_or_group not in keys:
            keys.append(parsed.key_or_group)
    return keys


def swept_keys(sweep_dir: str | Path) -> list[str] | None:
    """The swept keys recorded in ``<sweep_dir>/multirun.yaml``; None when there is no such record."""
    path = Path(sweep_dir) / "multirun.yaml"
    if not path.exists():
        return None
    try:
        cfg = OmegaConf.load(path)
        task = [str(t) for t in cfg.hydra.overrides.task]
        params = cfg.hydra.sweeper.get("params")
        params = container(params) if params is not None else {}
        return swept_keys_of(task, params)
    except Exception:  # noqa: BLE001 - an unreadable record only costs the short names, never the sweep
        return None


def point_overrides(job_overrides: Iterable[str], keys: list[str] | None) -> list[str]:
    """The job's overrides restricted to the swept keys (all of them when the keys are unknown)."""
    out = []
    for o in job_overrides:
        key, _ = _key_value(o)
        if key.startswith("hydra.") or (keys is not None and key not in keys):
            continue
        out.append(o.lstrip("+~"))
    return out


def short_label(overrides: list[str]) -> str:
    """``trainer.beta=0.01,optimizer.max_grad_norm=0.5`` -> ``beta=0.01,max_grad_norm=0.5``.

    The last key component is enough to tell points apart unless two swept keys share it; then the
    full key stays.
    """
    leaves = [_key_value(o)[0].rsplit(".", 1)[-1] for o in overrides]
    parts = []
    for o, leaf in zip(overrides, leaves):
        key, value = _key_value(o)
        parts.append(f"{leaf if leaves.count(leaf) == 1 else key}={value}")
    return ",".join(parts)


def point_dirname(num, job_overrides, sweep_dir) -> str:
    """``<num>_<swept overrides>``: the number keeps names unique and in launch order."""
    label = short_label(point_overrides(list(job_overrides or []), swept_keys(sweep_dir)))
    label = _UNSAFE.sub("_", label)[:MAX_NAME]
    return f"{num}_{label}" if label else str(num)


def register_resolver() -> None:
    """``${mmr1_point:${hydra.job.num},${hydra.overrides.task},${hydra.sweep.dir}}`` (conf/train.yaml)."""
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, point_dirname)
