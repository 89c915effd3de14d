"""Config schema (ConfigStore) and the mapping from the resolved config to TRL's GRPOConfig."""

from pathlib import Path

from mmr1.config.schema import TrainConfig, register_configs

# The configs ship inside the package (Hydra's app-packaging pattern), so a wheel runs as the repo does;
# the repository's top-level `conf` is a link to this folder.
CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")

__all__ = ["CONF_DIR", "TrainConfig", "register_configs"]
