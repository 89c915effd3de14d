"""Dynamic sampling (mmr1.trainer.dynamic_sampling): the filter, the refill stream, the merge, the pins to TRL."""

from __future__ import annotations

import ast
import inspect
import re
import textwrap

import pytest
import torch
from trl import GRPOTrainer

from mmr1.trainer.dynamic_sampling import (
    COMPLETION_KEYS,
    PROMPT_AND_COMPLETION_KEYS,
    PROMPT_KEYS,
    RECOMPUTED_KEYS,
    concat_batches,
    loss_tokens,
    refill_indices,
    sample_batch,
    zero_variance_groups,
)

G = 2  # completions per group in these tests


def test_zero_variance_groups_weighted_and_with_unscored_completions():
    nan = float("nan")
    # Two functions: group 0 agrees on the weighted sum (1+0 vs 0+1 with equal weights), group 1 does not,
    # group 2 has one completion no function scored (one scored completion: no variance to learn from).
    r = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 0.0], [nan, nan], [1.0, 1.0]])
    assert zero_variance_groups(r, torch.tensor([1.0, 1.0]), G).tolist() == [True, False, True]
    # Other weights: group 0's two completions now differ.
    assert zero_variance_groups(r, torch.tensor([1.0, 2.0]), G).tolist() == [False, False, True]


def test_refill_stream_is_a_pure_function_of_seed_and_slot_and_covers_the_data():
    first = [refill_indices(10, 4, s, seed=3) for s in range(5)]
    assert first == [refill_indices(10, 4, s, seed=3) for s in range(5)]  # what a resumed run computes
    flat = [i for slot in first for i in slot]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))  # each pass: every row
    assert flat[:10] != flat[10:20]  # a new permutation per pass
    assert refill_indices(10, 4, 0, seed=4) != first[0]  # a guard rollback reseeds: another stream


def _batch(rows: int, prompt_w: int, completion_w: int, tag: float) -> dict:
    """A TRL-shaped local batch (Qwen layout: one image per row, 4 patches each) whose every value says ``tag``."""
    return {
        "prompt_ids": torch.full((rows, prompt_w), int(tag)),
        "prompt_mask": torch.ones(rows, prompt_w, dtype=torch.long),
        "completion_ids": torch.full((rows, completion_w), int(tag)),
        "completion_mask": torch.ones(rows, completion_w, dtype=torch.long),
        "old_per_token_logps": torch.full((rows, completion_w), -tag),
        "mm_token_type_ids": torch.cat([torch.ones(rows, prompt_w), torch.zeros(rows, completion_w)], 1).long(),
        "advantages": torch.full((rows,), tag), "num_items_in_batch": torch.tensor(99.0),
        "pixel_values": torch.full((rows * 4, 3), tag), "image_grid_thw": torch.tensor([[1, 2, 2]] * rows),
        "num_images": [1] * rows,
    }


class FakeRun:
    """TRL's generate + gathered rewards for ``world`` ranks, scripted: batch k's groups vary or not per ``plan[k]``."""

    def __init__(self, plan: list[list[bool]], world: int, rank: int, groups: int):
        self.plan, self.world, self.rank, self.groups = plan, world, rank, groups
        self.calls = 0
        self.refills: list[int] = []

    def generate(self, inputs):
        k = self.calls
        self.calls += 1
        varies = self.plan[k]  # global groups, rank-major
        self.rewards = torch.tensor([[float(i % 2) if v else 1.0] for v in varies for i in range(G)])
        return _batch(self.groups * G, prompt_w=3 + k, completion_w=5 - k, tag=10 * (k + 1) + self.rank)

    def refill(self, k):
        self.refills.append(k)
        return [{}] * (self.groups * G)

    def run(self, max_batches: int):
        return sample_batch(self.generate, [{}] * (self.groups * G), self.refill, lambda: self.rewards,
                            weights=torch.ones(1), num_generations=G, max_batches=max_batches, rank=self.rank,
                            world=self.world, any_rank=lambda flag: flag, pad_token_id=0)


def test_kept_groups_are_gathered_across_batches_and_merged_with_their_padding():
    run = FakeRun([[True, False], [False, True]], world=1, rank=0, groups=2)
    batch, stats = run.run(max_batches=3)
    assert run.refills == [1]  # full after the second batch: no third
    assert stats == {"dynamic_sampling/kept": 0.5, "dynamic_sampling/filtered": 0.5,
                     "dynamic_sampling/extra_batches": 1.0, "dynamic_sampling/filled": 0.0}
    # Group 0 of batch 1 (tag 10: prompt width 3, completion 5), group 1 of batch 2 (tag 20: 4 and 4).
    assert batch["advantages"].tolist() == [10, 10, 20, 20]
    assert batch["prompt_ids"].tolist() == [[0, 10, 10, 10]] * 2 + [[20] * 4] * 2  # left-padded
    assert batch["completion_ids"].tolist() == [[10] * 5] * 2 + [[20] * 4 + [0]] * 2  # right-padded
    assert batch["completion_mask"][2:, -1].tolist() == [0, 0]
    assert batch["mm_token_type_ids"].tolist() == [[0, 1, 1, 1, 0, 0, 0, 0, 0]] * 2 + [[1] * 4 + [0] * 5] * 2
    assert batch["pixel_values"].shape == (16, 3) and batch["pixel_values"][:8].eq(10).all()
    assert batch["pixel_values"][8:].eq(20).all() and batch["image_grid_thw"].shape == (4, 3)
    assert batch["num_images"] == [1] * 4
    # TRL's loss normaliser for the kept rows: 2 x 5 + 2 x 4 completion tokens (the padding excluded), not the
    # first batch's carried-over count (99) nor every position of the merged batch (4 x 5).
    assert loss_tokens(batch).item() == 18 and batch["num_items_in_batch"].item() == 99
    batch["tool_mask"] = torch.ones_like(batch["completion_mask"])
    batch["tool_mask"][0, :2] = 0  # two tokens of tool output in row 0: not the model's, not in the loss
    assert loss_tokens(batch).item() == 16


def test_a_short_batch_is_filled_with_zero_advantage_groups_of_the_first_batch():
    run = FakeRun([[False, False], [False, True]], world=1, rank=0, groups=2)
    batch, stats = run.run(max_batches=2)
    assert run.refills == [1] and stats["dynamic_sampling/filled"] == 0.5
    assert stats["dynamic_sampling/kept"] == 0.25 and stats["dynamic_sampling/extra_batches"] == 1.0
    # The kept group (batch 2), then the first batch's first filtered group with its advantages zeroed.
    assert batch["advantages"].tolist() == [20, 20, 0, 0]
    assert batch["old_per_token_logps"][2:, :4].eq(-10).all()
    # max_batches=1: TRL's batch as it was, but the zero-variance groups carry exactly zero advantage.
    batch, stats = FakeRun([[True, False]], world=1, rank=0, groups=2).run(max_batches=1)
    assert batch["advantages"].tolist() == [10, 10, 0, 0] and stats["dynamic_sampling/extra_batches"] == 0


def test_ranks_draw_the_same_number_of_batches_when_only_one_is_short():
    # Rank 0's groups all vary in the first batch; rank 1's do not: both ranks must draw again (collectives).
    plan = [[True, True, False, False], [False, False, True, True]]
    runs = [FakeRun(plan, world=2, rank=r, groups=2) for r in (0, 1)]
    results = [r.run(max_batches=3) for r in runs]
    assert [r.refills for r in runs] == [[1], [1]]
    assert results[0][1] == results[1][1]  # the logged stats agree too
    assert results[0][0]["advantages"].tolist() == [10, 10, 10, 10]  # rank 0 keeps its first batch
    assert results[1][0]["advantages"].tolist() == [21, 21, 21, 21]  # rank 1 its refill


def test_an_unknown_batch_key_fails_naming_it():
    a, b = _batch(2, 3, 4, 1.0), _batch(2, 3, 5, 2.0)
    a["new_trl_key"], b["new_trl_key"] = torch.zeros(2, 4), torch.zeros(2, 5)
    with pytest.raises(NotImplementedError, match="new_trl_key"):
        concat_batches([a, b], pad_token_id=0)


# --- pins to the installed TRL: a TRL that changes what the hook relies on must fail here ---------------------

def _source(name: str) -> str:
    return textwrap.dedent(inspect.getsource(getattr(GRPOTrainer, name)))


def test_trl_generates_once_per_round_and_splits_what_the_hook_returns():
    src = _source("_prepare_inputs")
    assert "generate_every = self.args.steps_per_generation * self.num_iterations" in src
    assert "if self._step % generate_every == 0 or self._buffered_inputs is None:" in src
    call = src.index("self._generate_and_score_completions(generation_batch)")
    assert call < src.index("split_pixel_values_by_grid(generation_batch)")


def test_trl_gathers_the_rewards_and_slices_advantages_by_rank():
    assert re.search(r"rewards_per_func = gather\(rewards_per_func\)\s+return rewards_per_func\s*$",
                     _source("_calculate_rewards"))
    src = _source("_generate_and_score_completions")
    assert "self._calculate_rewards(inputs, prompts, completions, completion_ids_list)" in src
    # Local rows are the rank-th slice of the gathered groups: the hook's keep mask is laid out the same way.
    assert "self.accelerator.process_index * len(prompts)" in src
    assert "torch.isclose(std_rewards, torch.zeros_like(std_rewards))" in src  # TRL's zero-std test, ours too


def test_every_key_trl_returns_is_one_the_merge_knows():
    tree = ast.parse(_source("_generate_and_score_completions"))
    keys = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "output" \
                and isinstance(node.slice, ast.Constant):
            keys.add(node.slice.value)
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "output" for t in node.targets) \
                and isinstance(node.value, ast.Dict):
            keys |= {k.value for k in node.value.keys if isinstance(k, ast.Constant)}
    assert {"prompt_ids", "completion_ids", "advantages", "pixel_values"} <= keys  # the parse found them
    per_row = {"advantages", "num_images", "num_tiles", "pixel_values", "image_grid_thw", "image_position_ids",
               "image_sizes", "pixel_attention_mask", "spatial_shapes"}  # lists after the split, or one row each
    known = set(PROMPT_KEYS) | set(COMPLETION_KEYS) | PROMPT_AND_COMPLETION_KEYS | RECOMPUTED_KEYS | per_row
    assert keys <= known, keys - known
