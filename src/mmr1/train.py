"""Train: ``python -m mmr1.train [+experiment=NAME] [key=value ...]``.

``main`` is the thin Hydra entry point; ``train(cfg)`` does the work and can be called from Python
with a composed config (tests do). The trainer is TRL's ``GRPOTrainer``; mmr1 only assembles it.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import hydra
from omegaconf import DictConfig

from mmr1.config import CONF_DIR
from mmr1.config.rehearsal import announce
from mmr1.config.schema import register_configs
from mmr1.launch import launch
from mmr1.launch.dry_run import dry_run
from mmr1.launch.layout import LAUNCHED_ENV
from mmr1.reliability.lock import hold_run_dir
from mmr1.sweep.status import record_failure
from mmr1.tracking.quiet import install as quiet_install
from mmr1.tracking.ranks import is_main_process
from mmr1.tracking.summary import print_ending
from mmr1.trainer.setup import open_run

log = logging.getLogger("mmr1.train")

register_configs()


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one GRPO training job described by ``cfg``; return its final metrics (the last logged row)."""
    started = time.time()
    run = open_run(cfg)  # everything that can fail on config alone fails here, before weights, data or GPUs
    if cfg.dry_run:
        dry_run(cfg, run.grpo_kwargs, run.limits, run.dir)  # checks, launch plan, memory estimate
        return {}
    # The one lazy import: importing this entry point (a launching process that only starts ranks, a composed
    # config) loads no torch or TRL (tests/test_startup.py checks it).
    from mmr1.trainer import steps

    resume = steps.checkpoint_to_resume(cfg, run)  # a run directory whose checkpoints are all broken fails here
    data = steps.load_data(cfg, run)  # datasets, the pre-flight of every prompt, the reward audit
    model = steps.load_policy(cfg, data)  # the warm-start, the weights, what trains
    trainer, metrics = steps.build_trainer(cfg, run, model, data)  # TRL's GRPOTrainer, its rollout engine, logging
    outcome = steps.fit(trainer, metrics, cfg, run, resume)  # resume, checkpoints, the guard, Ctrl-C; final/
    return steps.finish(trainer, cfg, run, model, data, outcome, started)


@hydra.main(config_path=CONF_DIR, config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    quiet_install()  # only the library warnings mmr1 itself causes (mmr1.tracking.quiet names each)
    announce(cfg)  # +preset=rehearsal: swap what needs GPUs or downloads, before the launcher counts processes
    # One run per directory: a second one fails here (RunDirLocked), outside the try, so it writes nothing there.
    run_lock = hold_run_dir(cfg)  # a rank mmr1 launched gets a no-op: its launching process holds the lock
    try:
        final = launch(cfg, train)  # here, or through `accelerate launch` (+ a vLLM server): mmr1.launch
    except Exception as err:
        if is_main_process():  # the launching process or global rank 0, not every rank
            record_failure(cfg.run_dir, err)  # run_info.json: failed + the error's first line, for the sweep report
        raise
    finally:
        run_lock.release()  # after record_failure, so that run_info.json is still written under the lock
    if is_main_process() and os.environ.get(LAUNCHED_ENV) != "1":  # once: not from each rank mmr1 launched
        print_ending(cfg.run_dir, with_summary=not cfg.dry_run)  # the summary, then "Run directory: ..." last
    reward = final.get("reward")
    return float(reward) if isinstance(reward, (int, float)) else None


if __name__ == "__main__":
    main()
