"""Sweeps: readable point names, the run-directory record, and the sweep report.

``python -m mmr1.train --multirun +sweep=beta`` (conf/sweep/) names each point by its swept overrides
(``naming``), and the Hydra callback in conf/train.yaml (``callback.SweepReport``) rewrites
``report.md`` / ``report.csv`` / overlay PNGs in the sweep directory after every point
(``report.write_report``; also ``python -m mmr1.sweep.report <sweep_dir>``).
"""

# Nothing heavy is imported here: Hydra imports this package (conf/train.yaml's callback) before any job
# runs, and torch imported that early would ignore the job's hydra.job.env_set (OMP_NUM_THREADS).
