"""Dynamic sampling (DAPO): drop the groups whose rewards all agree, refill the batch with fresh prompts.

A group of ``num_generations`` completions whose rewards are all equal has zero advantage: it costs a rollout
and a backward pass and teaches nothing. ``trainer.dynamic_sampling=true`` keeps the groups with non-zero
reward variance and draws further generation batches (fresh prompts) until every rank holds a full batch of
them or ``trainer.dynamic_sampling_max_batches`` batches were generated this step. TRL has no such filter
(trl#3708); ms-swift (``dynamic_sample``, swift/trainers/rlhf_trainer/grpo_trainer.py), verl
(``algorithm.filter_groups``) and EasyR1 (``online_filtering``) have one.

A short batch (the limit reached before every rank was full) is filled with filtered groups, their advantages
set to exactly 0, in draw order (the step's own first batch first). The batch then has the shape TRL expects,
so ``steps_per_generation`` slicing, ``num_iterations`` reuse and DDP/DeepSpeed stay in step and no rank ever
trains on an empty slice; the filled rows add no policy gradient (with ``beta > 0`` they add the KL pull, as in
TRL). A short step is therefore what TRL would have trained for the missing part, never worse. Repeating kept
groups instead would count those prompts twice (``num_iterations`` times more); training on fewer rows would
need equal counts on every rank. verl raises when its limit is reached; ms-swift falls back to the whole
unfiltered first batch, dropping the groups it had found.

Refill prompts come from a stream of their own: seeded permutations of the training set, where the refill
batches of generation round ``t`` are fixed slots ``t * (max_batches - 1) + k`` of that stream. They are a pure
function of the seed and of ``t`` (TRL's micro-step // generate_every, restored on resume by mmr1.reliability.resume),
so the Trainer's dataloader is never drawn from here (its resume skip counts stay right) and a resumed run
refills with the prompts the straight run did. A guard rollback changes ``args.seed``, and so this stream too.
Unused slots are simply skipped prompts of a random stream.

Pure functions (tensors in, tensors out); the trainer hook is ``Mmr1GRPOTrainer.generate_and_score``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from mmr1.internals import nanstd, split_pixel_values_by_grid, unsplit_pixel_values_by_grid

# How each tensor TRL 1.16's _generate_and_score_completions returns is padded (tests pin this list to TRL's
# source): prompts on the left, completions on the right, token types over both.
PROMPT_KEYS: dict[str, float | str] = {"prompt_ids": "pad", "prompt_mask": 0}
COMPLETION_KEYS: dict[str, float | str] = {"completion_ids": "pad", "completion_mask": 0, "old_per_token_logps": 0.0,
                   "sampling_per_token_logps": 0.0, "ref_per_token_logps": 0.0, "importance_sampling_ratio": 0.0,
                   "tool_mask": 1}
PROMPT_AND_COMPLETION_KEYS = {"token_type_ids", "mm_token_type_ids"}
RECOMPUTED_KEYS = {"num_items_in_batch"}  # a global count: the trainer recomputes it for the gathered rows


def loss_tokens(batch: dict[str, Any]) -> torch.Tensor:
    """This rank's completion tokens that enter the loss (the completion mask, less tool output where TRL masks it):
    what TRL's ``num_items_in_batch`` counts, gathered over ranks by the trainer. After filtering it must count the
    kept rows (their padding excluded), not the first batch's value that concat_batches carries over."""
    mask = batch["completion_mask"]
    return (mask if batch.get("tool_mask") is None else mask * batch["tool_mask"]).sum()


def zero_variance_groups(rewards_per_func: torch.Tensor, weights: torch.Tensor, num_generations: int) -> torch.Tensor:
    """One bool per group: True when all its completions got the same (weighted, summed) reward.

    TRL's own test: ``isclose(std, 0)`` over the non-NaN rewards (a completion no function scored is NaN).

    >>> r = torch.tensor([[1.0], [1.0], [0.0], [1.0], [0.0], [0.0]])
    >>> zero_variance_groups(r, torch.ones(1), 2).tolist()
    [True, False, True]
    """
    rewards = (rewards_per_func * weights.to(rewards_per_func.device).unsqueeze(0)).nansum(dim=1)
    rewards[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan
    std = nanstd(rewards.view(-1, num_generations), dim=1)
    # A group with fewer than 2 scored completions has a NaN std: no signal either.
    return torch.isclose(std, torch.zeros_like(std)) | torch.isnan(std)


def refill_indices(num_rows: int, num_prompts: int, slot: int, seed: int) -> list[int]:
    """Dataset rows of refill slot ``slot``: positions ``[slot * num_prompts, (slot+1) * num_prompts)`` of an
    endless stream of seeded permutations of ``range(num_rows)`` (one permutation per pass over the data).

    >>> refill_indices(5, 3, 0, seed=1) + refill_indices(5, 3, 1, seed=1)[:2] == torch.randperm(
    ...     5, generator=torch.Generator().manual_seed(permutation_seed(1, 0))).tolist()
    True
    """
    out = []
    for pos in range(slot * num_prompts, (slot + 1) * num_prompts):
        epoch, within = divmod(pos, num_rows)
        out.append(_permutation(num_rows, permutation_seed(seed, epoch))[within])
    return out


def permutation_seed(seed: int, epoch: int) -> int:
    """Distinct from the seed of TRL's RepeatSampler (``args.seed``): the refill order is not the main order."""
    return (seed * 1_000_003 + 7_919 + epoch) % 2**63


_PERMS: dict[tuple[int, int], list[int]] = {}


def _permutation(n: int, seed: int) -> list[int]:
    if (n, seed) not in _PERMS:
        if len(_PERMS) > 8:
            _PERMS.clear()
        _PERMS[(n, seed)] = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return _PERMS[(n, seed)]


def select_rows(batch: dict[str, Any], rows: list[int]) -> dict[str, Any]:
    """Rows of a batch split per row (``split_pixel_values_by_grid``); scalars are kept as they are."""
    out: dict[str, Any] = {}
    index = torch.tensor(rows, dtype=torch.long)
    for key, value in batch.items():
        if value is None or (isinstance(value, torch.Tensor) and value.ndim == 0):
            out[key] = value
        elif isinstance(value, torch.Tensor):
            out[key] = value[index.to(value.device)]
        else:
            out[key] = [value[i] for i in rows]
    return out


def _pad(tensors: list[torch.Tensor], value: float, left: bool) -> torch.Tensor:
    width = max(t.size(1) for t in tensors)
    padded = []
    for t in tensors:
        fill = t.new_full((t.size(0), width - t.size(1), *t.shape[2:]), value)
        padded.append(torch.cat([fill, t] if left else [t, fill], dim=1))
    return torch.cat(padded, dim=0)


def concat_batches(batches: list[dict[str, Any]], pad_token_id: int) -> dict[str, Any]:
    """Row-wise concatenation of batches split per row, each padded as TRL pads it (their widths differ).

    >>> a = {"prompt_ids": torch.tensor([[7, 8]]), "completion_ids": torch.tensor([[1]]), "advantages": torch.ones(1)}
    >>> b = {"prompt_ids": torch.tensor([[9]]), "completion_ids": torch.tensor([[2, 3]]), "advantages": torch.zeros(1)}
    >>> out = concat_batches([a, b], pad_token_id=0)
    >>> out["prompt_ids"].tolist(), out["completion_ids"].tolist(), out["advantages"].tolist()
    ([[7, 8], [0, 9]], [[1, 0], [2, 3]], [1.0, 0.0])
    """
    out: dict[str, Any] = {}
    for key in batches[0]:
        values = [b[key] for b in batches]
        if key in RECOMPUTED_KEYS or values[0] is None:
            out[key] = None if key not in RECOMPUTED_KEYS else values[0]
        elif isinstance(values[0], list):
            out[key] = [item for v in values for item in v]  # per-row pixel values, grids, image counts
        elif key in PROMPT_KEYS or key in COMPLETION_KEYS:
            fill = PROMPT_KEYS.get(key, COMPLETION_KEYS.get(key))
            out[key] = _pad(values, pad_token_id if fill == "pad" else float(fill or 0), left=key in PROMPT_KEYS)
        elif key in PROMPT_AND_COMPLETION_KEYS:
            # [prompt part (left-padded) | completion part (zeros)]: split at each batch's prompt width.
            widths = [b["prompt_ids"].size(1) for b in batches]
            out[key] = torch.cat([_pad([v[:, :w] for v, w in zip(values, widths, strict=True)], 0, left=True),
                                  _pad([v[:, w:] for v, w in zip(values, widths, strict=True)], 0, left=False)], dim=1)
        elif all(v.shape[1:] == values[0].shape[1:] for v in values):
            out[key] = torch.cat(values, dim=0)  # per-row values (advantages, ...)
        else:
            shapes = [tuple(v.shape) for v in values]
            raise NotImplementedError(f"dynamic sampling cannot merge TRL's batch key {key!r} (shapes {shapes}); "
                                      "set trainer.dynamic_sampling=false")
    return out


def sample_batch(generate: Callable[[list], dict[str, Any]], inputs: list, refill: Callable[[int], list],
                 last_rewards: Callable[[], torch.Tensor], *, weights: torch.Tensor, num_generations: int,
                 max_batches: int, rank: int, world: int, any_rank: Callable[[bool], bool],
                 pad_token_id: int) -> tuple[dict[str, Any], dict[str, float]]:
    """Generate, keep the groups with reward variance, refill; return this rank's batch and the step's stats.

    ``generate`` is TRL's generate-and-score step; ``last_rewards()`` the rewards it gathered
    from every rank, so every rank computes the same keep mask and the same decision
    to draw again; ``any_rank`` gathers that decision anyway (all ranks must draw the same number of batches:
    generation and reward gathering are collectives). ``refill(k)`` gives this rank's rows of the k-th extra
    batch. Each rank's generation batch must hold whole groups (checked by the trainer).
    """
    groups = len(inputs) // num_generations
    kept: list[dict[str, Any]] = []
    spare: list[dict[str, Any]] = []
    counts = torch.zeros(world, dtype=torch.long)  # kept groups per rank so far
    generated = kept_total = draws = 0
    while True:
        out = split_pixel_values_by_grid(generate(inputs))
        keep = ~zero_variance_groups(last_rewards(), weights, num_generations).cpu()
        if keep.numel() != world * groups:
            raise RuntimeError(f"dynamic sampling: {keep.numel()} groups gathered, expected {world} x {groups}")
        per_rank = keep.view(world, groups)
        counts += per_rank.sum(dim=1)
        generated += keep.numel()
        kept_total += int(keep.sum())
        for g, k in enumerate(per_rank[rank].tolist()):
            (kept if k else spare).append(select_rows(out, list(range(g * num_generations, (g + 1) * num_generations))))
        draws += 1
        short = bool((counts < groups).any())
        if draws >= max_batches or not any_rank(short):
            break
        inputs = refill(draws)
    fill = spare[:max(0, groups - len(kept))]
    for f in fill:
        f["advantages"] = torch.zeros_like(f["advantages"])
    batch = unsplit_pixel_values_by_grid(concat_batches(kept[:groups] + fill, pad_token_id))
    stats = {
        "dynamic_sampling/kept": kept_total / generated,
        "dynamic_sampling/filtered": 1.0 - kept_total / generated,
        "dynamic_sampling/extra_batches": float(draws - 1),
        # Share of the trained batch filled with zero-advantage groups (0 when every rank was full).
        "dynamic_sampling/filled": float((groups - counts).clamp(min=0).sum()) / (world * groups),
    }
    return batch, stats
