"""Resolve ``model.name_or_path`` to weights on disk, and load model + processor from there."""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from mmr1.models.lora import is_adapter_dir, load_trained, quantization_config

log = logging.getLogger(__name__)

# `model.name_or_path` of the embedded default: built locally from a config (mmr1.models.tiny), never downloaded.
EMBEDDED_MODEL = "tiny_qwen2_5_vl"


def resolve_model_path(model_cfg: DictConfig) -> str:
    """The directory or hub id to load: embedded builders and warm-starts are built (cached) here."""
    name = model_cfg.name_or_path
    if name == EMBEDDED_MODEL:
        from mmr1.models.tiny import RECIPE, RECIPE_TOOLS, tiny_qwen2_5_vl_path  # torch: a name resolves without it

        path = str(tiny_qwen2_5_vl_path(RECIPE_TOOLS if model_cfg.get("tool_tokens") else RECIPE))
    else:
        path = name
    return path


def load_processor(path: str, *, min_pixels: int | None, max_pixels: int | None, trust_remote_code: bool = False):
    """The processor with its image limits set to mmr1's resolved ones, so it never resizes again."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    image_processor = getattr(processor, "image_processor", None)
    if image_processor is not None:
        # transformers 5 reads the limits from `size` (shortest_edge/longest_edge are pixel counts for
        # Qwen2-VL); the per-call min_pixels/max_pixels kwargs are deprecated.
        size = dict(getattr(image_processor, "size", None) or {})
        if min_pixels is not None:
            size["shortest_edge"] = min_pixels
        if max_pixels is not None:
            size["longest_edge"] = max_pixels
        if size:
            image_processor.size = size
    # Left padding for batched generation with decoder-only models.
    processor.tokenizer.padding_side = "left"
    return processor


def load_model(path: str, model_cfg: DictConfig):
    """The model at ``path``: a full model, or a LoRA adapter folder (``final/``, ``checkpoint-N/`` of a
    ``train_type=lora|qlora`` run) loaded onto its base model (mmr1.models.lora.load_trained). With
    ``train_type=qlora`` the base weights load in 4 bit; the adapters are added by the trainer."""
    import torch
    from transformers import AutoModelForImageTextToText

    dtype = getattr(torch, model_cfg.torch_dtype)
    kwargs = {"dtype": dtype, "trust_remote_code": model_cfg.trust_remote_code}
    if model_cfg.attn_implementation:
        kwargs["attn_implementation"] = model_cfg.attn_implementation
    quant = quantization_config(model_cfg)
    if quant is not None:
        kwargs["quantization_config"] = quant
    if is_adapter_dir(path):
        return load_trained(path, lambda base: AutoModelForImageTextToText.from_pretrained(base, **kwargs))
    return AutoModelForImageTextToText.from_pretrained(path, **kwargs)
