"""Config schema (ConfigStore) and the mapping from the resolved config to TRL's GRPOConfig."""

from mmr1.config.schema import TrainConfig, register_configs

__all__ = ["TrainConfig", "register_configs"]
