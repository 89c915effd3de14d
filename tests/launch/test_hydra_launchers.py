"""The sweep launchers: conf/hydra/launcher/{slurm,local}.yaml extend hydra-submitit-launcher's own
configs, and every SLURM setting reaches the sbatch script submitit would submit (no SLURM needed)."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from mmr1.train import CONF_DIR


def _launcher(overrides: list[str]):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, "run_dir=/tmp/unused"], return_hydra_config=True)
    return cfg.hydra.launcher


def test_local_extends_the_plugins_local_launcher():
    launcher = _launcher(["hydra/launcher=local"])
    assert launcher._target_.endswith("submitit_launcher.LocalLauncher")
    assert (launcher.timeout_min, launcher.gpus_per_node, launcher.tasks_per_node) == (600, 0, 1)


def test_slurm_settings_reach_the_sbatch_script(tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit")
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    # submitit's SLURM executor only checks that `srun` exists; nothing is submitted.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{__import__('os').environ['PATH']}")
    launcher = _launcher(["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.nodes=2",
                          "hydra.launcher.timeout_min=90", "hydra.launcher.account=proj"])
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    params = OmegaConf.to_container(launcher, resolve=False)
    # The same mapping as the plugin's BaseSubmititLauncher.launch.
    params.pop("_target_"), params.pop("submitit_folder")
    executor = submitit.AutoExecutor(folder=tmp_path / "sub", cluster="slurm",
                                     slurm_max_num_timeout=params.pop("max_num_timeout"))
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    sbatch = executor._executor._make_submission_file_text("python -m mmr1.train", "uid")
    for line in ("--partition=gpu", "--nodes=2", "--ntasks-per-node=1", "--gpus-per-node=8", "--time=90",
                 "--cpus-per-task=64", "--account=proj", "--signal=USR2@120"):
        assert f"#SBATCH {line}" in sbatch, line
