"""LoRA and QLoRA (``model.train_type=lora|qlora``): peft adapters on TRL's ``peft_config``.

mmr1 builds the ``peft.LoraConfig`` from ``model.lora`` (ms-swift v3.2.1's defaults, mmr1.config.schema) and
hands it to ``GRPOTrainer(peft_config=...)``, which wraps the model (``get_peft_model``), trains only the
adapters, uses the adapter-disabled model as the KL reference (no second copy), and, with vLLM rollouts,
merges the adapters into the base weights for each weight sync and unmerges them after
(trl/generation/vllm_generation.py, ``VLLMGeneration._iter_named_params``). Trainer then saves adapter files
(``adapter_model.safetensors`` + ``adapter_config.json``) in checkpoints and ``final/``; ``load_trained``
loads such a folder onto its base model for evaluation.

``all-linear`` (the default target) is resolved on the model to a regex over the language model's linear
layers: ms-swift's multimodal rule (swift/llm/train/tuner.py:45-83 at v3.2.1: the language model's linears,
never lm_head, the embeddings or the vision merger; the vision blocks with ``model.lora.vision_tower``).

>>> import torch
>>> toy = torch.nn.ModuleDict({"model": torch.nn.ModuleDict({
...     "language_model": torch.nn.ModuleDict({"q_proj": torch.nn.Linear(2, 2)}),
...     "visual": torch.nn.ModuleDict({"qkv": torch.nn.Linear(2, 6), "merger": torch.nn.Linear(2, 2)})}),
...     "lm_head": torch.nn.Linear(2, 3)})
>>> target_regex(toy, vision_tower=False)
'^(model\\\\.language_model\\\\.q_proj)$'
>>> sorted(n for n, _ in toy.named_modules() if re.fullmatch(target_regex(toy, vision_tower=True), n))
['model.language_model.q_proj', 'model.visual.qkv']
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from mmr1.models.parts import LANGUAGE_PREFIXES, VISION_PREFIXES, first_prefix

log = logging.getLogger(__name__)

TRAIN_TYPES = ("full", "lora", "qlora")
ADAPTER_CONFIG = "adapter_config.json"
_NEVER = ("merger", "lm_head", "embed")  # the aligner, the head and embeddings stay frozen (ms-swift's rule)


class LoraSetupError(ValueError):
    """A LoRA/QLoRA setting that cannot work here; the message names the config key."""


def check_train_type(model_cfg: Any, *, runtime: bool = True) -> None:
    """Fail on config alone: an unknown ``model.train_type``, peft or (qlora, ``runtime``) bitsandbytes/CUDA
    missing. A dry run passes ``runtime=False``: it plans a GPU run on any machine."""
    tt = model_cfg.train_type
    if tt not in TRAIN_TYPES:
        raise LoraSetupError(f"model.train_type={tt!r}: expected one of {', '.join(TRAIN_TYPES)}")
    if tt == "full":
        return
    lc = model_cfg.lora
    if lc.r < 1 or lc.alpha <= 0 or not 0.0 <= lc.dropout < 1.0:
        raise LoraSetupError(f"model.lora: r={lc.r} (>= 1), alpha={lc.alpha} (> 0), dropout={lc.dropout} "
                             "(in [0, 1)) out of range")
    if not lc.target_modules:
        raise LoraSetupError("model.lora.target_modules is empty: give ['all-linear'] or module names")
    if tt == "qlora" and lc.quant_type not in ("nf4", "fp4"):
        raise LoraSetupError(f"model.lora.quant_type={lc.quant_type!r}: bitsandbytes 4-bit is 'nf4' or 'fp4'")
    try:
        import peft  # noqa: F401
    except ImportError:
        raise LoraSetupError(f"model.train_type={tt} needs peft: pip install 'mmr1[dev]' (or pip install peft)") \
            from None
    if tt == "qlora" and runtime:
        _check_bitsandbytes()


def _check_bitsandbytes() -> None:
    import importlib.util

    import torch

    missing = []
    if importlib.util.find_spec("bitsandbytes") is None:
        missing.append("bitsandbytes is not installed (pip install bitsandbytes)")
    if not torch.cuda.is_available():
        missing.append("no CUDA GPU is visible (bitsandbytes' 4-bit layers run on GPUs)")
    if missing:
        raise LoraSetupError("model.train_type=qlora: " + "; ".join(missing)
                             + ". Use model.train_type=lora on this machine.")


def quantization_config(model_cfg: Any) -> Any:
    """transformers' ``BitsAndBytesConfig`` for ``qlora`` (None otherwise): 4-bit base weights, the adapters
    and the compute in ``model.torch_dtype`` (ms-swift's bnb mapping, base_args/quant_args.py:47-62)."""
    if model_cfg.train_type != "qlora":
        return None
    import torch
    from transformers import BitsAndBytesConfig

    lc = model_cfg.lora
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=lc.quant_type,
                              bnb_4bit_use_double_quant=lc.double_quant,
                              bnb_4bit_compute_dtype=getattr(torch, model_cfg.torch_dtype))


def target_regex(model: Any, *, vision_tower: bool) -> str:
    """A regex peft matches against module names: the path of every linear of the language model (and of the
    vision blocks with ``vision_tower``), layer numbers generalized to ``\\d+``, ``_NEVER`` excluded. Whole
    paths, not leaf names: a leaf such as the vision attention's ``proj`` is also the patch embedding's Conv3d."""
    import torch

    names = {n for n, _ in model.named_modules()}
    prefixes = [p for p in (first_prefix(names, LANGUAGE_PREFIXES),
                            first_prefix(names, VISION_PREFIXES) if vision_tower else None) if p]
    if not prefixes:
        raise LoraSetupError(f"model.lora.target_modules=['all-linear']: {type(model).__name__} has none of the "
                             f"language-model modules {', '.join(LANGUAGE_PREFIXES)}; list its module names instead")
    paths = sorted({re.sub(r"\\\.\d+\\\.", r"\\.\\d+\\.", re.escape(n)) for n, m in model.named_modules()
                    if isinstance(m, torch.nn.Linear) and any(n.startswith(p + ".") for p in prefixes)
                    and not any(x in n for x in _NEVER)})
    return f"^({'|'.join(paths)})$"


def peft_config(model_cfg: Any, model: Any) -> Any:
    """The ``peft.LoraConfig`` for ``model`` (None for ``train_type=full``): what TRL's peft_config receives."""
    if model_cfg.train_type == "full":
        return None
    import peft

    lc = model_cfg.lora
    targets: str | list[str] = list(lc.target_modules)
    if targets == ["all-linear"]:
        targets = target_regex(model, vision_tower=lc.vision_tower)
    elif "all-linear" in targets:
        raise LoraSetupError(f"model.lora.target_modules={targets}: 'all-linear' stands alone (it already is "
                             "every linear of the language model)")
    # task_type stays unset: peft's CAUSAL_LM wrapper would drop the VLM's pixel_values / image_grid_thw.
    return peft.LoraConfig(r=lc.r, lora_alpha=lc.alpha, lora_dropout=lc.dropout, target_modules=targets,
                           bias="none")


def plan_lines(model_cfg: Any, rollout_cfg: Any) -> list[str]:
    """The dry run's lines for a LoRA/QLoRA run (none for ``full``); raises where vLLM would get no adapters."""
    tt = model_cfg.train_type
    if tt == "full":
        return []
    lc = model_cfg.lora
    targets = ("the language model's linear layers" + (" and the vision blocks'" if lc.vision_tower else "")
               if list(lc.target_modules) == ["all-linear"] else f"modules {list(lc.target_modules)}")
    quant = f"; base weights 4-bit {lc.quant_type} (bitsandbytes)" if tt == "qlora" else ""
    lines = [f"  {tt}: r={lc.r} alpha={lc.alpha} dropout={lc.dropout} on {targets}{quant}; KL reference = the "
             "adapters disabled (no second model copy)"]
    if rollout_cfg.backend == "vllm":
        from mmr1.internals import vllm_sync_merges_lora  # torch and TRL: a dry run without LoRA never needs them

        if not vllm_sync_merges_lora():
            raise LoraSetupError(f"model.train_type={tt} with rollout.backend=vllm: the installed TRL does not merge "
                                 "peft adapters for its vLLM weight sync (VLLMGeneration._iter_named_params); vLLM "
                                 "would generate with the base model. Use rollout=hf or TRL 1.16.")
        lines.append("  vLLM weight sync: TRL merges the adapters into the base weights, streams them under the "
                     "base model's names, then unmerges: checked on a one-layer peft model (mmr1.internals)")
    return lines


def trainable_share(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def adapter_base(path: str | Path) -> str:
    """The base model an adapter folder was trained on (its ``adapter_config.json``), checked to exist."""
    cfg_file = Path(path) / ADAPTER_CONFIG
    base = json.loads(cfg_file.read_text()).get("base_model_name_or_path")
    if not base:
        raise LoraSetupError(f"{cfg_file}: no base_model_name_or_path: cannot tell which model it adapts")
    if base.startswith(("/", ".", "~")) and not Path(base).expanduser().is_dir():
        raise LoraSetupError(f"{cfg_file}: its base model {base} is gone (a cache cleared, another machine); "
                             "copy it back or edit base_model_name_or_path")
    return base


def load_trained(path: str | Path, load_base: Any) -> Any:
    """An adapter folder as a model for generation: ``load_base(base path)`` with the adapters loaded, merged
    into the weights (full-model speed, no peft wrapper) unless the base is quantized (qlora: merging into
    4-bit weights would round them)."""
    from peft import PeftModel

    base_path = adapter_base(path)
    base = load_base(base_path)
    # The adapters' tensors load where the base's weights are (peft would pick cuda whenever it is available,
    # for a base loaded on the CPU too).
    device = str(next(base.parameters()).device)
    model = PeftModel.from_pretrained(base, str(path), torch_device=device)
    log.info("loaded LoRA adapters %s onto %s", path, base_path)
    return model if getattr(base, "is_quantized", False) else model.merge_and_unload()
