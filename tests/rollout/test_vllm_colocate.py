"""vLLM for real (its CPU build): rollouts through TRL's colocate mode sample from the weights the trainer has
just updated. TRL's importance-sampling metrics compare, token by token, vLLM's log-prob of each sampled token
with the trainer's own (``sampling/sampling_logp_difference/{mean,max}``); with the weights synced they stay at
float32 precision at every step, on image prompts, while a control whose sync is disabled drifts as it trains.

The runs turn the vision-token ban off (``rollout.ban_vision_tokens=false``): the ban renormalises vLLM's
distribution, which the trainer does not (its own test: tests/rollout/test_vision_tokens.py), and would add its
``log(1 - p_banned)`` to every difference measured here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from testkit import REPO, TINY, run_cli

PLUGIN = Path(__file__).with_name("id_recorder.py")

pytestmark = [pytest.mark.vllm, pytest.mark.slow]
NO_SYNC = Path(__file__).with_name("train_without_sync.py")
STEPS = 4
# Every prompt carries an 84x84 image (9 image tokens); fp32 on both sides; completions scored whole (no
# truncation mask), a fast learning rate so that 4 steps move the weights well past float32 noise.
AGREEMENT = [*TINY, f"trainer.max_steps={STEPS}", "rollout=vllm_colocate", "rollout.enforce_eager=true",
             "rollout.kv_cache_gib=1", "rollout.importance_sampling_correction=true", "rollout.ban_vision_tokens=false",
             "trainer.mask_truncated_completions=false", "trainer.max_completion_length=16",
             # A reward the random model's completions differ on (their length): non-zero advantages, real updates.
             f"reward.plugins=[{PLUGIN}]", "reward.funcs=[pays_length]"]


def _differences(run_dir: Path) -> list[tuple[float, float]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "sampling/sampling_logp_difference/mean" in r]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    return [(r["sampling/sampling_logp_difference/mean"], r["sampling/sampling_logp_difference/max"]) for r in rows]


@pytest.mark.parametrize("train_type", ["full", "lora"])
def test_vllm_samples_from_the_weights_just_trained(train_type, tmp_path):
    # LoRA: TRL merges the adapters into the base weights before each sync (VLLMGeneration._iter_named_params).
    # Its dropout off: TRL scores the sampled tokens with the model in train mode, so LoRA's dropout (0.05, ms-swift's
    # default) makes the trainer's own log-probs noisy, ~2e-2 apart from vLLM's after the first update (measured).
    lr = ["optimizer.lr=1e-3"] if train_type == "full" else ["optimizer.lr=2e-2", "model.lora.dropout=0"]
    run_cli([*AGREEMENT, f"model.train_type={train_type}", *lr, f"hydra.run.dir={tmp_path / 'synced'}"], timeout=900)
    synced = _differences(tmp_path / "synced")
    for step, (mean, worst) in enumerate(synced, 1):
        assert mean < 2e-6 and worst < 5e-5, f"step {step}: vLLM and the trainer differ by {mean:.2e} (max {worst:.2e})"
    # The control: the same run with the sync disabled samples from the initial weights while the trainer moves.
    proc = subprocess.run([sys.executable, str(NO_SYNC), *AGREEMENT, *lr, f"hydra.run.dir={tmp_path / 'frozen'}"],
                          cwd=REPO, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "WANDB_MODE": "disabled"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    frozen = _differences(tmp_path / "frozen")
    assert frozen[0][0] < 2e-6, "step 1 has nothing to sync yet: both start from the same weights"
    for step in range(1, STEPS):
        assert frozen[step][0] > 100 * max(synced[step][0], 1e-7), (step + 1, frozen[step], synced[step])
