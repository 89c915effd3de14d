"""The parts of a vision-language model, and which of them train under ``model.train_type=full``.

ms-swift v3.2.1, the seed's framework, freezes the vision tower and its aligner for every multimodal full
fine-tune unless told otherwise: ``freeze_vit: bool = True`` and ``freeze_aligner: bool = True``
(swift/llm/argument/tuner_args.py:107-108); ``_init_multimodal_full`` (:209-221) adds the arch's
``vision_tower`` and ``aligner`` to ``freeze_parameters``, which swift/llm/train/tuner.py:370-376 applies by
name prefix for ``--train_type full`` (Qwen2-VL/2.5-VL's arch: ``visual`` and ``visual.merger``,
swift/llm/model/model_arch.py:460-463). So the seed trained the language model (and its embeddings and head)
only. mmr1's keys: ``model.freeze_vision_tower`` (the tower without its aligner) and ``model.freeze_aligner``
(Qwen's ``merger``); the seed's recipe sets both (conf/recipe/ms_swift_v3_2_1.yaml).

Under ``lora``/``qlora`` peft freezes every base weight already and ``model.lora.vision_tower`` alone decides
whether the vision blocks get adapters (mmr1.models.lora); the freeze keys apply to full fine-tuning.

>>> import torch
>>> toy = torch.nn.ModuleDict({"model": torch.nn.ModuleDict({
...     "language_model": torch.nn.Linear(2, 2),
...     "visual": torch.nn.ModuleDict({"blocks": torch.nn.Linear(2, 2), "merger": torch.nn.Linear(2, 2)})}),
...     "lm_head": torch.nn.Linear(2, 3)})
>>> part_of("model.visual.merger.bias", vision_prefix(toy)), part_of("lm_head.weight", vision_prefix(toy))
('aligner', 'language_model')
>>> freeze_parts(toy, freeze_vision_tower=True, freeze_aligner=False)
{'language_model': (15, 15), 'vision_tower': (6, 0), 'aligner': (6, 6)}
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

# Where the halves of a VLM live (transformers 5 Qwen2.5-VL: model.language_model / model.visual; 4.x and other
# VLMs: language_model / visual / vision_tower). The first prefix present is the model's.
LANGUAGE_PREFIXES = ("model.language_model", "language_model", "model.layers")
VISION_PREFIXES = ("model.visual", "visual", "model.vision_tower", "vision_tower")
# The aligner inside the vision module (Qwen2-VL/2.5-VL: the patch merger; ms-swift's arch 'visual.merger').
ALIGNER = "merger"
PARTS = ("language_model", "vision_tower", "aligner")


class FreezeError(ValueError):
    """A freeze setting the model cannot honour; the message names the config key."""


def first_prefix(names: set[str], candidates: tuple[str, ...]) -> str | None:
    return next((c for c in candidates if c in names), None)


def vision_prefix(model: Any) -> str | None:
    """The module path of ``model``'s vision tower (None for a text-only model)."""
    return first_prefix({n for n, _ in model.named_modules()}, VISION_PREFIXES)


def part_of(param_name: str, vision: str | None) -> str:
    """``vision_tower``, ``aligner`` or ``language_model`` (everything outside the vision module: the decoder,
    its embeddings and the LM head, as ms-swift's ``language_model`` plus what no arch key names)."""
    if vision is None or not param_name.startswith(vision + "."):
        return "language_model"
    rest = param_name[len(vision) + 1:]
    return "aligner" if rest == ALIGNER or rest.startswith(ALIGNER + ".") else "vision_tower"


def freeze_parts(model: Any, *, freeze_vision_tower: bool, freeze_aligner: bool) -> dict[str, tuple[int, int]]:
    """Set ``requires_grad`` by part; return ``{part: (parameters, trainable)}``. Frozen parameters reach neither
    the Trainer's optimizer (it groups only ``requires_grad`` ones) nor DeepSpeed's partitioned optimizer states."""
    vision = vision_prefix(model)
    frozen = {"vision_tower": freeze_vision_tower, "aligner": freeze_aligner, "language_model": False}
    if vision is None and (freeze_vision_tower or freeze_aligner):
        raise FreezeError(f"model.freeze_vision_tower / model.freeze_aligner: {type(model).__name__} has none of the "
                          f"vision modules {', '.join(VISION_PREFIXES)}; set both false for a text-only model")
    counts = {p: [0, 0] for p in PARTS}
    for name, param in model.named_parameters():
        part = part_of(name, vision)
        if frozen[part]:
            param.requires_grad_(False)
        counts[part][0] += param.numel()
        counts[part][1] += param.numel() if param.requires_grad else 0
    if freeze_aligner and not counts["aligner"][0]:
        raise FreezeError(f"model.freeze_aligner=true: {vision} has no '{ALIGNER}' module (the aligner mmr1 knows)")
    return {p: (n, t) for p, (n, t) in counts.items()}


def apply_freeze(model: Any, model_cfg: Any) -> dict[str, tuple[int, int]] | None:
    """``freeze_parts`` for ``train_type=full`` (None otherwise: peft decides), logged as one line per run."""
    if model_cfg.train_type != "full":
        return None
    counts = freeze_parts(model, freeze_vision_tower=bool(model_cfg.freeze_vision_tower),
                          freeze_aligner=bool(model_cfg.freeze_aligner))
    log.info("parameters: %s", describe(counts))
    return counts


def describe(counts: dict[str, tuple[int, int]]) -> str:
    """One line, e.g. 'language model 3.09B trains | vision tower 631.98M frozen | aligner 36.71M frozen |
    3.09B of 3.75B train'."""
    def n(x: int) -> str:
        return f"{x / 1e9:.2f}B" if x >= 1e9 else f"{x / 1e6:.2f}M" if x >= 1e4 else str(x)

    parts = [f"{p.replace('_', ' ')} {n(total)} {'trains' if t == total else 'frozen' if not t else f'{n(t)} train'}"
             for p, (total, t) in counts.items() if total]
    trainable, total = sum(t for _, t in counts.values()), sum(n_ for n_, _ in counts.values())
    return " | ".join(parts + [f"{n(trainable)} of {n(total)} train"])
