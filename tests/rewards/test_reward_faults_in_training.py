"""A reward that raises and one that sleeps forever, inside a 2-step tiny GRPO run: the run completes
and `metrics.jsonl` carries their counts (`rewards/<name>/errors|timeouts`). Rewards that hang on
every item, on some, or inside C code with signals blocked, with full worker pipes: the run still
completes within its batch timeouts; SIGTERM during such a call checkpoints and exits 143."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
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
        # The sleeper is killed after 5 s per item, and a whole call never waits more than 10 s: budgets that a
        # loaded machine cannot make the real math-verify reward (milliseconds per item) run out of.
        "reward.timeout_s=5",
        "reward.batch_timeout_s=10",
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
    # The run finished despite both faulty rewards, and its record counts their failures in both logged steps.
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["status"] == "finished" and info["steps"] == 2
    counted = info["summary"]["reward_failures"]
    assert counted["errors"] > 0 and counted["timeouts"] > 0 and counted["steps"] == 2


# --- a reward that hangs cannot hang training. Images of 168 px make each item's
# pickled inputs ~86 KB, so the items queued behind a hung one fill its worker's 64 KiB pipe: the
# old sandbox then blocked forever in its send (step 1 never finished). Runs go through the CLI
# with a timeout, so a regression fails instead of hanging CI.

HANG = [
    "trainer.max_steps=2",
    "trainer.logging_steps=1",
    "dataset.image_size=168",
    f"reward.plugins=[{PLUGIN}]",
    "reward.timeout_s=2",
    "reward.batch_timeout_s=6",
    "reward.all_zero_patience=0",
]


def _hang_overrides(names: str, run_dir: Path) -> list[str]:
    from testkit import TINY

    # audit.at_start=false: the start-of-run reward audit would call the hanging reward before step 1, and these
    # tests time (and signal) the calls inside training; the audit's own sandboxing is tested in test_reward_audit.
    return [*TINY, *HANG, f"reward.funcs=[format,{names}]", "audit.at_start=false", f"hydra.run.dir={run_dir}"]


HANGERS = ("fault_sleeps", "fault_hangs_on_some", "fault_hangs_in_c")


@pytest.mark.slow
def test_rewards_that_hang_cannot_hang_training(tmp_path):
    """The three ways to hang (sleeping, hanging on some items, stuck in C), in one run of 2 steps: each is cut at its
    budget, counted, and the run goes on."""
    from mmr1.tracking.metrics import read_metrics
    from testkit import run_cli

    run_dir = tmp_path / "run"
    t0 = time.monotonic()
    run_cli(_hang_overrides(",".join(HANGERS), run_dir), env={"OMP_NUM_THREADS": "1"}, timeout=400)
    elapsed = time.monotonic() - t0

    rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if "rewards/format/mean" in r]
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        for name in HANGERS:
            assert row[f"rewards/{name}/timeouts"] > 0 and row[f"rewards/{name}/errors"] == 0
            if name == "fault_hangs_on_some":
                assert row[f"rewards/{name}/mean"] > 0  # the items that did not hang were scored
            else:
                assert row[f"rewards/{name}/mean"] == 0  # failure_reward for every item
    failures = [json.loads(line) for line in (run_dir / "reward_failures.jsonl").read_text().splitlines()]
    assert failures and {f["kind"] for f in failures} == {"timeout"} and {f["reward"] for f in failures} <= set(HANGERS)
    # Six calls (3 rewards x 2 steps) of at most batch_timeout_s (6 s) each, plus start-up; generous for a loaded CI
    # box; a call that waited for its hung item would never end (the CLI's 400 s timeout).
    assert elapsed < 240, f"{elapsed:.0f} s"


@pytest.mark.slow
@pytest.mark.parametrize("to", ["trainer", "process group"])
def test_sigterm_during_a_hung_reward_call_checkpoints_and_exits_143(tmp_path, to):
    from mmr1.reliability.checkpoints import MARKER
    from testkit import REPO, run_env

    run_dir, sentinel = tmp_path / "run", tmp_path / "hanging"
    env = run_env({"MMR1_TEST_HANG_SENTINEL": str(sentinel)})
    # A scheduler (or `timeout`) signals the whole process group: the reward workers get it too.
    proc = subprocess.Popen(
        [sys.executable, "-m", "mmr1.train", *_hang_overrides("fault_sleeps", run_dir)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not sentinel.exists():  # a worker is now stuck inside the reward, in step 1
            assert proc.poll() is None, proc.communicate()[1][-6000:]
            assert time.monotonic() < deadline, "the reward was never called"
            time.sleep(0.1)
        signalled = time.monotonic()
        if to == "trainer":
            proc.send_signal(signal.SIGTERM)
        else:
            os.killpg(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 143, err[-6000:]
    assert "Interrupted at step 1" in out, out[-3000:]
    assert (run_dir / "checkpoint-1" / MARKER).exists()
    assert json.loads((run_dir / "run_info.json").read_text())["status"] == "interrupted"
    # The step in flight ended when its reward call's batch budget (6 s) ran out, then saved.
    assert time.monotonic() - signalled < 120
