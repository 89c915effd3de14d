"""GRPO on clips through TRL (mmr1.trainer.video): the prompts' expanded video tokens, the frames in every log-prob
forward, a run under transformers' generate and one under vLLM colocate whose sampling log-probs agree with the
trainer's."""

from __future__ import annotations

import json

import pytest
import torch

from mmr1.data import build_datasets
from mmr1.data.config import VideoConfig
from mmr1.models.generation import media_inputs
from mmr1.trainer.video import feed_videos, row_clips, tokenize_prompts, video_rows
from testkit import TINY, run_cli

CFG = VideoConfig(min_pixels=3136, max_pixels=12544)
VIDEO = ["dataset=synthetic_video_count", *TINY, "trainer.max_steps=2"]


@pytest.fixture(scope="module")
def tiny():
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from mmr1.models.tiny import tiny_qwen2_5_vl_path

    path = str(tiny_qwen2_5_vl_path())
    bundle = build_datasets({"name": "synthetic_video_count", "generator": "synthetic_video_count",
                             "num_samples": 3, "eval_size": 0}, min_pixels=3136, max_pixels=50176, seed=0, video=CFG)
    rows = [bundle.train[i] for i in range(3)]
    return AutoModelForImageTextToText.from_pretrained(path).eval(), AutoProcessor.from_pretrained(path), rows


def test_prompts_and_log_prob_forwards_carry_the_frames(tiny):
    """The generation prompts equal the processor's own encoding (expanded video runs, timing, modality ids);
    a forward fed by the hook equals one given the processor's video tensors, in chunks as TRL's loop makes them,
    and differs from one without them."""
    model, proc, rows = tiny
    clips = row_clips(rows)
    ids, images, fields = tokenize_prompts(proc, [r["prompt"] for r in rows], clips, CFG)
    texts = [proc.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=False) for r in rows]
    direct = proc(text=texts, **media_inputs(rows, CFG), padding=True, return_tensors="pt")
    assert images is None and [len(i) for i in ids] == direct["attention_mask"].sum(1).tolist()
    assert all(row.count(proc.video_token_id) == 8 for row in ids)
    assert fields["second_per_grid_ts"].tolist() == pytest.approx([1.0, 1.0, 1.0])  # 2 frames per patch at 2 fps

    tail = torch.tensor([[11, 12, 13]] * 3)
    input_ids = torch.cat([direct["input_ids"], tail], 1)
    mask = torch.cat([direct["attention_mask"], torch.ones_like(tail)], 1)
    with torch.no_grad():
        expected = model(input_ids=input_ids, attention_mask=mask, pixel_values_videos=direct["pixel_values_videos"],
                         video_grid_thw=direct["video_grid_thw"], second_per_grid_ts=direct["second_per_grid_ts"],
                         mm_token_type_ids=torch.cat([direct["mm_token_type_ids"], torch.zeros_like(tail)], 1)).logits
        bare = model(input_ids=input_ids, attention_mask=mask).logits
        fed = []
        with feed_videos(model, video_rows(proc, clips, CFG), proc.image_token_id, proc.video_token_id):
            for start in (0, 2):  # two chunks, as TRL's forward loop makes them
                fed.append(model(input_ids=input_ids[start:start + 2], attention_mask=mask[start:start + 2]).logits)
    torch.testing.assert_close(torch.cat(fed), expected, rtol=1e-5, atol=1e-5)
    assert (bare - expected).abs().max() > 1e-3  # without the frames the model reads something else
    with pytest.raises(RuntimeError, match="saw 2 rows for 3 rows of clips"):
        with feed_videos(model, video_rows(proc, clips, CFG), proc.image_token_id, proc.video_token_id):
            model(input_ids=input_ids[:2], attention_mask=mask[:2])


@pytest.mark.slow
def test_a_video_run_trains_under_transformers_generate(tmp_path):
    run_cli([*VIDEO, f"hydra.run.dir={tmp_path}"], timeout=600)
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "loss" in m] == [1, 2]
    assert json.loads((tmp_path / "run_info.json").read_text())["status"] == "finished"


@pytest.mark.vllm
@pytest.mark.slow
def test_vllm_colocate_samples_from_the_clips_the_trainer_scores(tmp_path):
    """vLLM gets each prompt's clip (frames and timing) beside its collapsed video run: its sampling log-probs
    agree with the trainer's fed forward. Measured on this CPU: mean |dlogp| 5.5e-4 at step 1; with the frames
    withheld from the trainer's forward, 3.1e-2."""
    run_cli([*VIDEO, "rollout=vllm_colocate", "rollout.enforce_eager=true", "rollout.kv_cache_gib=1",
             "rollout.importance_sampling_correction=true", "rollout.ban_vision_tokens=false",
             "trainer.mask_truncated_completions=false", "trainer.max_completion_length=16",
             f"hydra.run.dir={tmp_path}"], timeout=600)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    diffs = [r["sampling/sampling_logp_difference/mean"] for r in rows if "sampling/sampling_logp_difference/mean" in r]
    assert len(diffs) == 2 and max(diffs) < 3e-3, diffs
