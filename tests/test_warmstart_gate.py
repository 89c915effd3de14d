"""The warm-start's accuracy gate scores with the reward GRPO will use (model.warmstart.gate_reward)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf
from transformers import TrainerControl, TrainerState

import mmr1.models.warmstart as ws_mod
from mmr1.config.schema import WarmStartConfig


def _gate(monkeypatch, answers: list[str], solutions: list[str], **overrides):
    ws = OmegaConf.merge(OmegaConf.structured(WarmStartConfig), {"gate_start": 0, "gate_every": 1, **overrides})
    monkeypatch.setattr(ws_mod, "greedy_answers", lambda model, processor, rows: answers)
    gate = ws_mod.AccuracyGate(None, [{"solution": s} for s in solutions], ws)
    state, control = TrainerState(), TrainerControl()
    state.global_step = 5
    gate.on_step_end(None, state, control, model=object())
    return gate, control


@pytest.mark.parametrize(("answers", "accuracy"), [
    # The seed's reward, not a regex of the gate's own: string match inside <answer>; "3.0" scores 0
    # because math-verify parses nothing from a tagged solution ("<answer> 3 </answer>" -> []).
    (["<think>x</think><answer>3</answer>", "<answer>3.0</answer>", "<answer>4</answer>", "no answer"], 0.25),
    (["<answer> 3 </answer>"] * 4, 1.0),
])
def test_gate_accuracy_is_the_accuracy_reward(monkeypatch, answers, accuracy):
    gate, control = _gate(monkeypatch, answers, ["<answer> 3 </answer>"] * 4, gate_accuracy=0.75)
    assert gate.last_accuracy == accuracy
    assert control.should_training_stop is (accuracy >= 0.75)


def test_gate_reward_is_configurable(monkeypatch):
    """`gate_reward=format` counts well-formed completions, whatever their answer."""
    gate, _ = _gate(monkeypatch, ["<think>a</think><answer>9</answer>", "9"], ["<answer> 3 </answer>"] * 2,
                    gate_reward="format")
    assert gate.last_accuracy == 0.5
