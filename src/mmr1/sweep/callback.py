"""Hydra callback (``hydra.callbacks`` in conf/train.yaml): the sweep report, kept current.

The report is rewritten after every job, not only at the end of the multirun: Hydra's basic sweeper
runs every point of a batch and only then re-raises the first failure, which skips
``on_multirun_end``; and a report that fills in as points finish is what one reads during a long sweep.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from mmr1.sweep.naming import register_resolver
from mmr1.sweep.status import record_failure
from mmr1.sweep.table import write_report

log = logging.getLogger("mmr1.sweep")
TOTAL_ENV = "MMR1_SWEEP_TOTAL"  # points in this sweep, for the progress bar's "[i/N]" label


def count_points(config: DictConfig) -> int | None:
    """Jobs the basic sweeper will launch: the product of every swept value list.

    Hydra's own rule (BasicSweeper.split_arguments, a private class): ``hydra.sweeper.params`` then the
    command line, the last override of a key wins, one job per combination of the discrete sweeps.
    Written here with the public override parser; tests/sweep pins it to Hydra's count.
    """
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        params = config.hydra.sweeper.get("params") or {}
        args = [f"{k}={v}" for k, v in params.items()] + [str(o) for o in config.hydra.overrides.task]
        sizes: dict[str, int] = {}
        for o in OverridesParser.create().parse_overrides(args):
            if o.is_sweep_override() and not o.is_discrete_sweep():
                return None  # an interval sweep: only a sweeper plugin (optuna, ...) can run it
            sizes[o.get_key_element()] = len(list(o.sweep_string_iterator())) if o.is_sweep_override() else 1
        return math.prod(sizes.values())
    except Exception:  # noqa: BLE001 - another sweeper (optuna, ...): no count, just no "/N" in the label
        return None


class SweepReport(Callback):
    def __init__(self, plots: bool = True) -> None:
        self.plots = plots
        register_resolver()  # hydra.sweep.subdir uses it; callbacks are built before any job's dir

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        total = count_points(config)
        if total:
            os.environ[TOTAL_ENV] = str(total)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = config.hydra if "hydra" in config else HydraConfig.get()
        if hc.mode != RunMode.MULTIRUN:
            return
        if getattr(job_return, "status", None) is not None and job_return.status.name == "FAILED":
            # Failures before train.py's own hook (composition, an unwritable run dir) land here;
            # JobReturn.return_value re-raises a failed job's exception (its public way to give it).
            try:
                _ = job_return.return_value
            except Exception as err:  # noqa: BLE001 - whatever the job raised is what gets recorded
                record_failure(hc.runtime.output_dir, err)
        _finish_wandb()  # one wandb run per point, even when the points share this process
        self._write(Path(hc.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        path = self._write(Path(config.hydra.sweep.dir))
        if path is not None:
            print(f"Sweep report: {path}")

    def _write(self, sweep_dir: Path) -> Path | None:
        try:
            write_report(sweep_dir, plots=self.plots)
        except Exception as err:  # noqa: BLE001 - the report must never fail the sweep it describes
            log.warning("sweep report for %s failed: %s", sweep_dir, err)
            return None
        return sweep_dir / "report.md"


def _finish_wandb() -> None:
    import sys

    wandb = sys.modules.get("wandb")  # only if a run imported it
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()
