"""Model sizes for the memory estimate: an architecture's sizes from its config.json (or the known hub ones), its
parameter counts from transformers' own module tree for that config, built on the meta device (no weights).

>>> arch = arch_from_config(QWEN2_5_VL_3B)
>>> arch.n_params, arch.n_params_vision, arch.n_params_aligner
(3754622976, 668684288, 36708608)
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from typing import Any

from mmr1.models.loading import EMBEDDED_MODEL
from mmr1.models.tiny import RECIPE, tiny_qwen2_5_vl_dir

GB = 2**30
FP32 = 4

# Qwen/Qwen2.5-VL-3B-Instruct config.json (the hub's published sizes; only what the count and the
# activations need, plus what benchmarks/gpu_step.py builds the random-weight model from). 3,754,622,976
# parameters counted by arch_from_config below, the hub's "3.75B params" (tests/launch/test_memory.py).
QWEN2_5_VL_3B: dict[str, Any] = {
    "model_type": "qwen2_5_vl",
    "tie_word_embeddings": True,
    "image_token_id": 151655, "video_token_id": 151656,
    "vision_start_token_id": 151652, "vision_end_token_id": 151653,
    "bos_token_id": 151643, "eos_token_id": 151645,
    "text_config": {
        "vocab_size": 151936, "hidden_size": 2048, "num_hidden_layers": 36, "num_attention_heads": 16,
        "num_key_value_heads": 2, "intermediate_size": 11008, "max_position_embeddings": 128000,
        "rms_norm_eps": 1e-6, "tie_word_embeddings": True,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
    },
    "vision_config": {
        "depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "out_hidden_size": 2048,
        "in_channels": 3, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
        "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31], "tokens_per_second": 2,
    },
}
# Qwen/Qwen2.5-VL-7B-Instruct config.json: 8,292,166,656 parameters (the hub's "8.29B"); untied head.
QWEN2_5_VL_7B: dict[str, Any] = {
    **QWEN2_5_VL_3B,
    "tie_word_embeddings": False,
    "text_config": {**QWEN2_5_VL_3B["text_config"], "vocab_size": 152064, "hidden_size": 3584,
                    "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
                    "intermediate_size": 18944, "tie_word_embeddings": False},
    "vision_config": {**QWEN2_5_VL_3B["vision_config"], "out_hidden_size": 3584},
}
KNOWN_CONFIGS: dict[str, dict[str, Any]] = {
    "Qwen/Qwen2.5-VL-3B-Instruct": QWEN2_5_VL_3B, "Qwen/Qwen2.5-VL-3B": QWEN2_5_VL_3B,
    "Qwen/Qwen2.5-VL-7B-Instruct": QWEN2_5_VL_7B, "Qwen/Qwen2.5-VL-7B": QWEN2_5_VL_7B,
}

class UnknownArchitecture(ValueError):
    """The model's sizes are not known here (pass ``config=`` with its config.json, or a local path)."""


@dataclass(frozen=True)
class Arch:
    """The sizes the estimate needs (a Qwen2-style decoder and, optionally, a Qwen2.5-VL vision tower)."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tied: bool
    v_depth: int = 0  # 0 = no vision tower
    v_hidden: int = 0
    v_intermediate: int = 0
    v_heads: int = 0
    v_out: int = 0
    v_in_channels: int = 3
    patch_size: int = 14
    temporal_patch: int = 2
    merge: int = 2
    # Parameters per part as mmr1.models.parts splits (and freezes) the model: the language model (with its
    # embeddings and head), the whole vision module (tower and aligner), the aligner (Qwen's patch merger) alone.
    n_params_text: int = 0
    n_params_vision: int = 0
    n_params_aligner: int = 0

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def patch_values(self) -> int:
        """Numbers per vision patch in ``pixel_values``: 3 x 2 x 14 x 14 = 1176."""
        return self.v_in_channels * self.temporal_patch * self.patch_size**2

    @property
    def layer_params(self) -> int:
        """One decoder layer (the largest module ZeRO-3 gathers besides the embedding): Qwen2DecoderLayer's
        q/k/v with bias, o without, SwiGLU gate/up/down, two RMSNorm weights."""
        h, kv, i = self.hidden, self.kv_dim, self.intermediate
        return (h * h + h) + 2 * (h * kv + kv) + h * h + 3 * h * i + 2 * h

    @property
    def block_params(self) -> int:
        """One vision block: Qwen2_5_VLVisionBlock's fused qkv + proj (with bias), SwiGLU with bias, two RMSNorms."""
        h, i = self.v_hidden, self.v_intermediate
        return (3 * h * h + 3 * h) + (h * h + h) + 2 * (h * i + i) + (i * h + h) + 2 * h

    @property
    def n_params(self) -> int:
        return self.n_params_text + self.n_params_vision

    def lora_params(self, r: int, vision: bool = False) -> int:
        """LoRA's A (r x in) and B (out x r) on every linear of the decoder layers (and of the vision blocks):
        ``model.lora.target_modules=['all-linear']`` (mmr1.models.lora)."""
        h, kv, i, vh, vi = self.hidden, self.kv_dim, self.intermediate, self.v_hidden, self.v_intermediate
        text = (h + h) * 2 + (h + kv) * 2 + (h + i) * 3  # q, o; k, v; gate, up, down
        blocks = (vh + 3 * vh) + (vh + vh) + (vh + vi) * 3 if vision and self.v_depth else 0  # qkv, proj, MLP
        return r * (self.layers * text + self.v_depth * blocks)


def arch_from_config(config: dict[str, Any]) -> Arch:
    """An ``Arch`` from a Hugging Face config dict (transformers 5 nests ``text_config``; 4.x was flat): the sizes
    read from it, the parameter counts from the model it describes (``count_parameters``)."""
    model_type = config.get("model_type", "")
    text = dict(config.get("text_config") or config)
    if "hidden_size" not in text:
        raise UnknownArchitecture(f"config of model_type {model_type!r} has no hidden_size")
    tied = bool(text.get("tie_word_embeddings", config.get("tie_word_embeddings", False)))
    arch: dict[str, Any] = {
        "hidden": int(text["hidden_size"]), "layers": int(text["num_hidden_layers"]),
        "heads": int(text["num_attention_heads"]),
        "kv_heads": int(text.get("num_key_value_heads") or text["num_attention_heads"]),
        "intermediate": int(text["intermediate_size"]), "vocab": int(text["vocab_size"]), "tied": tied,
    }
    vision = config.get("vision_config")
    if vision:
        if model_type not in ("qwen2_5_vl", ""):
            raise UnknownArchitecture(f"model_type {model_type!r}: only Qwen2.5-VL's vision tower is modelled")
        arch.update(v_depth=int(vision["depth"]), v_hidden=int(vision["hidden_size"]),
                    v_intermediate=int(vision["intermediate_size"]), v_heads=int(vision["num_heads"]),
                    v_out=int(vision.get("out_hidden_size", text["hidden_size"])),
                    v_in_channels=int(vision.get("in_channels", vision.get("in_chans", 3))),
                    patch_size=int(vision.get("patch_size", 14)),
                    temporal_patch=int(vision.get("temporal_patch_size", 2)),
                    merge=int(vision.get("spatial_merge_size", 2)))
    counts = count_parameters({**config, "model_type": model_type or "qwen2_5_vl"} if vision else config)
    arch.update(n_params_text=counts["language_model"], n_params_vision=counts["vision_tower"] + counts["aligner"],
                n_params_aligner=counts["aligner"])
    return Arch(**arch)


def count_parameters(config: dict[str, Any]) -> dict[str, int]:
    """``{part: parameters}`` (mmr1.models.parts.PARTS) of the model ``config`` describes: the class mmr1 loads
    (AutoModelForImageTextToText; AutoModelForCausalLM for a text-only config) built on the meta device."""
    return dict(_count_parameters(json.dumps(config, sort_keys=True)))


@functools.lru_cache(maxsize=8)  # one model tree per config: the estimate and its variants reuse the count
def _count_parameters(config_json: str) -> tuple[tuple[str, int], ...]:
    # Imported here: torch and transformers' model code take seconds, and only a printed estimate needs them
    # (``import mmr1.train``, where the dry run starts, loads no torch).
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

    from mmr1.models.parts import freeze_parts

    config = json.loads(config_json)
    model_type = config.pop("model_type", None)
    auto = AutoModelForImageTextToText if "vision_config" in config else AutoModelForCausalLM
    try:
        hf_config = AutoConfig.for_model(model_type, **config)
        # The meta device: the module tree without memory or initialisation. Not accelerate's init_empty_weights:
        # it wraps every parameter registered inside it anew (accelerate/big_modeling.py init_on_device), so the
        # tied LM head becomes a parameter of its own (Qwen2.5-VL-3B: 4,065,787,904 instead of 3,754,622,976).
        with torch.device("meta"):
            model = auto.from_config(hf_config)
    except ValueError:  # a model_type this transformers does not know, or has no such model class for
        raise UnknownArchitecture(f"model_type {model_type!r}: transformers has no {auto.__name__} for it") from None
    counts = freeze_parts(model, freeze_vision_tower=False, freeze_aligner=False)  # nothing frozen: counts only
    return tuple((part, total) for part, (total, _) in counts.items())


def model_config(name_or_path: str) -> dict[str, Any]:
    """The config dict for ``model.name_or_path`` without loading weights or downloading anything:
    the embedded tiny model (its cached config.json, else its recipe), a known hub id, or a local dir."""
    if name_or_path == EMBEDDED_MODEL:
        built = tiny_qwen2_5_vl_dir() / "config.json"  # not _path(), which builds: the dry run loads no weights
        if built.exists():  # the exact vocabulary (the trained tokenizer's, <= the recipe's vocab_size)
            return json.loads(built.read_text())
        t, v = RECIPE["text"], RECIPE["vision"]
        # Token ids are the tokenizer's, unknown until it is built (None: transformers' Qwen defaults lie outside
        # this vocabulary, and its config check would log that).
        ids = dict.fromkeys(("bos_token_id", "eos_token_id", "pad_token_id"))
        return {"model_type": "qwen2_5_vl", "tie_word_embeddings": True,
                "text_config": {**t, "vocab_size": RECIPE["vocab_size"], "tie_word_embeddings": True, **ids},
                "vision_config": {**v, "out_hidden_size": t["hidden_size"]}}
    if name_or_path in KNOWN_CONFIGS:
        return KNOWN_CONFIGS[name_or_path]
    path = os.path.join(os.path.expanduser(name_or_path), "config.json")
    if os.path.isfile(path):
        with open(path) as f:
            return json.load(f)
    raise UnknownArchitecture(f"model {name_or_path!r}: sizes unknown offline (not a local directory with a "
                              f"config.json, not one of {sorted(KNOWN_CONFIGS)}); pass config=")
