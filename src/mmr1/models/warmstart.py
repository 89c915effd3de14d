"""Supervised warm-start of a small model before GRPO (TRL's SFTTrainer), cached by recipe.

The seed starts GRPO from an Instruct model "to rapidly achieve format rewards". The embedded tiny
model starts from random weights, where GRPO sees no reward signal for hundreds of steps. The tiny
analogue of "Instruct" is a short SFT on synthetic answers that teaches the R1 format and then stops
on an accuracy gate, so the model it hands to GRPO is imperfect at the task (measured: on the 3x3 grid
scenes SFT jumps from chance to perfect within ~50 steps somewhere past step 100;
stopping at ~0.45 greedy accuracy leaves GRPO the rest of the way).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from transformers import PrinterCallback, TrainerCallback

from mmr1.config.grpo_args import checkpointing_field
from mmr1.config.typed import container
from mmr1.data import build_datasets
from mmr1.models.generation import generate
from mmr1.models.tiny import build_lock, cache_root
from mmr1.rewards import get as get_reward
from mmr1.rollout.tools.settings import tool_runner
from mmr1.rollout.tools.template import enable_tools
from mmr1.rollout.tools.transcripts import (
    TranscriptCollator,
    conversation_images,
    expert_turns,
    generate_with_tools,
    transcript_features,
    with_images,
)
from mmr1.tracking.quiet import weight_bars_off

log = logging.getLogger(__name__)

# 2: the gate scores with the reward function (gate_reward), not a regex of its own.
WARMSTART_VERSION = 2
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def target_completion(solution: str, think: str) -> str:
    """The SFT target for one row: the format the rewards ask for, with the solution's answer."""
    m = _ANSWER.search(solution)
    answer = (m.group(1) if m else solution).strip()
    return f"<think>{think}</think><answer>{answer}</answer>"


def _recipe(cfg: DictConfig, base_path: str, limits) -> dict[str, Any]:
    base = Path(base_path) / "mmr1_recipe.json"
    dataset = container(warmstart_dataset(cfg), enum_to_str=True)
    return {
        "version": WARMSTART_VERSION,
        "base": base.read_text() if base.exists() else base_path,
        "warmstart": OmegaConf.to_container(cfg.model.warmstart, resolve=True),
        "task": {k: dataset.get(k) for k in ("name", "generator", "image_size", "query_suffix", "system_prompt")},
        **({"tasks": dataset["tasks"]} if dataset.get("tasks") else {}),  # a mixture: its tasks and weights
        # Tool-call transcripts (rollout.tools): their tools, bounds and the completion budget the gate generates in.
        **({"tools": {"entries": list(cfg.rollout.tools), "max_tool_calls": cfg.rollout.max_tool_calls,
                      "tool_image_max_pixels": cfg.rollout.tool_image_max_pixels,
                      "max_completion_length": cfg.trainer.max_completion_length}}
           if cfg.rollout.get("tools") else {}),
        "pixels": [limits.min_pixels, limits.max_pixels],
    }


def maybe_warmstart(cfg: DictConfig, base_path: str, processor, limits) -> str:
    """Return the path GRPO should start from: ``base_path``, or its cached warm-start."""
    ws = cfg.model.warmstart
    if not ws.enabled:
        return base_path
    for generator in ws.get("curriculum") or ():
        base_path = maybe_warmstart(curriculum_step(cfg, generator), base_path, processor, limits)
    recipe = _recipe(cfg, base_path, limits)
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    out = cache_root() / f"warmstart-{key}"
    with build_lock(out):  # parallel jobs wanting the same warm-start: one builds it, the others wait for it
        if (out / "mmr1_warmstart.json").exists():
            log.info("Warm-start: cached %s", out)
            return str(out)
        log.info("Warm-start: supervised fine-tuning of %s (cached afterwards in %s)", base_path, out)
        report = run_warmstart(cfg, base_path, processor, limits, out)
    log.info("Warm-start done: %s", report)
    return str(out)


def curriculum_step(cfg: DictConfig, generator: str) -> DictConfig:
    """The config of one curriculum step: the run's, the dataset's generator swapped, no tools, no curriculum."""
    step = OmegaConf.merge(cfg, {"dataset": {"generator": generator, "warmstart_generator": None},
                                 "rollout": {"tools": []}, "model": {"warmstart": {"curriculum": []}}})
    assert isinstance(step, DictConfig)  # a mapping merged into a mapping
    return step


def warmstart_dataset(cfg: DictConfig) -> DictConfig:
    """The dataset node the SFT's stand-in comes from: the run's, with ``dataset.warmstart_generator`` (a video
    task's image twin) as its generator when set."""
    twin = cfg.dataset.get("warmstart_generator")
    if not twin:
        return cfg.dataset
    merged = OmegaConf.merge(cfg.dataset, {"generator": twin})
    assert isinstance(merged, DictConfig)  # a mapping merged into a mapping
    return merged


def warmstart_data_cfg(dataset: DictConfig, ws: Any) -> Any:
    """The task's offline stand-in, ``ws.num_samples`` SFT rows and ``ws.gate_samples`` held out for the gate;
    a mixture (mmr1.data.mixture): each task's stand-in, the SFT rows by weight, the gate's split across tasks."""
    tasks = list(dataset.get("tasks") or ())
    if not tasks:
        return OmegaConf.merge(dataset, {"source": "synthetic", "num_samples": ws.num_samples + ws.gate_samples,
                                         "eval_size": ws.gate_samples, "limit": None, "seed": ws.seed})
    per_task = {"source": "synthetic", "num_samples": ws.num_samples, "limit": None,
                "eval_size": -(-ws.gate_samples // len(tasks))}
    return OmegaConf.merge(dataset, {"limit": ws.num_samples, "eval_size": ws.gate_samples, "seed": ws.seed,
                                     "tasks": {t: per_task for t in tasks}})


def run_warmstart(cfg: DictConfig, base_path: str, processor, limits, out: Path) -> dict[str, Any]:
    import datasets
    import torch
    from transformers import AutoModelForImageTextToText
    from trl import SFTTrainer

    ws = cfg.model.warmstart
    ds_cfg = warmstart_data_cfg(warmstart_dataset(cfg), ws)
    data = build_datasets(ds_cfg, min_pixels=limits.min_pixels, max_pixels=limits.max_pixels, seed=ws.seed)
    runner = tool_runner(cfg, limits)
    if runner is not None:  # rollout.tools: the SFT learns whole tool-call transcripts (mmr1.rollout.tools.transcripts)
        try:
            return _tool_warmstart(cfg, base_path, processor, data, runner, out)
        finally:
            runner.close()
    # `image` or `images` (several per prompt, mmr1.data.datasets): TRL's SFTTrainer reads both.
    pics = [k for k in ("image", "images") if k in data.train.column_names]
    rows = [{"prompt": r["prompt"], **{k: r[k] for k in pics},
             "completion": [{"role": "assistant",
                             "content": [{"type": "text", "text": target_completion(r["solution"], ws.think)}]}]}
            for r in data.train]
    train_ds = datasets.Dataset.from_list(rows)
    assert data.eval is not None  # ds_cfg above always holds out the gate's rows
    gate_rows = [{"prompt": r["prompt"], **{k: r[k] for k in pics}, "solution": r["solution"]} for r in data.eval]

    torch.manual_seed(ws.seed)
    model = AutoModelForImageTextToText.from_pretrained(base_path, dtype=torch.float32)
    gate = AccuracyGate(processor, gate_rows, ws)
    tmp = Path(tempfile.mkdtemp(prefix="mmr1-warmstart-"))
    args = _sft_args(ws, tmp, completion_only_loss=True)
    trainer = SFTTrainer(model=model, args=args, train_dataset=train_ds, processing_class=processor,
                         callbacks=[gate])
    return _train_and_publish(trainer, model, processor, gate, base_path, out, tmp)


def _sft_args(ws: Any, tmp: Path, **extra: Any) -> Any:
    import torch
    from trl import SFTConfig

    checkpointing: dict[str, Any] = {checkpointing_field(): False}  # the installed transformers' name for it
    return SFTConfig(
        output_dir=str(tmp), max_steps=ws.max_steps, per_device_train_batch_size=ws.batch_size,
        learning_rate=ws.learning_rate, warmup_steps=ws.warmup_steps, lr_scheduler_type="constant_with_warmup",
        logging_steps=25, save_strategy="no", report_to="none", bf16=False,
        max_length=None, seed=ws.seed, dataloader_num_workers=0, disable_tqdm=True,
        dataloader_pin_memory=torch.accelerator.is_available(),  # torch warns about pinning without an accelerator
        **checkpointing, **extra,
    )


def _tool_warmstart(cfg: DictConfig, base_path: str, processor, data, runner, out: Path) -> dict[str, Any]:
    """The SFT on tool-call transcripts: crop where the row's ``zoom_box`` says, read the crop, answer; only the
    model's turns are learnt. transformers' Trainer on the pre-tokenized transcripts (TRL's SFTTrainer renders no
    tool responses with images)."""
    import datasets
    import torch
    from transformers import AutoModelForImageTextToText, Trainer

    ws = cfg.model.warmstart
    enable_tools(processor)
    schemas = [s.schema for s in runner.specs]
    rows = []
    for r in data.train:
        messages = with_images(r["prompt"], [r["image"]])
        messages += expert_turns(r, r["image"].size, target_completion(r["solution"], ws.think), ws.think, runner)
        rows.append({**transcript_features(processor, messages, schemas), "images": conversation_images(messages)})
    train_ds = datasets.Dataset.from_list(rows)
    assert data.eval is not None  # warmstart_data_cfg always holds out the gate's rows
    torch.manual_seed(ws.seed)
    model = AutoModelForImageTextToText.from_pretrained(base_path, dtype=torch.float32)
    gate = AccuracyGate(processor, list(data.eval), ws, runner=runner,
                        max_new_tokens=int(cfg.trainer.max_completion_length))
    tmp = Path(tempfile.mkdtemp(prefix="mmr1-warmstart-"))
    args = _sft_args(ws, tmp, remove_unused_columns=False)
    trainer = Trainer(model=model, args=args, train_dataset=train_ds, data_collator=TranscriptCollator(processor),
                      callbacks=[gate])
    return _train_and_publish(trainer, model, processor, gate, base_path, out, tmp)


def _train_and_publish(trainer, model, processor, gate, base_path: str, out: Path, tmp: Path) -> dict[str, Any]:
    trainer.remove_callback(PrinterCallback)  # disable_tqdm's log dicts; AccuracyGate logs the progress that matters
    trainer.train()
    report = {"steps": trainer.state.global_step, "gate_accuracy": gate.last_accuracy,
              "gate_history": gate.history, "recipe_hash": out.name}
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    with weight_bars_off():  # no "Writing model shards" bar (mmr1.tracking.quiet)
        model.save_pretrained(staging)
    processor.save_pretrained(staging)
    base_recipe = Path(base_path) / "mmr1_recipe.json"
    if base_recipe.exists():
        shutil.copy(base_recipe, staging / "mmr1_recipe.json")
    (staging / "mmr1_warmstart.json").write_text(json.dumps(report, indent=2))
    try:
        staging.rename(out)  # atomic publish; a concurrent builder that won leaves ours to delete
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)
    return report


def greedy_answers(model, processor, rows: list[dict], max_new_tokens: int = 24, batch_size: int = 64,
                   runner: Any = None) -> list[str]:
    """Greedy completions (text) for rows with ``prompt`` messages and one ``image``; with ``runner`` (rollout.tools)
    the tools run between turns and the text is the answer turn (mmr1.rollout.tools.transcripts)."""
    def answers(part: list[dict]) -> list[list[dict]]:
        if runner is None:
            return generate(model, processor, part, n=1, do_sample=False, max_new_tokens=max_new_tokens)
        return generate_with_tools(model, processor, runner, part, n=1, do_sample=False, max_new_tokens=max_new_tokens)

    was_training = model.training
    model.eval()
    try:
        return [g[0]["text"] for i in range(0, len(rows), batch_size) for g in answers(rows[i:i + batch_size])]
    finally:
        model.train(was_training)


class AccuracyGate(TrainerCallback):
    """Stop SFT once greedy held-out accuracy, by ``gate_reward``, reaches ``gate_accuracy`` (every ``gate_every``)."""

    def __init__(self, processor, rows: list[dict], ws: DictConfig, runner: Any = None, max_new_tokens: int = 24):
        self.processor, self.rows, self.ws = processor, rows, ws
        # rollout.tools: the gate's answers come through the tool loop (mmr1.rollout.tools.transcripts).
        self.runner, self.max_new_tokens = runner, max_new_tokens
        # In this process, unsandboxed: the completions are the tiny model's <= 24 greedy tokens.
        self.reward = get_reward(ws.gate_reward)
        self.history: list[tuple[int, float]] = []
        self.last_accuracy: float | None = None

    def on_step_end(self, args, state, control, model=None, **kwargs):
        step = state.global_step
        if step < self.ws.gate_start or step % self.ws.gate_every or model is None:
            return
        tools = {} if self.runner is None else {"runner": self.runner, "max_new_tokens": self.max_new_tokens}
        answers = greedy_answers(model, self.processor, self.rows, **tools)
        scores = self.reward(answers, solution=[r["solution"] for r in self.rows])
        self.last_accuracy = sum(float(v or 0.0) for v in scores) / max(len(scores), 1)
        self.history.append((step, self.last_accuracy))
        log.info("Warm-start step %d: greedy held-out accuracy %.2f", step, self.last_accuracy)
        if self.last_accuracy >= self.ws.gate_accuracy:
            control.should_training_stop = True
