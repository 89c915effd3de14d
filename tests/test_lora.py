"""LoRA / QLoRA (mmr1.models.lora): the config mapping, the targets, TRL's vLLM merge path on a real peft model,
adapter folders loaded for evaluation, the memory estimate's count. The CPU runs (2 steps: adapter files in final/,
evaluate on them, an exact resume; the collapse guard's rollback) are in tests/reliability/test_lora_runs.py."""

from __future__ import annotations

import json
import re
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from mmr1.launch.memory import arch_from_config, estimate_memory
from mmr1.models import load_model
from mmr1.models.lora import (
    LoraSetupError,
    check_train_type,
    peft_config,
    plan_lines,
    quantization_config,
    trainable_share,
)
from mmr1.models.tiny import tiny_qwen2_5_vl_path
from testkit import compose_cfg

TINY_PATH = str(tiny_qwen2_5_vl_path())


def _tiny():
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(0)
    return AutoModelForImageTextToText.from_pretrained(TINY_PATH, dtype=torch.float32)


def _linears(model, prefix: str) -> set[str]:
    return {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n.startswith(prefix)}


def _wrapped(model, cfg, *, nonzero: bool = True):
    """``model`` under peft with the config's LoRA, B matrices random (a fresh adapter is a no-op)."""
    from peft import get_peft_model

    peft_model = get_peft_model(model, peft_config(cfg.model, model))
    if nonzero:
        with torch.no_grad():
            for name, p in peft_model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.5)
    return peft_model.eval()  # get_peft_model leaves it in train mode: LoRA dropout would make outputs random


def test_train_type_errors_name_the_key():
    with pytest.raises(LoraSetupError, match=r"model\.train_type='dora'"):
        check_train_type(compose_cfg(["model.train_type=dora"]).model)
    with pytest.raises(LoraSetupError, match=r"model\.lora: r=0"):
        check_train_type(compose_cfg(["model.train_type=lora", "model.lora.r=0"]).model)
    with pytest.raises(LoraSetupError, match=r"model\.lora\.quant_type='int3'"):
        check_train_type(compose_cfg(["model.train_type=qlora", "model.lora.quant_type=int3"]).model)
    check_train_type(compose_cfg(["model.train_type=lora"]).model)  # peft is a dependency: passes


def test_qlora_needs_bitsandbytes_and_cuda_but_a_dry_run_plans_it_anywhere():
    model_cfg = compose_cfg(["model.train_type=qlora"]).model
    check_train_type(model_cfg, runtime=False)  # the dry run: planning a GPU run on a laptop
    try:
        import bitsandbytes  # noqa: F401
        has_bnb = True
    except ImportError:
        has_bnb = False
    if has_bnb and torch.cuda.is_available():
        check_train_type(model_cfg)
        return
    with pytest.raises(LoraSetupError, match=r"model\.train_type=qlora: .*(bitsandbytes|CUDA)") as err:
        check_train_type(model_cfg)
    assert ("bitsandbytes is not installed" in str(err.value)) == (not has_bnb)
    assert ("no CUDA GPU" in str(err.value)) == (not torch.cuda.is_available())


def test_qlora_maps_onto_bitsandbytes_4bit():
    q = quantization_config(compose_cfg(["model.train_type=qlora", "model.torch_dtype=bfloat16",
                                         "model.lora.quant_type=fp4", "model.lora.double_quant=false"]).model)
    assert q.load_in_4bit and not q.load_in_8bit
    assert (q.bnb_4bit_quant_type, q.bnb_4bit_use_double_quant, q.bnb_4bit_compute_dtype) == \
        ("fp4", False, torch.bfloat16)
    assert quantization_config(compose_cfg(["model.train_type=lora"]).model) is None


def test_all_linear_targets_the_language_model_and_the_vision_tower_on_request():
    model = _tiny()
    language, visual = _linears(model, "model.language_model."), _linears(model, "model.visual.")
    cfg = compose_cfg(["model.train_type=lora", "model.lora.r=4", "model.lora.alpha=8"])
    lc = peft_config(cfg.model, model)
    assert (lc.r, lc.lora_alpha, lc.lora_dropout) == (4, 8, cfg.model.lora.dropout)
    every = {n for n, _ in model.named_modules()}
    assert {n for n in every if re.fullmatch(lc.target_modules, n)} == language
    with_vision = peft_config(compose_cfg(["model.train_type=lora", "model.lora.vision_tower=true"]).model, model)
    hit = {n for n in every if re.fullmatch(with_vision.target_modules, n)}
    assert hit == language | {n for n in visual if "merger" not in n} and not any("merger" in n for n in hit)
    listed = peft_config(compose_cfg(["model.train_type=lora", "model.lora.target_modules=[q_proj,v_proj]"]).model,
                         model)
    assert set(listed.target_modules) == {"q_proj", "v_proj"}
    with pytest.raises(LoraSetupError, match="all-linear"):
        peft_config(compose_cfg(["model.train_type=lora", "model.lora.target_modules=[all-linear,q_proj]"]).model,
                    model)


def test_memory_estimate_counts_the_adapters_peft_creates():
    """The estimate's trainable count is peft's (tiny model, both target sets), and LoRA shrinks the gradients
    and Adam states by the trainable share and drops TRL's reference copy."""
    arch = arch_from_config(json.loads((Path(TINY_PATH) / "config.json").read_text()))
    for vision in (False, True):
        cfg = compose_cfg(["model.train_type=lora", f"model.lora.vision_tower={vision}"])
        trainable, total = trainable_share(_wrapped(_tiny(), cfg, nonzero=False))
        assert arch.lora_params(cfg.model.lora.r, vision=vision) == trainable
    seed = ["+experiment=geoqa"]
    full, lora = (estimate_memory(compose_cfg(seed + extra), env={}) for extra in ([], ["model.train_type=lora"]))
    share = lora["plan"]["trainable"] / full["n_trainable"]  # the seed's full run: the language model trains
    assert 0 < share < 0.01  # r=8 on a 3B model
    for key in ("gradients", "optimizer"):
        assert lora["trainer_gpu_bytes"][key] == pytest.approx(full["trainer_gpu_bytes"][key] * share, rel=1e-6)
    assert full["trainer_gpu_bytes"]["reference"] > 0 == lora["trainer_gpu_bytes"]["reference"]
    # peft keeps A's outputs, and with dropout a dropped copy of every adapted input (benchmarks/lora.py measures it)
    no_dropout = estimate_memory(compose_cfg(seed + ["model.train_type=lora", "model.lora.dropout=0"]), env={})
    acts = [e["trainer_gpu_bytes"]["activations"] for e in (full, no_dropout, lora)]
    assert acts == sorted(acts) and acts[0] < acts[1] < acts[2]
    qlora = estimate_memory(compose_cfg(seed + ["model.train_type=qlora"]), env={})
    assert qlora["trainer_gpu_bytes"]["weights"] < 0.5 * lora["trainer_gpu_bytes"]["weights"]


@pytest.mark.imports_trl_vllm
def test_trls_vllm_sync_sends_merged_weights_under_the_base_names():
    """TRL 1.16's own weight iterator (VLLMGeneration._iter_named_params), on a peft-wrapped tiny model: every
    tensor vLLM receives has a base-model name (no lora_A/B, no base_layer) and the merged value, and the model is
    unmerged again afterwards (training continues on adapters)."""
    from trl.generation.vllm_generation import VLLMGeneration

    cfg = compose_cfg(["model.train_type=lora"])
    model = _wrapped(_tiny(), cfg)
    fake = SimpleNamespace(model=model, _dist=SimpleNamespace(gather_params=lambda params: nullcontext(),
                                                              is_fsdp=False))
    fake._fix_param_name_to_vllm = lambda name, extra_prefixes=None: VLLMGeneration._fix_param_name_to_vllm(
        fake, name, extra_prefixes)
    x = torch.randint(0, 100, (1, 6))
    before = model(input_ids=x).logits
    sent = {name: t.clone() for name, t in VLLMGeneration._iter_named_params(fake)}
    merged = _wrapped(_tiny(), cfg)  # same seeds: the same adapters
    merged = merged.merge_and_unload()
    expected = dict(merged.named_parameters())
    assert set(sent) == set(expected)
    base = dict(_tiny().named_parameters())
    changed = [n for n in sent if not torch.equal(sent[n], base[n])]
    assert changed and all("language_model" in n for n in changed)
    for name, tensor in sent.items():
        torch.testing.assert_close(tensor, expected[name])
    torch.testing.assert_close(model(input_ids=x).logits, before)  # unmerged: the adapters train on


@pytest.mark.imports_trl_vllm
def test_dry_run_checks_the_vllm_merge_path_and_plans_qlora_without_a_gpu(tmp_path, capsys):
    from mmr1.train import train

    for overrides in (["model.train_type=lora", "rollout=vllm_server"],
                      ["model.train_type=qlora", "rollout=vllm_colocate", "launcher.gpus_per_node=8"]):
        cfg = compose_cfg(["+experiment=geoqa", "dry_run=true", *overrides], run_dir=tmp_path / overrides[1][8:])
        train(cfg)
        out = capsys.readouterr().out
        tt = overrides[0].split("=")[1]
        assert f"  {tt}: r=8 alpha=32" in out and "vLLM weight sync: TRL merges the adapters" in out
        assert "trainable (0.40%, LoRA" in out
    assert plan_lines(compose_cfg([]).model, compose_cfg([]).rollout) == []


def test_an_adapter_folder_loads_onto_its_base_merged(tmp_path):
    """What `mmr1.evaluate eval.checkpoint=<run>` does with a LoRA run's final/: base + adapters, merged."""
    cfg = compose_cfg(["model.train_type=lora"])
    model = _wrapped(_tiny(), cfg)
    x = torch.randint(0, 100, (1, 6))
    expected = model(input_ids=x).logits
    model.save_pretrained(tmp_path / "final")
    assert {p.name for p in (tmp_path / "final").iterdir()} >= {"adapter_config.json", "adapter_model.safetensors"}
    loaded = load_model(str(tmp_path / "final"), cfg.model)
    assert not hasattr(loaded, "peft_config")  # merged: a plain model for generate
    torch.testing.assert_close(loaded(input_ids=x).logits, expected)
    adapter_cfg = tmp_path / "final" / "adapter_config.json"
    adapter_cfg.write_text(json.dumps({**json.loads(adapter_cfg.read_text()),
                                       "base_model_name_or_path": str(tmp_path / "gone")}))
    with pytest.raises(LoraSetupError, match=r"adapter_config\.json: its base model .*gone"):
        load_model(str(tmp_path / "final"), cfg.model)



def test_qlora_loads_the_base_through_bitsandbytes(monkeypatch):
    """load_model hands transformers the 4-bit config for qlora (none for lora); the weights load on a GPU only."""
    import transformers

    seen: list[dict] = []
    monkeypatch.setattr(transformers.AutoModelForImageTextToText, "from_pretrained",
                        lambda path, **kwargs: seen.append(kwargs) or object())
    load_model(TINY_PATH, compose_cfg(["model.train_type=qlora"]).model)
    load_model(TINY_PATH, compose_cfg(["model.train_type=lora"]).model)
    assert seen[0]["quantization_config"].load_in_4bit and seen[0]["dtype"] == torch.float32
    assert "quantization_config" not in seen[1]


def test_a_rehearsal_trains_qlora_as_lora_on_cpu():
    from mmr1.config.rehearsal import apply_rehearsal

    cfg = compose_cfg(["+experiment=geoqa", "+preset=rehearsal", "model.train_type=qlora", "model.lora.r=16"])
    swaps = apply_rehearsal(cfg)
    assert {"setting": "model.train_type", "experiment": "qlora", "rehearsal": "lora"} in swaps
    assert cfg.model.train_type == "lora" and cfg.model.lora.r == 16
    check_train_type(cfg.model)  # runs here: no bitsandbytes or CUDA needed any more
