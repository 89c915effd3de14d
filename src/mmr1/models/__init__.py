"""Models: the embedded tiny Qwen2.5-VL, loading by name, and the supervised warm-start."""

from mmr1.models.loading import load_model, load_processor, resolve_model_path

__all__ = ["load_model", "load_processor", "resolve_model_path"]
