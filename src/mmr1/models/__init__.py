"""Models: the embedded tiny Qwen2.5-VL, loading by name, and the supervised warm-start."""

from mmr1.models.loading import EMBEDDED_MODEL, load_model, load_processor, resolve_model_path

__all__ = ["EMBEDDED_MODEL", "load_model", "load_processor", "resolve_model_path"]
