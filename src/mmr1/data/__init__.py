"""mmr1's data layer: the seed's three tasks (hub, local or synthetic), one image resolution, bad rows.

Public API (what the training spine calls: mmr1.trainer.steps.load_data)::

    limits = resolve_pixel_limits(cfg.model.max_pixels, cfg.model.min_pixels)
    bundle = build_datasets(cfg.dataset, min_pixels=limits.min_pixels, max_pixels=limits.max_pixels,
                            seed=cfg.trainer.seed)
    preflight(processor, bundle, max_length=cfg.trainer.max_length, context=cfg.rollout.max_model_len,
              max_completion_length=cfg.trainer.max_completion_length)
"""

from mmr1.data.catalog import Registry
from mmr1.data.config import DatasetConfig, OnBadRow, Source
from mmr1.data.datasets import DataBundle, build_datasets, build_messages, load_system_prompt
from mmr1.data.images import PixelLimits, image_tokens, resolve_pixel_limits, smart_resize
from mmr1.data.preflight import preflight
from mmr1.data.sources import SOURCES
from mmr1.data.synthetic import GENERATORS

__all__ = [
    "GENERATORS", "SOURCES", "DataBundle", "DatasetConfig", "OnBadRow", "PixelLimits", "Registry",
    "Source", "build_datasets", "build_messages", "image_tokens", "load_system_prompt", "preflight",
    "resolve_pixel_limits", "smart_resize",
]
