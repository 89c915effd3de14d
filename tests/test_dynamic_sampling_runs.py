"""Dynamic sampling in real tiny runs: its metrics, an exact resume after extra draws, and two ranks in step."""

from __future__ import annotations

import json
import shutil
import textwrap

import pytest
from safetensors.torch import load_file

from mmr1.tracking.metrics import read_metrics
from testkit import TINY, free_port, run_cli

pytestmark = pytest.mark.slow

KEYS = ("dynamic_sampling/kept", "dynamic_sampling/filtered", "dynamic_sampling/extra_batches",
        "dynamic_sampling/filled")
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}

# A deterministic reward with both kinds of group: at even global steps (steps 1, 3, ...) a completion scores a
# hash of its text (groups vary), except for prompts whose answer is 2 (constant: filtered); at odd global
# steps every group is constant, so steps 2, 4, ... draw every extra batch they may and train a filled batch.
PLUGIN = textwrap.dedent('''
    import hashlib
    from mmr1.rewards import register

    @register("ds_mixed", isolate=False, pure=True)
    def ds_mixed(completions, solution, **kwargs):
        step = int(getattr(kwargs.get("trainer_state"), "global_step", 0) or 0)
        out = []
        for c, s in zip(completions, solution):
            text = c if isinstance(c, str) else c[0]["content"]
            varies = step % 2 == 0 and " 2 " not in s
            out.append(int(hashlib.sha1(text.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF if varies else 0.5)
        return out
''')


def _recipe(tmp_path, *extra: str) -> list[str]:
    plugin = tmp_path / "ds_plugin.py"
    plugin.write_text(PLUGIN)
    base = [o for o in TINY if not o.startswith(("trainer.save_steps=", "dataset.num_samples="))]
    return [*base, "dataset.num_samples=8", "trainer.mask_truncated_completions=false", "reward.funcs=[ds_mixed]",
            f"reward.plugins=[{plugin}]", "trainer.dynamic_sampling=true", "trainer.save_steps=1000", *extra]


def _cli(overrides: list[str], run_dir, env: dict | None = None):
    return run_cli([*overrides, f"hydra.run.dir={run_dir}"], env={**ENV, **(env or {})}, timeout=400)


def _train_rows(run_dir) -> dict[int, dict]:
    return {r["step"]: r for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r}


def test_three_step_run_logs_kept_filtered_and_extra_batches(tmp_path):
    run = tmp_path / "run"
    _cli(_recipe(tmp_path, "trainer.max_steps=3", "trainer.dynamic_sampling_max_batches=3"), run)
    rows = _train_rows(run)
    assert sorted(rows) == [1, 2, 3]
    for step, row in rows.items():
        assert all(k in row for k in KEYS), (step, row.keys())
        assert row["dynamic_sampling/kept"] + row["dynamic_sampling/filtered"] == pytest.approx(1.0)
        # A batch is filled with zero-advantage groups only when the limit was reached first.
        if row["dynamic_sampling/filled"] > 0:
            assert row["dynamic_sampling/extra_batches"] == 2
    assert rows[2]["dynamic_sampling/kept"] == 0 and rows[2]["dynamic_sampling/filled"] == 1  # all constant
    assert rows[1]["dynamic_sampling/kept"] > 0  # varied groups exist at step 1 (all 6 prompts answering 2: ~0.1%)


def test_num_iterations_two_reuses_the_filtered_batch(tmp_path):
    # Step 1 generates (and filters), step 2 trains again on step 1's buffered batch: TRL logs no new rollout.
    run = tmp_path / "run"
    _cli(_recipe(tmp_path, "trainer.max_steps=2", "trainer.num_iterations=2"), run)
    rows = _train_rows(run)
    assert sorted(rows) == [1, 2] and all(k in rows[1] for k in KEYS)
    assert not any(k in rows[2] for k in KEYS) and "reward" not in rows[2]


def test_resume_after_extra_draws_matches_the_straight_run(tmp_path):
    """Extra batches never touch Trainer's dataloader (its resume skip stays right) and the refill prompts are a
    function of the generation round: steps 3-4 after resuming from checkpoint-2 are the straight run's, bit for bit."""
    recipe = _recipe(tmp_path, "trainer.max_steps=4", "trainer.save_steps=2", "trainer.save_total_limit=2")
    straight, run = tmp_path / "straight", tmp_path / "run"
    _cli(recipe, straight)
    reference = _train_rows(straight)
    assert reference[2]["dynamic_sampling/extra_batches"] == 2 and reference[4]["dynamic_sampling/extra_batches"] == 2
    shutil.copytree(straight, run)
    shutil.rmtree(run / "final")
    _cli([*recipe, f"resume={run / 'checkpoint-2'}"], run)
    resumed = _train_rows(run)
    assert sorted(resumed) == [1, 2, 3, 4]
    for step in (3, 4):
        same = {k: v for k, v in resumed[step].items() if "time" not in k and "per_second" not in k}
        assert same == {k: v for k, v in reference[step].items() if "time" not in k and "per_second" not in k}
    a, b = load_file(str(run / "final" / "model.safetensors")), load_file(str(straight / "final" / "model.safetensors"))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)



def test_two_ranks_draw_in_step(tmp_path):
    # 2 ranks x 8 rows = 2 groups each; a rank short of varied groups makes both draw (else a collective hangs).
    run = tmp_path / "run"
    _cli(_recipe(tmp_path, "trainer.max_steps=2"), run,
         env={"NPROC_PER_NODE": "2", "MASTER_PORT": str(free_port()), "CUDA_VISIBLE_DEVICES": ""})
    info = json.loads((run / "run_info.json").read_text())
    assert info["world_size"] == 2 and info["steps"] == 2
    rows = _train_rows(run)
    assert sorted(rows) == [1, 2] and all(k in rows[1] for k in KEYS)
    assert rows[2]["dynamic_sampling/extra_batches"] == 2 and rows[2]["dynamic_sampling/filled"] == 1
