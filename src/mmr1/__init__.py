"""mmr1: Hydra-configured multimodal GRPO on TRL."""
