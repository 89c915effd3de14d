"""The policy a run starts from, prepared one way for train, evaluate and the launcher.

``prepare_policy(cfg)`` resolves the image limits (config, else MAX_PIXELS/MIN_PIXELS, else the
processor's), the model path (an embedded builder is built and cached), the processor with those limits,
and, with ``warmstart=True``, the cached supervised warm-start GRPO should begin from (mmr1.models.warmstart).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

from mmr1.data import resolve_pixel_limits
from mmr1.models import load_processor, resolve_model_path


@dataclass
class Policy:
    path: str  # the weights to load: the base model, or its warm-started copy
    base_path: str  # the base model's directory or hub id (its processor is the run's)
    processor: Any
    limits: Any  # mmr1.data.PixelLimits: one resolution for data, trainer and rollout


def prepare_policy(cfg: DictConfig, *, warmstart: bool = True, limits: Any = None) -> Policy:
    """``limits``: the already resolved image limits (resolving them again would repeat the config-vs-env
    warning); None resolves them here."""
    if limits is None:
        limits = resolve_pixel_limits(cfg.model.max_pixels, cfg.model.min_pixels)
    base = resolve_model_path(cfg.model)
    processor = load_processor(base, min_pixels=limits.min_pixels, max_pixels=limits.max_pixels,
                               trust_remote_code=cfg.model.trust_remote_code)
    policy = Policy(path=base, base_path=base, processor=processor, limits=limits)
    return warm_start(cfg, policy) if warmstart else policy


def warm_start(cfg: DictConfig, policy: Policy) -> Policy:
    """``policy`` starting from its cached warm-start when ``model.warmstart.enabled`` (built once)."""
    from mmr1.models.warmstart import maybe_warmstart  # transformers: the dry run plans without it

    path = maybe_warmstart(cfg, policy.base_path, policy.processor, policy.limits)
    return Policy(path=path, base_path=policy.base_path, processor=policy.processor, limits=policy.limits)
