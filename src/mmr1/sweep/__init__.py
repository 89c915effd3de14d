"""Sweeps: readable point names, the run-directory record, and the sweep report.

``python -m mmr1.train --multirun +sweep=beta`` (conf/sweep/) names each point by its swept overrides
(``naming``), and the Hydra callback in conf/train.yaml (``callback.SweepReport``) rewrites
``report.md`` / ``report.csv`` / overlay PNGs in the sweep directory after every point
(``report.write_report``; also ``python -m mmr1.report <sweep_dir>``).
"""

from mmr1.sweep.naming import register_resolver
from mmr1.sweep.report import write_report
from mmr1.sweep.status import RunRecord, find_runs, read_run, record_failure

__all__ = ["RunRecord", "find_runs", "read_run", "record_failure", "register_resolver", "write_report"]
