"""One tool-using generation round under vLLM colocate (its CPU build), the first turn scripted (a crop of the whole
view), the turn after the tool's response sampled by vLLM; prints what tests/rollout/test_tool_rollouts.py checks, as
one JSON line. Run as ``python tests/rollout/tool_vllm_check.py RUN_DIR``, in a process of its own: the colocate
engine opens a torch.distributed group and sets RANK, WORLD_SIZE and MASTER_PORT in its process's environment."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from test_tool_rollouts import OVERRIDES, _call, _ids, _trainer  # noqa: E402

OVERRIDES_VLLM = [*OVERRIDES, "rollout=vllm_colocate", "rollout.enforce_eager=true", "rollout.kv_cache_gib=1",
                  "rollout.importance_sampling_correction=true", "rollout.ban_vision_tokens=false",
                  "rollout.tools=[crop]", "trainer.mask_truncated_completions=false"]


def main(run_dir: str) -> None:
    trainer, proc, rows = _trainer(OVERRIDES_VLLM, Path(run_dir))
    calls: list[int] = []

    def first_turn_scripted(generate, prompt_ids):
        calls.append(len(prompt_ids))
        if len(calls) > 1:
            return generate()  # vLLM samples the turn after the tool's response
        _, logprobs = generate()  # vLLM's own first turn, replaced by a crop of the whole view
        ids = _ids(proc, [_call("crop", '{"bbox_2d": [0, 0, 84, 84]}')] * len(prompt_ids))
        return ids, None if logprobs is None else [[0.0] * len(i) for i in ids]

    trainer.generate_turn = first_turn_scripted
    try:
        out = trainer._generate_and_score_completions(rows)
    finally:
        trainer.tool_runner.close()
    # The turn after the tool's response: vLLM's log-probs of its tokens (sampling_per_token_logps) against the
    # trainer's (old_per_token_logps). The scripted first turn's "sampling" log-probs are zeros: left out.
    post = torch.zeros_like(out["tool_mask"], dtype=torch.bool)
    for i, m in enumerate(out["tool_mask"]):
        j = int((m == 0).nonzero().max())
        post[i, j + 1:] = out["completion_mask"][i, j + 1:].bool()
    delta = (out["old_per_token_logps"] - out["sampling_per_token_logps"]).abs()[post]
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    print(json.dumps({"calls": calls, "image_tokens": [int((c == proc.image_token_id).sum()) for c in
                                                       out["completion_ids"]],
                      "calls_per_completion": metrics["tools/calls_per_completion"],
                      "post_tool_tokens": int(post.sum()), "max_delta": float(delta.max()),
                      "mean_delta": float(delta.mean())}))


if __name__ == "__main__":
    main(sys.argv[1])
