"""mmr1's GRPOTrainer: TRL's, plus the rollout context rule of the seed.

In the seed a completion ended where vLLM's context did: ms-swift v3.2.1 asked for ``max_tokens =
max_completion_length`` (swift/trainers/rlhf_trainer/grpo_trainer.py:257) and vLLM stops a sequence at
``max_model_len``, so with ClevrCount's ``--vllm_max_model_len 1024`` a completion got at most
``1024 - prompt tokens``. TRL asks every backend for ``max_completion_length`` tokens. This subclass cuts
each completion at ``context - len(prompt)`` after generation, the same rule for ``rollout=vllm_server``,
``vllm_colocate`` (where vLLM has usually stopped there already) and ``hf`` (where transformers generate
has not), so a rehearsal on CPU trains on the completions the GPU run would.

A task mixture's rows carry ``task``: each reward's mean is also logged per task,
``rewards/<reward>/<task>/mean`` (mmr1.tracking.per_task).

``dynamic_sampling=True`` (``trainer.dynamic_sampling``) hooks each generation round: groups whose rewards all
agree are dropped and refilled with fresh prompts (mmr1.trainer.dynamic_sampling).

TRL's private methods are reached through ``mmr1.internals.GRPOHooks``; this class overrides its public hooks only.
"""

from __future__ import annotations

from typing import Any

import torch
from accelerate.utils import gather_object

from mmr1.data.config import VideoConfig
from mmr1.internals import GRPOHooks
from mmr1.rewards.text import flat_messages  # re-exported: the trainer's log() flattens with it
from mmr1.rollout.colocate import ROLLOUT_CLIPS
from mmr1.rollout.tools.metrics import tool_metrics
from mmr1.rollout.vision_tokens import cut_at_vision_tokens
from mmr1.tracking.per_task import per_task_means
from mmr1.trainer.dynamic_sampling import loss_tokens, refill_indices, sample_batch
from mmr1.trainer.forward_hooks import attend_images
from mmr1.trainer.video import feed_videos, row_clips, tokenize_prompts, video_rows


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


class Mmr1GRPOTrainer(GRPOHooks):
    """``GRPOTrainer`` with ``context_length`` and ``dynamic_sampling``: None / False keep TRL's behaviour exactly."""

    def __init__(self, *args: Any, context_length: int | None = None, dynamic_sampling: bool = False,
                 dynamic_sampling_max_batches: int = 1, banned_token_ids: set[int] | None = None,
                 video: Any = None, tool_runner: Any = None, **kwargs: Any) -> None:
        self.context_length = context_length
        # Clips (a dataset's `videos`): their frame bounds, and the batch's clips / video tensors while a round
        # generates and scores them, or while the loss runs (mmr1.trainer.video).
        self.video = video or VideoConfig()
        self._clips: list | None = None
        self._video_rows: list | None = None
        # The vision tokens banned at sampling time (mmr1.rollout.vision_tokens): a completion that still holds
        # one ends before it, counted as rollout/vision_token_cuts.
        self.banned_token_ids = set(banned_token_ids or ())
        self.dynamic_sampling = dynamic_sampling
        # rollout.tools (mmr1.rollout.tools): the bounded tool calls; their counts are logged with each batch's rewards.
        self.tool_runner = tool_runner
        self.dynamic_sampling_max_batches = dynamic_sampling_max_batches
        self._last_rewards_per_func: torch.Tensor | None = None
        super().__init__(*args, **kwargs)
        if dynamic_sampling:
            self._check_dynamic_sampling()

    def _check_dynamic_sampling(self) -> None:
        if self.dynamic_sampling_max_batches < 1:
            raise ValueError("trainer.dynamic_sampling_max_batches must be >= 1, "
                             f"got {self.dynamic_sampling_max_batches}")
        local = self._local_rows()
        if local % self._group_size():
            # A group split across ranks could not be kept or dropped by one rank alone.
            raise ValueError(f"trainer.dynamic_sampling needs whole groups on each rank: per_device_train_batch_size"
                             f" x steps_per_generation = {local} is not a multiple of trainer.num_generations = "
                             f"{self.num_generations}")
        if not hasattr(self.train_dataset, "__getitem__") or not hasattr(self.train_dataset, "__len__"):
            raise ValueError("trainer.dynamic_sampling refills from the training set by index: it needs a map-style "
                             f"dataset, got {type(self.train_dataset).__name__}")

    def score(self, calculate, inputs):
        """The rewards gathered from every rank; kept for dynamic sampling, and logged per task for a mixture."""
        self._last_rewards_per_func = calculate()
        if inputs and "task" in inputs[0]:  # a task mixture (mmr1.data.mixture): each reward's mean per task
            # TRL returns the rewards gathered from every rank in rank order; the task labels gather alike.
            tasks = gather_object([x["task"] for x in inputs])
            mode = "train" if self.model.training else "eval"
            means = per_task_means(self._last_rewards_per_func.tolist(), tasks, self.reward_func_names)
            for key, value in means.items():
                self.log_metric(mode, key, value)
        return self._last_rewards_per_func

    def completions_made(self, completions):
        if self.tool_runner is None:
            return
        mode = "train" if self.model.training else "eval"
        for key, value in tool_metrics(completions, self.tool_runner.take_stats()).items():
            self.log_metric(mode, key, value)

    def generate_and_score(self, run, inputs):
        """Once per generation round, so num_iterations > 1 and steps_per_generation reuse the filtered batch."""
        if self.tool_runner is not None:
            self.tool_runner.new_round()  # the round's tool budget (rollout.tool_round_timeout_s) starts afresh
        run = self._with_clips(run)
        if not self.dynamic_sampling or not self.model.training:
            return run(inputs)
        acc = self.accelerator
        generate_every = self.args.steps_per_generation * self.num_iterations
        round_ = self.micro_step // generate_every  # restored on resume (mmr1.reliability.resume)

        def any_rank(flag: bool) -> bool:
            return bool(acc.gather(torch.tensor([int(flag)], device=acc.device)).max().item())

        def last_rewards() -> torch.Tensor:
            assert self._last_rewards_per_func is not None  # set by the generate call just made
            return self._last_rewards_per_func

        batch, stats = sample_batch(
            run, inputs, lambda k: self._refill_rows(round_, k), last_rewards,
            weights=self.reward_weights, num_generations=self._group_size(),
            max_batches=self.dynamic_sampling_max_batches, rank=acc.process_index, world=acc.num_processes,
            any_rank=any_rank, pad_token_id=self.text_tokenizer.pad_token_id)
        batch["num_items_in_batch"] = acc.gather(loss_tokens(batch)).sum()  # TRL's count, for the kept rows
        for key, value in stats.items():
            self.log_metric("train", key, value)
        return batch

    def _with_clips(self, run):
        """``run(rows)`` with the rows' clips carried through TRL's step (mmr1.trainer.video), their video tensors
        added to the output under ``videos``, one entry per row, for the loss."""
        def run_rows(rows: list[dict]) -> dict[str, Any]:
            clips = row_clips(rows)
            if clips is None:
                return run(rows)
            self._clips = clips
            self._video_rows = video_rows(self.processing_class, clips, self.video)
            token = ROLLOUT_CLIPS.set(clips)  # vLLM colocate: the clips of the prompts it generates from
            try:
                out = run(rows)
                out["videos"] = self._video_rows
            finally:
                self._clips, self._video_rows = None, None
                ROLLOUT_CLIPS.reset(token)
            return out

        return run_rows

    def tokenize(self, tokenize, prompts):
        if self._clips is None:
            return tokenize()
        return tokenize_prompts(self.processing_class, prompts, self._clips, self.video, self.chat_template_override)

    def logps_context(self, model):
        if self.tool_runner is not None:  # tool images of masked (truncated) completions: mmr1.trainer.forward_hooks
            return attend_images(model, self.processing_class.image_token_id)
        if self._video_rows is None:
            return super().logps_context(model)
        proc = self.processing_class
        return feed_videos(model, self._video_rows, getattr(proc, "image_token_id", None),
                           getattr(proc, "video_token_id", None))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """TRL's loss; a batch with clips feeds their video tensors (``inputs["videos"]``) to its forward."""
        rows = inputs.get("videos") if isinstance(inputs, dict) else None
        video_id = getattr(self.processing_class, "video_token_id", None)
        # Checked only for a dataset with clips: the comparison syncs the device once per micro-step.
        if (rows is None and video_id is not None and "videos" in getattr(self.train_dataset, "column_names", ())
                and bool((inputs["prompt_ids"] == video_id).any())):
            raise RuntimeError("a loss batch holds video tokens without their frames (inputs['videos']): TRL's batch "
                               "layout changed under mmr1.trainer.video")
        self._video_rows = rows
        try:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        finally:
            self._video_rows = None

    def _local_rows(self) -> int:
        """Rows of one rank's generation batch (TRL's dataloader batch)."""
        return int(self.args.per_device_train_batch_size * self.args.steps_per_generation)  # type: ignore[attr-defined]

    def _group_size(self) -> int:
        assert self.num_generations is not None  # TRL sets it from GRPOConfig (default 8)
        return int(self.num_generations)

    def _refill_rows(self, round_: int, k: int) -> list[dict]:
        """This rank's rows of extra batch ``k`` (1-based) of generation round ``round_``: each prompt repeated
        ``num_generations`` times, rank r taking the r-th slice, as TRL's RepeatSampler and accelerate shard."""
        local, world, n = self._local_rows(), self.accelerator.num_processes, self._group_size()
        slot = round_ * (self.dynamic_sampling_max_batches - 1) + (k - 1)
        prompts = refill_indices(len(self.train_dataset), local * world // n, slot,  # type: ignore[arg-type]
                                 seed=int(self.args.seed))
        rows = [i for i in prompts for _ in range(n)]
        rank = self.accelerator.process_index
        return [self.train_dataset[i] for i in rows[rank * local:(rank + 1) * local]]  # type: ignore[index]

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        # TRL 1.16 logs a VLM's prompts with list content ([{"type": "text", ...}]) into a wandb Table, whose
        # type inference rejects that column ("Data row contained incompatible types"): the seed's
        # `--log_completions true --report_to wandb` stopped at the first logged step (found by the rehearsal).
        # Flattened prompts read the same in the table, the rich printout and completions/*.parquet.
        # A tool-using completion is its turns (rollout.tools): flattened alike, each turn with its role, the tool's
        # image as <image>, so the printout and the table show the call, the tool's response and the answer.
        if self.log_completions:
            for logged in (self.logged_prompts(), self.logged_completions()):
                if logged:
                    flat = [flat_messages(p) if isinstance(p, list) else p for p in logged]
                    logged.clear()
                    logged.extend(flat)
        super().log(logs, start_time)

    def generate_turn(self, generate, prompt_ids):
        config = getattr(self, "generation_config", None)  # transformers generate only (TRL's hf path)
        saved = getattr(config, "max_new_tokens", None)
        if self.context_length is not None and config is not None and not self.use_vllm:
            # Generate no further than the roomiest prompt of the batch may keep: the rest would be cut anyway.
            config.max_new_tokens = max(1, min(saved, self.context_length - min(map(len, prompt_ids))))
        try:
            completion_ids, logprobs = generate()
        finally:
            if config is not None:
                config.max_new_tokens = saved
        if self.banned_token_ids:
            completion_ids, logprobs, cuts = cut_at_vision_tokens(completion_ids, logprobs, self.banned_token_ids,
                                                                  self.text_tokenizer.eos_token_id)
            self.log_metric("train" if self.model.training else "eval", "rollout/vision_token_cuts", float(cuts))
        if self.context_length is None:
            return completion_ids, logprobs
        return cap_to_context(prompt_ids, completion_ids, logprobs, self.context_length, self.max_completion_length)
