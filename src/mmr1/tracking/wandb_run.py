"""wandb for a run: online or offline, grouped by sweep, named by overrides, one run per run directory.

TRL's ``report_to: [wandb]`` makes the Trainer's ``WandbCallback`` call ``wandb.init()`` with nothing but a
project, unless a run already exists; ``setup_wandb`` creates that run first, with what the callback
cannot know:

- ``mode``: ``logger.mode: auto`` is online with an API key and offline without one (said once, with the
  ``wandb sync`` command), so a laptop or CI run never blocks on a login prompt;
- ``group`` = the sweep (``beta-2025-01-01_12-00-00``) and ``name`` = the point's overrides
  (``1_beta=0.001``) inside a ``--multirun``, so one sweep is one group of comparable runs;
- ``id`` kept in the run directory (``wandb_run_id``), so a resumed run appends to the same wandb run;
- secrets: the config is redacted and wandb's command-line/metadata capture is off (a token passed as an
  override would otherwise be stored: wandb records sys.argv and the program's metadata by default).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mmr1.tracking.secrets import redact

log = logging.getLogger(__name__)
RUN_ID_FILE = "wandb_run_id"
_announced_offline = False


def has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))  # `wandb login` writes here
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def resolve_mode(mode: str | None) -> str:
    """online | offline | disabled. ``WANDB_MODE`` in the environment wins (tests set ``disabled``)."""
    global _announced_offline
    env = os.environ.get("WANDB_MODE")
    if env:
        return env
    if mode not in (None, "auto"):
        return str(mode)
    if has_api_key():
        return "online"
    if not _announced_offline:
        _announced_offline = True
        log.warning("wandb: no WANDB_API_KEY (or `wandb login`) found, logging offline; upload later with "
                    "`wandb sync <run_dir>/wandb/offline-run-*`")
    return "offline"


def sweep_group_and_name(run_dir: Path) -> tuple[str | None, str | None]:
    """Inside a Hydra multirun: (sweep name + start time, point directory name); else (None, None)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
            return None, None
        hc = HydraConfig.get()
        sweep = hc.runtime.choices.get("sweep") or "multirun"
        return f"{sweep}-{Path(hc.sweep.dir).name}", run_dir.name
    except Exception:  # noqa: BLE001 - no grouping is better than no run
        return None, None


def init_kwargs(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    lg = cfg.logger
    group, name = sweep_group_and_name(run_dir)
    id_file = run_dir / RUN_ID_FILE
    kwargs: dict[str, Any] = {
        "project": os.environ.get("WANDB_PROJECT") or lg.project,
        "entity": lg.entity or None,
        "group": lg.group or group,
        "name": lg.name or name or run_dir.name,
        "tags": list(lg.tags) or None,
        "mode": resolve_mode(lg.mode),
        "dir": str(run_dir),
        "config": redact(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)),
        "resume": "allow",
    }
    if id_file.exists():
        kwargs["id"] = id_file.read_text().strip()
    return kwargs


def setup_wandb(cfg: DictConfig, run_dir: str | Path) -> Any | None:
    """Start this run's wandb run (call on rank 0 only; only when ``logger.report_to`` has wandb)."""
    if "wandb" not in list(cfg.logger.report_to or []):
        return None
    run_dir = Path(run_dir)
    kwargs = init_kwargs(cfg, run_dir)
    if kwargs["mode"] == "disabled":
        return None
    import wandb

    if wandb.run is not None:
        return wandb.run  # started by someone else in this run (sweep points finish theirs in SweepReport)
    settings = wandb.Settings(x_disable_meta=True, save_code=False)
    run = wandb.init(settings=settings, **kwargs)
    (run_dir / RUN_ID_FILE).write_text(run.id)
    return run
