"""Tool-using GRPO rollouts through TRL (``rollout.tools``), on a batch whose first turns are scripted: a crop, a tool
that hangs, one that raises, one that returns an oversized image, a malformed call, plain answers. What is checked is
the batch TRL trains on: the tool results inside the completions and out of the loss (``tool_mask``), the rewards on
the answer turn, the counts, and a step that a hanging tool cannot stall."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import torch

from testkit import TINY, compose_cfg

PLUGINS = Path(__file__).with_name("tool_plugins.py")
TOOLS = f"rollout.tools=[crop,{PLUGINS}:hang,{PLUGINS}:boom,{PLUGINS}:big]"
OVERRIDES = [*TINY, "dataset=synthetic_zoom_count", "model.max_pixels=7056", TOOLS, "rollout.tool_timeout_s=3",
             "trainer.max_completion_length=200", "rollout.max_tool_calls=1", "trainer.max_length=null"]


def _call(name: str, args: str) -> str:
    return f'<think>look</think>\n<tool_call>\n{{"name": "{name}", "arguments": {args}}}\n</tool_call>'


def _trainer(overrides: list[str], run_dir: Path):
    """mmr1's trainer for ``overrides``, built by the steps a run takes, and the rows of its first two prompts."""
    from mmr1.trainer.setup import open_run
    from mmr1.trainer.steps import build_trainer, load_data, load_policy

    cfg = compose_cfg(overrides, run_dir=run_dir)
    run = open_run(cfg)
    data = load_data(cfg, run)
    trainer, _ = build_trainer(cfg, run, load_policy(cfg, data), data)
    trainer.current_gradient_accumulation_steps = 1  # what Trainer's loop sets before a loss
    trainer.model.train()
    return trainer, data.policy.processor, [data.bundle.train[i] for i in (0, 0, 0, 0, 1, 1, 1, 1)]


def _ids(proc, texts: list[str]) -> list[list[int]]:
    eos = proc.tokenizer.convert_tokens_to_ids("<|im_end|>")
    return [proc.tokenizer(t, add_special_tokens=False)["input_ids"] + [eos] for t in texts]


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    trainer, proc, rows = _trainer(OVERRIDES, tmp_path_factory.mktemp("tools"))
    gold = [re.search(r"\d+", r["solution"]).group(0) for r in rows]
    # The crop is a tall strip (its image a different size from big's), and its answer turn is cut (no end of turn):
    # a truncated completion, which TRL masks whole, tool image included (mmr1.trainer.forward_hooks).
    first = [_call("crop", '{"bbox_2d": [0, 0, 28, 84]}'), _call("hang", '{"seconds": 1}'),
             _call("boom", '{"reason": "test"}'), _call("big", '{"side": 3000}'),
             "<think>x</think><tool_call>{not json</tool_call>",
             *[f"<think>x</think><answer>{g}</answer>" for g in gold[5:]]]
    seen: list[list[list[int]]] = []

    def scripted(generate, prompt_ids):  # the policy's turns, in place of sampling (TRL's generate not called)
        seen.append(prompt_ids)
        # The answer turns after the four calls: right, wrong, right, wrong (a group whose rewards differ: its
        # advantages, hence its gradient, are not zero).
        wrong = str(int(gold[0]) % 3 + 1)
        texts = first if len(seen) == 1 else [f"<think>y</think><answer>{a}</answer>"
                                              for a in (gold[0], wrong, gold[0], wrong)]
        ids = _ids(proc, texts)
        if len(seen) == 2:
            ids[0] = ids[0][:-1]  # the crop's answer turn ends without <|im_end|>: truncated
        return ids, None

    trainer.generate_turn = scripted
    started = time.monotonic()
    out = trainer._generate_and_score_completions(rows)
    took = time.monotonic() - started
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    yield {"trainer": trainer, "out": out, "proc": proc, "seen": seen, "metrics": metrics, "took": took,
           "first": first}
    trainer.tool_runner.close()


def test_tool_results_are_in_the_completion_and_out_of_the_loss(batch):
    out, proc = batch["out"], batch["proc"]
    ids, mask, tool_mask = out["completion_ids"], out["completion_mask"], out["tool_mask"]
    tok, image = proc.tokenizer, proc.image_token_id
    # Only the four parsed calls went back for a second turn, each prompt = prompt + turn + the tool's response.
    assert len(batch["seen"]) == 2 and len(batch["seen"][1]) == 4
    assert not mask[0].any() and mask[1:].sum(1).min() > 0  # the truncated one is masked whole, the others not
    real = ids != tok.pad_token_id
    # The truncated completion is out of the loss whole (TRL zeroes its tool mask too); it still holds its turns.
    assert not tool_mask[0].any() and tok.decode(ids[0][real[0]]).startswith(batch["first"][0])
    for i in range(1, 8):
        own = (tool_mask[i] == 1) & real[i]
        tool = (tool_mask[i] == 0) & real[i]
        if i < 4:
            model_text = tok.decode(ids[i][own])
            assert model_text.startswith(batch["first"][i]) and model_text.endswith("</answer><|im_end|>")
            response = tok.decode(ids[i][tool])
            assert response.startswith("\n<|im_start|>user\n<tool_response>\n") and response.endswith(
                "</tool_response><|im_end|>\n<|im_start|>assistant\n")
        else:  # no parsed call: the whole completion is the model's
            assert not tool.any()
    # Image tokens of the tool results (the strip: 84x252 from the source, downscaled into 7056 pixels, 28x140: 1x5;
    # big: 9) are all masked out.
    assert [int((ids[i] == image).sum()) for i in range(8)] == [5, 0, 0, 9, 0, 0, 0, 0]
    assert not ((ids == image) & (tool_mask == 1)).any()
    assert "error" in tok.decode(ids[1][tool_mask[1] == 0]) and "boom: test" in tok.decode(ids[2][tool_mask[2] == 0])


def test_the_loss_skips_tool_tokens_and_sees_the_tool_images(batch):
    trainer, out = batch["trainer"], batch["out"]
    grids = out["image_grid_thw"]  # each rollout's prompt image (6x6 patches), then the strip and big's image
    assert grids.shape[0] == 10 and out["pixel_values"].shape[0] == int(grids.prod(-1).sum())
    model = trainer.model

    def grads(inputs):
        model.zero_grad()
        loss = trainer.compute_loss(model, inputs)
        loss.backward()
        assert torch.isfinite(loss)
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    # The forwards run at all only because the masked completion's tool image still counts in Qwen2.5-VL's
    # positions (mmr1.trainer.forward_hooks): without it, the strip's grid goes to big's image, and the forward
    # fails on a shape mismatch. On-policy the GRPO loss is -mean(advantage) whatever the mask; its gradient is
    # where the mask shows: the tool tokens' log-probs (the mask's zeros, placed by the test above) would pull.
    masked = grads(out)
    assert masked.abs().sum() > 0
    assert not torch.allclose(masked, grads(dict(out, tool_mask=torch.ones_like(out["tool_mask"]))))
    model.zero_grad()


def test_rewards_score_the_answer_turn_and_metrics_count_what_the_tools_did(batch):
    m = batch["metrics"]
    assert m["tools/call_frequency"] == 4 / 8 and m["tools/calls_per_completion"] == 4 / 8
    assert m["tools/failure_frequency"] == 2 / 4  # hang and boom
    # Downscaled into the 7056-pixel bound: big's 3000x3000, and the crop, whose box (28x84 of the 84x84 view) is
    # 84x252 of the source.
    assert (m["tools/errors"], m["tools/timeouts"], m["tools/images_downscaled"]) == (1, 1, 2)
    assert m["tools/turns"] == (4 * 2 + 4) / 8 and m["tools/malformed"] == 1 / 8
    # The answer turn is what is scored (the cut one too): two of the four tool users and the three plain answers
    # are right.
    assert m["rewards/external_r1v_acc/mean"] == 5 / 8 and m["rewards/format/mean"] == 7 / 8


def test_a_hanging_tool_costs_its_deadline_not_the_step(batch):
    assert batch["took"] < 3 + 20  # rollout.tool_timeout_s=3, plus the rest of a tiny step on a busy machine


@pytest.mark.vllm
def test_vllm_colocate_continues_after_the_tool_with_the_images_the_trainer_sees(tmp_path):
    """The turn after a crop, sampled by vLLM (its CPU build, colocate) from the prompt, the call and the crop: vLLM's
    log-probs of those tokens against the trainer's, which agree only if the trainer's forward sees the two images
    where vLLM does (trl#6274 was the trainer slicing them wrongly). In a process of its own
    (tests/rollout/tool_vllm_check.py): the colocate engine's process group and environment stay there."""
    import json
    import subprocess
    import sys

    from testkit import REPO, run_env

    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("tool_vllm_check.py")), str(tmp_path)],
                          cwd=REPO, env=run_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["calls"] == [8, 8]  # every rollout called crop, and vLLM generated its next turn
    assert got["image_tokens"] == [9] * 8 and got["calls_per_completion"] == 1.0
    assert got["post_tool_tokens"] >= 8
    assert got["max_delta"] < 1e-3, f"vLLM and the trainer differ by up to {got['max_delta']:.2e} after the tool"


def test_logged_completions_show_the_turns(batch):
    trainer = batch["trainer"]
    trainer.log_completions = True
    (Path(trainer.args.output_dir) / "completions").mkdir(parents=True, exist_ok=True)  # made at train() start
    trainer.log({"loss": 0.0})
    crop = trainer.logged_completions()[-8]  # the batch's first rollout: the crop
    assert [m["role"] for m in crop] == ["assistant", "tool", "assistant"]
    assert all(set(m) == {"role", "content"} and isinstance(m["content"], str) for m in crop)
    assert '<tool_call>{"name": "crop"' in crop[0]["content"] and crop[1]["content"] == "<image>"
