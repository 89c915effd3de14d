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


def test_a_curriculum_chains_cached_warm_starts(monkeypatch, tmp_path):
    """model.warmstart.curriculum: each generator's plain SFT runs first, from the last one's weights, with no tools;
    the task's own warm-start starts from the end of it; a second run finds every step cached."""
    from mmr1.data import PixelLimits
    from testkit import compose_cfg

    monkeypatch.setenv("MMR1_CACHE", str(tmp_path))
    calls = []

    def fake_run(cfg, base_path, processor, limits, out):
        calls.append((cfg.dataset.generator, list(cfg.rollout.tools), base_path))
        out.mkdir(parents=True)
        (out / "mmr1_warmstart.json").write_text("{}")
        return {}

    monkeypatch.setattr(ws_mod, "run_warmstart", fake_run)
    cfg = compose_cfg(["+experiment=tiny_zoom_count"])
    limits = PixelLimits(3136, 7056)
    final = ws_mod.maybe_warmstart(cfg, "BASE", None, limits)
    (first, no_tools, base), (task, tools, start) = calls
    assert (first, no_tools, base) == ("synthetic_count", [], "BASE")
    assert (task, tools) == ("synthetic_zoom_count", ["crop"]) and start != "BASE" and start != final
    assert ws_mod.maybe_warmstart(cfg, "BASE", None, limits) == final and len(calls) == 2
