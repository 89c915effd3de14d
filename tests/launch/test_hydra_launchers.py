"""The sweep launchers: conf/hydra/launcher/{slurm,local}.yaml extend hydra-submitit-launcher's own
configs, and every SLURM setting reaches the sbatch script submitit would submit (no SLURM needed)."""

from __future__ import annotations

from hydra import compose, initialize_config_dir

from mmr1.train import CONF_DIR


def _launcher(overrides: list[str]):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, "run_dir=/tmp/unused"], return_hydra_config=True)
    return cfg.hydra.launcher


def test_local_extends_the_plugins_local_launcher():
    launcher = _launcher(["hydra/launcher=local"])
    assert launcher._target_.endswith("submitit_launcher.LocalLauncher")
    assert (launcher.timeout_min, launcher.gpus_per_node, launcher.tasks_per_node) == (600, 0, 1)


# Stand-ins for SLURM's commands: sbatch keeps the script it is given and answers as SLURM does; sacct
# reports the array's jobs as failed (nothing ran them), so the sweep ends instead of waiting.
FAKE_SLURM = {
    "sbatch": 'for a in "$@"; do case "$a" in *.sh) cp "$a" "$MMR1_TEST_SBATCH_COPY";; esac; done\n'
              'echo "Submitted batch job 4242"',
    "sacct": 'echo "JobID|State"; echo "4242_0|FAILED"; echo "4242_1|FAILED"',
    "srun": "exit 0",
    "scancel": "exit 0",
}


def test_slurm_settings_reach_the_sbatch_script(tmp_path):
    """A real `--multirun hydra/launcher=slurm` through the submitit plugin's own launch() and submitit's
    own sbatch script (no copy of either's mapping): every setting lands as an #SBATCH line."""
    import os

    from testkit import run_cli

    fake = tmp_path / "bin"
    fake.mkdir()
    for name, body in FAKE_SLURM.items():
        (fake / name).write_text(f"#!/bin/sh\n{body}\n")
        (fake / name).chmod(0o755)
    script = tmp_path / "submitted.sh"
    proc = run_cli(["--multirun", "hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.nodes=2",
                    "hydra.launcher.timeout_min=90", "hydra.launcher.account=proj", "trainer.beta=0,0.1",
                    "dry_run=true", f"hydra.sweep.dir={tmp_path / 'sweep'}"], timeout=240, check=False,
                   env={"PATH": f"{fake}:{os.environ['PATH']}", "MMR1_TEST_SBATCH_COPY": str(script)})
    assert "Job 4242_0" in proc.stderr and "state: FAILED" in proc.stderr, proc.stderr[-3000:]  # submitted
    sbatch = script.read_text()
    for line in ("--partition=gpu", "--nodes=2", "--ntasks-per-node=1", "--gpus-per-node=8", "--time=90",
                 "--cpus-per-task=64", "--account=proj", "--signal=USR2@120", "--array=0-1%2"):
        assert f"#SBATCH {line}" in sbatch, line
