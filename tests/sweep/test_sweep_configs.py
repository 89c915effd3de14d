"""Every stored sweep composes, and each swept key is a real config key (a typo would sweep nothing)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from mmr1.train import CONF_DIR

SWEEPS = sorted(p.stem for p in (Path(CONF_DIR) / "sweep").glob("*.yaml"))
EXPECTED = {"beta": {"trainer.beta"}, "grad_clip": {"optimizer.max_grad_norm"},
            "max_pixels": {"model.max_pixels"},
            "combined": {"trainer.beta", "optimizer.max_grad_norm", "model.max_pixels"},
            "algorithm": {"algorithm"}}


@pytest.mark.parametrize("sweep", SWEEPS)
@pytest.mark.parametrize("experiment", [None, "geoqa"])
def test_stored_sweep_keys_exist(sweep, experiment):
    overrides = [f"+sweep={sweep}", "run_dir=/tmp/unused"] + ([f"+experiment={experiment}"] if experiment else [])
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    assert set(params) == EXPECTED[sweep]
    for key, values in params.items():
        assert "," in str(values)
        if (Path(CONF_DIR) / key).is_dir():  # a config group: each value is one of its files
            assert all((Path(CONF_DIR) / key / f"{v}.yaml").exists() for v in str(values).split(",")), values
            continue
        assert OmegaConf.select(cfg, key, default="<absent>") != "<absent>", key
    assert f"sweeps/{sweep}/" in cfg.hydra.sweep.dir
    assert cfg.hydra.callbacks.sweep_report._target_ == "mmr1.sweep.callback.SweepReport"


def test_all_expected_sweeps_are_stored():
    assert set(EXPECTED) <= set(SWEEPS)


@pytest.mark.parametrize(("params", "task"), [
    ({}, ["trainer.beta=0,0.001", "trainer.max_grad_norm=0.5,1.0"]),
    ({"trainer.beta": "0,0.04,0.1"}, ["trainer.seed=1,2"]),
    ({"trainer.beta": "0,0.04,0.1"}, ["trainer.beta=0.5"]),           # the command line wins over params
    ({}, ["trainer.seed=range(1,4)", "model=choice(a,b)", "dry_run=true"]),
])
def test_point_count_is_hydras(params, task):
    """mmr1's count (public parser) equals the basic sweeper's own split (a private class, pinned here)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from mmr1.sweep.callback import count_points

    config = OmegaConf.create({"hydra": {"sweeper": {"params": params}, "overrides": {"task": task}}})
    args = [f"{k}={v}" for k, v in params.items()] + task
    (batch,) = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(args), None)
    assert count_points(config) == len(batch) > 0
