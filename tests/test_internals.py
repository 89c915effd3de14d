"""mmr1.internals, the one door to library internals: the rule that no other module reaches a library's private
names, and each access run against the installed TRL, transformers and torch (behaviour, not source text)."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from PIL import Image
from transformers import AutoModelForImageTextToText, Trainer, TrainerCallback, TrainingArguments
from trl import GRPOConfig, GRPOTrainer

import mmr1
from mmr1 import internals
from mmr1.models import load_processor
from mmr1.models.tiny import tiny_qwen2_5_vl_path

SRC = Path(mmr1.__file__).parent
ADAPTER = SRC / "internals.py"
# Underscored but public, documented API.
PUBLIC = {"_exit"}  # os._exit: a worker process ends without running the parent's atexit handlers
# TRL modules mmr1 may import outside the adapter: the top-level package and its documented entry points
# (trl.rewards: TRL's reward functions, `from trl.rewards import ...` in its docs).
TRL_PUBLIC = {"trl", "trl.scripts.vllm_serve", "trl.generation.vllm_client", "trl.rewards"}
LIBRARIES = ("trl", "transformers", "torch", "accelerate", "peft", "vllm", "deepspeed", "datasets")


def _trees() -> dict[Path, ast.AST]:
    return {p: ast.parse(p.read_text()) for p in sorted(SRC.rglob("*.py")) if p != ADAPTER}


def _own_private_names(trees: dict[Path, ast.AST]) -> set[str]:
    """Private names mmr1 defines itself: functions, classes, attributes it assigns, module globals."""
    own = set(PUBLIC)
    for tree in trees.values():
        for n in ast.walk(tree):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                own.add(n.name)
            elif isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store):
                own.add(n.attr)
            elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
                own.add(n.id)
    return own


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_no_module_but_the_adapter_touches_a_private_library_name():
    trees = _trees()
    own = _own_private_names(trees)
    found = []
    for path, tree in trees.items():
        where = path.relative_to(SRC)
        for n in ast.walk(tree):
            if isinstance(n, ast.Attribute) and _private(n.attr) and n.attr not in own:
                found.append(f"{where}:{n.lineno} {ast.unparse(n)}")
            elif isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in ("getattr", "hasattr",
                                                                                            "setattr") \
                    and len(n.args) > 1 and isinstance(n.args[1], ast.Constant) \
                    and isinstance(n.args[1].value, str) and _private(n.args[1].value) and n.args[1].value not in own:
                found.append(f"{where}:{n.lineno} {ast.unparse(n)}")
            elif isinstance(n, ast.ImportFrom) and n.module and n.module.split(".")[0] in LIBRARIES:
                if any(_private(part) for part in n.module.split(".")) or any(_private(a.name) for a in n.names):
                    found.append(f"{where}:{n.lineno} from {n.module} import ...")
                elif n.module.split(".")[0] == "trl" and n.module not in TRL_PUBLIC:
                    found.append(f"{where}:{n.lineno} from {n.module}: TRL's internals go through mmr1.internals")
            elif isinstance(n, ast.Import) and any(a.name.split(".")[0] == "trl" and a.name not in TRL_PUBLIC
                                                   for a in n.names):
                found.append(f"{where}:{n.lineno} import {[a.name for a in n.names]}")
    assert not found, "private library access outside mmr1/internals.py:\n" + "\n".join(found)
    assert "inspect.getsource" not in "".join(p.read_text() for p in SRC.rglob("*.py"))


def test_no_class_but_the_adapters_overrides_a_private_library_method():
    found = []
    for info in pkgutil.walk_packages([str(SRC)], "mmr1."):
        if info.name.endswith("__main__") or info.name == "mmr1.internals":
            continue
        module = importlib.import_module(info.name)
        for cls in vars(module).values():
            if not inspect.isclass(cls) or cls.__module__ != info.name:
                continue
            for name, value in vars(cls).items():
                if not (_private(name) and inspect.isfunction(value)):
                    continue
                library = [b for b in cls.__mro__[1:] if b.__module__.split(".")[0] in LIBRARIES and hasattr(b, name)]
                if library:
                    found.append(f"{info.name}.{cls.__name__}.{name} overrides {library[0].__qualname__}'s")
    assert not found, "\n".join(found)


# --- GRPOHooks: TRL's private rollout steps reach the hooks ---------------------------------------------------

class _Recording(internals.GRPOHooks):
    def __init__(self, *args, **kwargs):
        self.calls: list[str] = []
        super().__init__(*args, **kwargs)

    def generate_turn(self, generate, prompt_ids):
        self.calls.append("generate_turn")
        ids, logprobs = generate()
        return [c[:2] for c in ids], (None if logprobs is None else [lp[:2] for lp in logprobs])

    def score(self, calculate, inputs):
        self.calls.append("score")
        return calculate() + 1.0

    def generate_and_score(self, run, inputs):
        self.calls.append("generate_and_score")
        out = run(inputs)
        self.log_metric("train", "test/hooked", 1.0)
        return out


def _rows(n: int) -> list[dict]:
    prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many?"}]}]
    return [{"prompt": prompt, "image": Image.new("RGB", (56, 56), (40 * i, 0, 0))} for i in range(n)]


def test_trls_rollout_steps_reach_the_hooks_with_trls_signatures(tmp_path):
    """TRL's ``_generate_and_score_completions`` calls ``_generate_single_turn`` and ``_calculate_rewards`` on the
    trainer: a TRL that renames or stops calling one of them fails here (the hook would silently never run)."""
    for name in ("_generate_single_turn", "_calculate_rewards", "_generate_and_score_completions"):
        ours, trls = (inspect.signature(getattr(c, name)).parameters for c in (internals.GRPOHooks, GRPOTrainer))
        assert [(p.name, p.kind, p.default) for p in ours.values()] == \
            [(p.name, p.kind, p.default) for p in trls.values()], name
    path = str(tiny_qwen2_5_vl_path())
    processor = load_processor(path, min_pixels=3136, max_pixels=3136)
    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=2, num_generations=2,
                      max_completion_length=6, report_to="none", use_cpu=True, log_completions=True, logging_steps=1)
    trainer = _Recording(model=AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32),
                         reward_funcs=[lambda completions, **kw: [0.0, 1.0][:len(completions)]],
                         args=args, train_dataset=Dataset.from_list(_rows(2)), processing_class=processor)
    trainer.model.train()
    batch = trainer._generate_and_score_completions(_rows(2))
    assert trainer.calls == ["generate_and_score", "generate_turn", "score"]
    assert batch["completion_ids"].shape[1] <= 2  # generate_turn's result is what TRL trained on
    assert trainer._metrics["train"]["test/hooked"] == [1.0]
    assert trainer._metrics["train"]["reward"][-1] == pytest.approx(1.5)  # score's +1 reached the advantages' input
    assert trainer.micro_step == trainer._step == 0
    assert internals.generation_state(trainer) == (0, None)  # TRL's own names, on a real trainer
    internals.set_generation_state(trainer, 3, ["rollouts"])
    assert trainer.micro_step == 3 and trainer._buffered_inputs == ["rollouts"]
    assert trainer.text_tokenizer is processor.tokenizer
    assert trainer.logged_prompts() is trainer._logs["prompt"] and len(trainer.logged_prompts()) == 2


# --- on a built trainer -------------------------------------------------------------------------------------------

def test_generation_state_round_trips_and_vllm_is_asked_to_resync():
    class Fake:  # the names as TRL's GRPOTrainer has them (a real one is read in the hooks test above)
        _step, _buffered_inputs, _last_loaded_step = 5, ["rollouts"], 3

    fake = Fake()
    assert internals.generation_state(fake) == (5, ["rollouts"])
    internals.set_generation_state(fake, 8, None)
    internals.resync_vllm(fake)
    assert (fake._step, fake._buffered_inputs, fake._last_loaded_step) == (8, None, -1)
    assert internals.generation_state(object()) is None


class _Mark(TrainerCallback):
    pass


def test_checkpoint_hooks_callbacks_and_args_on_a_real_trainer(tmp_path):
    path = str(tiny_qwen2_5_vl_path())
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32)
    trainer = Trainer(model=model, args=TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none"))
    seen = []
    internals.wrap_checkpoint_save(trainer, lambda original: lambda *a, **k: seen.append("save"))
    internals.wrap_checkpoint_save(trainer, lambda original: lambda *a, **k: seen.append("twice"))  # a no-op
    trainer._save_checkpoint(model, trial=None)
    internals.wrap_checkpoint_load(trainer, lambda original: lambda ckpt, model=None: seen.append(ckpt))
    internals.load_checkpoint_weights(trainer, "ckpt-1")
    assert seen == ["save", "ckpt-1"]

    first, mark = trainer.callback_handler.callbacks[0], _Mark()
    internals.insert_callbacks(trainer, first, mark)
    assert trainer.callback_handler.callbacks[0] is mark

    internals.set_args(trainer, seed=7, save_total_limit=None)
    assert trainer.args.seed == 7 and trainer.args.save_total_limit is None
    with pytest.raises(ValueError, match="learning_rate"):
        internals.set_args(trainer, learning_rate=1.0)


def test_repeat_sampler_is_found_inside_trls_dataloader(tmp_path):
    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=2, num_generations=2, report_to="none",
                      use_cpu=True)
    path = str(tiny_qwen2_5_vl_path())
    processor = load_processor(path, min_pixels=3136, max_pixels=3136)
    trainer = GRPOTrainer(model=AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32),
                          reward_funcs=[lambda completions, **kw: [0.0] * len(completions)], args=args,
                          train_dataset=Dataset.from_list(_rows(4)), processing_class=processor)
    sampler = internals.repeat_sampler(trainer.get_train_dataloader())
    assert isinstance(sampler, internals.RepeatSampler) and sampler.mini_repeat_count == 2
    assert internals.repeat_sampler(object()) is None


def test_scale_logged_lr_changes_what_get_last_lr_reports():
    """Trainer logs ``get_last_lr()``; torch keeps it in the private ``_last_lr`` until the next step."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    internals.scale_logged_lr(sched, 0.25)
    assert sched.get_last_lr() == [0.25]


def test_trls_vllm_sync_merges_lora_and_the_check_catches_one_that_does_not(monkeypatch):
    assert internals.vllm_sync_merges_lora()
    from trl.generation.vllm_generation import VLLMGeneration

    def bare(self):  # a TRL that streamed the base weights without the adapters
        for name, p in self.model.named_parameters():
            if "lora_" not in name:
                yield name.removeprefix("base_model.model.").replace(".base_layer", ""), p.data

    monkeypatch.setattr(VLLMGeneration, "_iter_named_params", bare)
    internals.vllm_sync_merges_lora.cache_clear()
    try:
        assert not internals.vllm_sync_merges_lora()
    finally:
        internals.vllm_sync_merges_lora.cache_clear()


@pytest.mark.vllm  # TRL imports vllm.LLM into its module only where vLLM is installed
def test_colocate_factory_wraps_trls_llm_name_and_restores_it():
    from trl.generation import vllm_generation as trl_vllm

    real = getattr(trl_vllm, "LLM", None)
    assert real is not None  # TRL builds its colocate engine through this module name
    with internals.colocate_llm_factory(lambda llm: ("wrapped", llm)):
        assert trl_vllm.LLM == ("wrapped", real)
    assert trl_vllm.LLM is real
