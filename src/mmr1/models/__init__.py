"""The policy: the embedded tiny Qwen2.5-VL, loading by name, the start of a run (its processor, its cached
supervised warm-start), which parts train, LoRA/QLoRA, and generation outside training."""

from mmr1.models.loading import EMBEDDED_MODEL, load_model, load_processor, resolve_model_path

__all__ = ["EMBEDDED_MODEL", "load_model", "load_processor", "resolve_model_path"]
