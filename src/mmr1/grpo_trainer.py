"""mmr1's GRPOTrainer: TRL's, plus the rollout context rule of the seed.

In the seed a completion ended where vLLM's context did: ms-swift v3.2.1 asked for ``max_tokens =
max_completion_length`` (swift/trainers/rlhf_trainer/grpo_trainer.py:257) and vLLM stops a sequence at
``max_model_len``, so with ClevrCount's ``--vllm_max_model_len 1024`` a completion got at most
``1024 - prompt tokens``. TRL asks every backend for ``max_completion_length`` tokens. This subclass cuts
each completion at ``context - len(prompt)`` after generation, the same rule for ``rollout=vllm_server``,
``vllm_colocate`` (where vLLM has usually stopped there already) and ``hf`` (where transformers generate
has not), so a rehearsal on CPU trains on the completions the GPU run would.
"""

from __future__ import annotations

from typing import Any

from trl import GRPOTrainer

IMAGE_MARK = "<image>"


def cap_to_context(prompt_ids: list[list[int]], completion_ids: list[list[int]], logprobs: list | None,
                   context: int, max_completion_length: int) -> tuple[list[list[int]], list | None]:
    """Cut completion i to ``min(max_completion_length, context - len(prompt_ids[i]))`` tokens.

    >>> cap_to_context([[1] * 8, [1] * 3], [[5] * 4, [5] * 4], None, context=10, max_completion_length=4)
    ([[5, 5], [5, 5, 5, 5]], None)
    """
    caps = [max(0, min(max_completion_length, context - len(p))) for p in prompt_ids]
    completion_ids = [c[:k] for c, k in zip(completion_ids, caps, strict=True)]
    if logprobs is not None:
        logprobs = [lp[:k] for lp, k in zip(logprobs, caps, strict=True)]
    return completion_ids, logprobs


def flat_messages(messages: list[dict]) -> list[dict]:
    """Messages with string content (image parts as ``<image>``): the shape wandb's Table can type.

    >>> flat_messages([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many?"}]}])
    [{'role': 'user', 'content': '<image>How many?'}]
    """
    out = []
    for m in messages:
        content = m["content"]
        if not isinstance(content, str):
            content = "".join(p.get("text") or "" if p.get("type") == "text" else IMAGE_MARK for p in content)
        out.append({**m, "content": content})
    return out


class Mmr1GRPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` with ``context_length``: None keeps TRL's behaviour exactly."""

    def __init__(self, *args: Any, context_length: int | None = None, **kwargs: Any) -> None:
        self.context_length = context_length
        super().__init__(*args, **kwargs)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        # TRL 1.16 logs a VLM's prompts with list content ([{"type": "text", ...}]) into a wandb Table, whose
        # type inference rejects that column ("Data row contained incompatible types"): the seed's
        # `--log_completions true --report_to wandb` stopped at the first logged step (found by the rehearsal).
        # Flattened prompts read the same in the table, the rich printout and completions/*.parquet.
        prompts = getattr(self, "_logs", {}).get("prompt")
        if self.log_completions and prompts:
            flat = [flat_messages(p) if isinstance(p, list) else p for p in prompts]
            prompts.clear()
            prompts.extend(flat)
        super().log(logs, start_time)

    # Same signature as TRL 1.16's (tests/test_grpo_trainer.py pins it to the installed TRL).
    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        if self.context_length is None:
            return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations,
                                                 has_tool_images)
        config = getattr(self, "generation_config", None)  # transformers generate only (TRL's hf path)
        saved = getattr(config, "max_new_tokens", None)
        if config is not None and not self.use_vllm:
            # Generate no further than the roomiest prompt of the batch may keep: the rest would be cut anyway.
            config.max_new_tokens = max(1, min(saved, self.context_length - min(map(len, prompt_ids))))
        try:
            completion_ids, logprobs = super()._generate_single_turn(
                prompt_ids, images, multimodal_fields, num_generations, has_tool_images
            )
        finally:
            if config is not None:
                config.max_new_tokens = saved
        return cap_to_context(prompt_ids, completion_ids, logprobs, self.context_length, self.max_completion_length)
