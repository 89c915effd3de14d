"""Exact resume of a tool-using run: a run stopped at a mid-cycle checkpoint and resumed logs, step for step, the
numbers a straight run logs (tool metrics included) and ends on the same weights. The policy's turns are scripted
but sampled with torch's RNG (which of four tools each rollout calls, and what it answers), so the rollouts depend on
the RNG state a resume must restore, as sampled ones do; the tools run for real in the sandbox's workers."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_tool_rollouts import OVERRIDES, _call, _ids
from transformers import TrainerCallback

from mmr1.tracking.metrics import read_metrics
from testkit import compose_cfg

RUN = [*OVERRIDES, "trainer.max_steps=4", "trainer.num_iterations=2", "trainer.save_steps=3",
       "trainer.save_total_limit=null", "guard.save_on_interrupt=false", "audit.at_start=false",
       "rollout.tool_workers=1"]
TIMING = ("runtime", "per_second", "_time", "wall", "tools/timeouts")  # a hung call's deadline is wall clock


def _sampled_turns(proc):
    """A policy whose turns are drawn with torch's RNG: a crop, a raising tool or an answer, then an answer."""
    calls = [_call("crop", '{"bbox_2d": [0, 0, 28, 28]}'), _call("crop", '{"bbox_2d": [28, 28, 84, 84]}'),
             _call("boom", '{"reason": "r"}')]

    def turn(generate, prompt_ids):
        picks = torch.randint(0, 6, (len(prompt_ids),)).tolist()
        texts = [calls[k] if k < 3 and len(prompt_ids) > 4 else f"<think>x</think><answer>{k % 3 + 1}</answer>"
                 for k in picks]
        return _ids(proc, texts), None

    return turn


class _StopAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def _train(run_dir: Path, stop_at: int | None = None) -> None:
    from mmr1.trainer.setup import open_run
    from mmr1.trainer.steps import build_trainer, checkpoint_to_resume, fit, load_data, load_policy

    cfg = compose_cfg(RUN, run_dir=run_dir)
    run = open_run(cfg)
    data = load_data(cfg, run)
    resume = checkpoint_to_resume(cfg, run)
    trainer, metrics = build_trainer(cfg, run, load_policy(cfg, data), data)
    trainer.generate_turn = _sampled_turns(data.policy.processor)
    if stop_at is not None:
        trainer.add_callback(_StopAt(stop_at))
    try:
        fit(trainer, metrics, cfg, run, resume)
    finally:
        trainer.tool_runner.close()


@pytest.mark.slow
def test_a_tool_using_run_resumed_mid_cycle_matches_the_straight_run(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _train(straight)
    _train(resumed, stop_at=3)  # checkpoint-3: mid-cycle (num_iterations=2), its rollouts buffered
    assert list((resumed / "checkpoint-3").glob("mmr1_grpo_state_rank*.pt"))
    _train(resumed)  # resume=auto: from checkpoint-3
    a = {r["step"]: r for r in read_metrics(straight / "metrics.jsonl")}
    b = {r["step"]: r for r in read_metrics(resumed / "metrics.jsonl")}
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    assert any(a[s]["tools/calls_per_completion"] > 0 for s in a)  # the rollouts did call tools
    for step in (3, 4):
        for key, value in a[step].items():
            if any(t in key for t in TIMING):
                continue
            other = b[step][key]
            same = value == other or (isinstance(value, float) and math.isnan(value) and math.isnan(other))
            assert same, f"step {step} {key}: {value!r} != {other!r}"
    wa, wb = load_file(str(straight / "final" / "model.safetensors")), load_file(str(resumed / "final" /
                                                                                      "model.safetensors"))
    assert [k for k in wa if not torch.equal(wa[k], wb[k])] == []
