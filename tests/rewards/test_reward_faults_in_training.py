"""A reward that raises and one that sleeps forever, inside a 2-step tiny GRPO run: the run completes
and `metrics.jsonl` carries their counts (`rewards/<name>/errors|timeouts`)."""

import importlib.util
import json
from pathlib import Path

import pytest

PLUGIN = Path(__file__).with_name("fault_plugin.py")
SPINE_CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"


def _spine():
    # The spine's tests/conftest.py (TINY overrides, compose_cfg), loaded by path: a plain
    # `import conftest` may find tests/data/conftest.py instead.
    spec = importlib.util.spec_from_file_location("mmr1_spine_conftest", SPINE_CONFTEST)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_faulty_rewards_are_counted_and_the_run_completes(tmp_path):
    from mmr1.tracking.metrics import read_metrics
    from mmr1.train import train

    spine = _spine()
    run_dir = tmp_path / "run"
    overrides = [
        *spine.TINY,
        "trainer.max_steps=2",
        "trainer.logging_steps=1",
        f"reward.plugins=[{PLUGIN}]",
        "reward.funcs=[external_r1v_acc,format,fault_raises,fault_sleeps]",
        "reward.timeout_s=0.5",  # the sleeper is killed after 0.5 s per item...
        "reward.batch_timeout_s=2.0",  # ...and a whole call never waits more than 2 s
        "reward.all_zero_patience=0",  # the faulty rewards are all zeros by design
    ]
    train(spine.compose_cfg(overrides, run_dir=run_dir))

    rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if "rewards/fault_raises/errors" in r]
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        assert row["rewards/fault_raises/errors"] > 0 and row["rewards/fault_raises/timeouts"] == 0
        assert row["rewards/fault_sleeps/timeouts"] > 0
        assert row["rewards/external_r1v_acc/errors"] == 0 and row["rewards/external_r1v_acc/timeouts"] == 0
        assert row["rewards/fault_raises/mean"] == 0 and row["rewards/fault_sleeps/mean"] == 0
        assert "rewards/format/mean" in row
    failures = [json.loads(line) for line in (run_dir / "reward_failures.jsonl").read_text().splitlines()]
    assert {f["reward"] for f in failures} <= {"fault_raises", "fault_sleeps"} and failures
    assert (run_dir / "run_info.json").exists()
