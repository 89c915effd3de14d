"""The sandbox: raising and hanging rewards are counted and the run goes on; results equal the seed's."""

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from test_reward_accuracy import generated_cases, seed

from mmr1.rewards import (
    RewardConfig,
    RewardWatchdogError,
    SandboxError,
    WatchedReward,
    WorkerPool,
    build_reward_funcs,
)
from mmr1.rewards.registry import spec
from mmr1.rewards.watchdog import FailureLog

PLUGIN = Path(__file__).with_name("fault_plugin.py")
FUNCS = [
    "external_r1v_acc",
    "format",
    "fault_raises",
    "fault_sleeps",
    "plugin_len",
    "plugin_slow_on_marker",
    "plugin_step",
]

# One xdist worker: one sandbox pool (module fixture).
pytestmark = pytest.mark.xdist_group("reward_sandbox")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("run")


@pytest.fixture(scope="module")
def funcs(run_dir):
    # One pool for the module: workers take ~1-2 s to start (sympy, math-verify).
    cfg = {
        "funcs": FUNCS,
        "plugins": [str(PLUGIN)],
        "timeout_s": 1.0,
        "batch_timeout_s": 20.0,
        "num_workers": 2,
        "max_failures_logged": 3,
        "all_zero_patience": 0,
    }
    built = build_reward_funcs(cfg, run_dir)
    yield dict(zip(FUNCS, built))
    built[0].close()


class Metrics:
    def __init__(self):
        self.logged = {}

    def __call__(self, name, value):
        self.logged.setdefault(name, []).append(value)


def trl_kwargs(completions, solutions, metrics):
    # What TRL's _calculate_rewards passes, helpers included.
    return {
        "prompts": ["How many?"] * len(completions),
        "completions": completions,
        "completion_ids": [[1, 2]] * len(completions),
        "trainer_state": None,
        "log_extra": lambda *a: None,
        "log_metric": metrics,
        "solution": solutions,
        "image": [None] * len(completions),
    }


def test_names_are_the_configured_names(funcs):
    assert [f.__name__ for f in funcs.values()] == FUNCS


def test_accuracy_through_the_sandbox_equals_the_seed(funcs):
    cases = generated_cases(120, seed_value=2)
    completions, solutions = [c for c, _ in cases], [s for _, s in cases]
    metrics = Metrics()
    # The module's pool, with budgets no loaded machine reaches (the module's 1 s is for the sleeper; with
    # it, 1 of these 120 items timed out on 2 loaded cores): this test requires zero timeouts.
    acc = funcs["external_r1v_acc"]
    cfg = RewardConfig(funcs=["external_r1v_acc"], timeout_s=60.0, batch_timeout_s=300.0, all_zero_patience=0)
    acc = WatchedReward("external_r1v_acc", acc.spec, cfg, acc.pool, FailureLog(None, 0))
    out = acc(**trl_kwargs(completions, solutions, metrics))
    assert out == seed(completions, solutions)
    assert metrics.logged == {
        "rewards/external_r1v_acc/timeouts": [0.0],
        "rewards/external_r1v_acc/errors": [0.0],
    }
    conversational = [[{"role": "assistant", "content": c}] for c in completions]
    assert acc(completions=conversational, solution=solutions) == out


def test_a_raising_reward_is_counted_and_the_run_continues(funcs, run_dir):
    metrics = Metrics()
    out = funcs["fault_raises"](**trl_kwargs(["a", "b", "c"], ["1", "2", "3"], metrics))
    assert out == [0.0, 0.0, 0.0]
    assert metrics.logged["rewards/fault_raises/errors"] == [3.0]
    assert metrics.logged["rewards/fault_raises/timeouts"] == [0.0]
    records = [json.loads(line) for line in (run_dir / "reward_failures.jsonl").read_text().splitlines()]
    assert records and records[0]["reward"] == "fault_raises" and "broken on purpose" in records[0]["error"]
    assert len(records) <= 3  # max_failures_logged


def test_a_reward_that_sleeps_forever_is_killed_and_replaced(funcs, tmp_path):
    sleeps = funcs["fault_sleeps"]
    pool = sleeps.pool
    before, restarts = set(pool.pids()), pool.restarts
    metrics = Metrics()
    # The module's settings (item budget 1 s, batch budget 20 s), with a failure log of its own to read back.
    guarded = WatchedReward("fault_sleeps", sleeps.spec, sleeps.cfg, pool, FailureLog(tmp_path / "f.jsonl", 10))
    t0 = time.monotonic()
    out = guarded(**trl_kwargs(["a", "b"], ["1", "2"], metrics))
    elapsed = time.monotonic() - t0
    assert out == [0.0, 0.0]
    assert metrics.logged["rewards/fault_sleeps/timeouts"] == [2.0]
    # Which deadline fired: each item's own (reward.timeout_s), not the batch's; no deadline fires early.
    errors = [json.loads(line)["error"] for line in (tmp_path / "f.jsonl").read_text().splitlines()]
    assert errors == ["no result within reward.timeout_s=1.0"] * 2
    assert elapsed >= 1.0
    assert pool.restarts == restarts + 2
    assert not before & set(pool.pids())  # the hung workers are gone...
    for pid in before:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    # ...and their replacements score the next call
    assert funcs["plugin_len"](completions=["x" * 100]) == [1.0]


def test_one_hanging_item_does_not_take_its_batch_with_it(funcs):
    completions = ["ok 1", "HANG", "ok 2", "ok 3"]
    out = funcs["plugin_slow_on_marker"](completions=completions)
    assert out == [1.0, 0.0, 1.0, 1.0]
    assert funcs["plugin_slow_on_marker"].stats["timeouts"] == 1


def test_plugins_get_the_trainer_state_and_images_travel(funcs):
    from PIL import Image

    class State:  # like TrainerState, and like it not importable in a worker: only plain fields travel
        global_step, epoch, log_history = 7, 0.5, [{"loss": 1.0}] * 1000

    state = State()
    image = Image.new("RGB", (28, 28))
    out = funcs["plugin_step"](
        completions=["a", "b"],
        trainer_state=state,
        image=[image, image],
        prompts=[[{"role": "user", "content": [{"type": "image", "image": image}]}]] * 2,
    )
    assert out == [7.0, 7.0]


def test_it_works_outside_the_main_thread(funcs):
    cases = generated_cases(30, seed_value=3)
    completions, solutions = [c for c, _ in cases], [s for _, s in cases]
    out = {}
    thread = threading.Thread(
        target=lambda: out.update(r=funcs["external_r1v_acc"](completions, solution=solutions))
    )
    thread.start()
    thread.join()
    assert out["r"] == seed(completions, solutions)  # the seed's main-thread result, math-verify included


def test_duplicates_and_string_matches_never_reach_a_worker(funcs):
    f = funcs["external_r1v_acc"]
    before = f.stats["scored_in_workers"]
    completions = ["<answer> 3 </answer>"] * 4 + ["I think 3"] * 4
    solutions = ["<answer> 3 </answer>"] * 8
    assert f(completions, solution=solutions) == seed(completions, solutions) == [1.0] * 8
    assert f.stats["scored_in_workers"] - before == 1


def test_a_missing_dataset_column_fails_loudly(funcs):
    with pytest.raises(KeyError, match="solution"):
        funcs["external_r1v_acc"](completions=["3"])


def test_batch_budget(funcs, tmp_path):
    # The module's pool, with a generous per-item budget: only the batch budget can end this call.
    sleeps = funcs["fault_sleeps"]
    cfg = RewardConfig(funcs=["fault_sleeps"], timeout_s=60.0, batch_timeout_s=2.5, all_zero_patience=0)
    guarded = WatchedReward("fault_sleeps", sleeps.spec, cfg, sleeps.pool, FailureLog(tmp_path / "f.jsonl", 10))
    assert sleeps.pool.wait_ready()
    t0 = time.monotonic()
    assert guarded(completions=["a", "b", "c", "d"]) == [0.0] * 4
    elapsed = time.monotonic() - t0
    assert guarded.stats["timeouts"] == 4
    # Which deadline fired: the batch's, for all four (two were running, two never started).
    errors = [json.loads(line)["error"] for line in (tmp_path / "f.jsonl").read_text().splitlines()]
    assert errors == ["reward.batch_timeout_s=2.5 ran out before this item was scored"] * 4
    assert 2.5 <= elapsed < 60.0  # the item budget (60 s) would be the next deadline: 24x the batch budget


def test_close_leaves_no_process_behind():
    funcs = build_reward_funcs({"funcs": ["external_r1v_acc"], "num_workers": 1})
    pids = funcs[0].pool.pids()
    funcs[0].close()
    assert funcs[0].pool.pids() == []
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    with pytest.raises(SandboxError, match="closed"):
        funcs[0](["I think 3"], solution=["<answer> 4 </answer>"])


def test_watchdog_warns_then_stops(caplog):
    warn = build_reward_funcs({"funcs": ["format"], "all_zero_patience": 2})[0]
    for _ in range(2):
        warn(completions=["no tags"])
    assert "only zeros or failures for 2 consecutive calls" in caplog.text
    stop = build_reward_funcs({"funcs": ["format"], "all_zero_patience": 2, "on_all_zero": "stop"})[0]
    stop(completions=["no tags"])
    stop(completions=["<think>a</think><answer>b</answer>"])  # a non-zero call resets the streak
    stop(completions=["no tags"])
    with pytest.raises(RewardWatchdogError, match="format"):
        stop(completions=["no tags"])


# --- no reward can hang a call. A reward stuck on an item stops reading its pipe; the
# items queued behind it (1 MB each here, as an image column can be) fill the 64 KiB pipe, and a
# blocking send would never return. Each call runs in a thread so that old code fails, not hangs.

BIG = "x" * 2**20


def _pool(**kw):
    pool = WorkerPool(2, [str(PLUGIN)], **kw)
    assert pool.wait_ready()
    return pool


def _guarded(name, pool, timeout_s, batch_timeout_s):
    cfg = RewardConfig(funcs=[name], timeout_s=timeout_s, batch_timeout_s=batch_timeout_s, all_zero_patience=0)
    return WatchedReward(name, spec(name, [PLUGIN]), cfg, pool, FailureLog(None, 0))


def _call_bounded(fn, limit_s, **kwargs):
    """fn(**kwargs) in a thread; fail (rather than hang the suite) if it is not back within limit_s."""
    out = {}

    def target():
        try:
            out["value"] = fn(**kwargs)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            out["error"] = exc

    t0 = time.monotonic()
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(limit_s)
    assert not thread.is_alive(), f"the reward call did not return within {limit_s} s"
    if "error" in out:
        raise out["error"]
    return out["value"], time.monotonic() - t0


def _gone(pids):
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


# The full-pipe tests each wait out real budgets (6-10 s apiece): behind `slow`, out of the inner loop.
@pytest.mark.slow
@pytest.mark.parametrize("name", ["fault_sleeps", "fault_hangs_in_c"])
def test_a_hung_reward_with_a_full_pipe_cannot_block_the_call(name):
    pool = _pool()
    try:
        before = pool.pids()
        guarded = _guarded(name, pool, timeout_s=1.0, batch_timeout_s=4.0)
        n = 40
        out, elapsed = _call_bounded(guarded, 4.0 + 60, completions=["a"] * n, blob=[BIG] * n)
        assert out == [0.0] * n
        assert guarded.stats["timeouts"] == n and guarded.stats["errors"] == 0
        assert elapsed < 4.0 + 30  # the batch budget, plus kills and start-ups on a loaded machine
        assert pool.restarts >= 2  # each hung worker killed at its item deadline, not only at the batch's
        _gone(before)  # SIGKILL: blocked signals and C code cannot refuse it
    finally:
        pool.close()


@pytest.mark.slow
def test_hanging_items_among_good_ones_with_a_full_pipe():
    pool = _pool()
    try:
        guarded = _guarded("plugin_slow_on_marker", pool, timeout_s=1.0, batch_timeout_s=60.0)
        completions = [f"ok {i}" for i in range(16)]
        completions[3] = completions[10] = "HANG"
        completions[10] += " again"  # not a duplicate: scored (and killed) separately
        out, _ = _call_bounded(guarded, 60 + 60, completions=completions, blob=[BIG] * 16)
        assert out == [0.0 if "HANG" in c else 1.0 for c in completions]
        assert guarded.stats["timeouts"] == 2 and guarded.stats["errors"] == 0
        # The replacements score the next call.
        assert _call_bounded(guarded, 60, completions=["fine"], blob=[BIG])[0] == [1.0]
    finally:
        pool.close()


class _Stop(Exception):
    """What a second Ctrl-C/SIGTERM raises in the trainer (KeyboardInterrupt), without ending pytest."""


@pytest.mark.slow
def test_an_interrupt_during_a_hung_call_leaves_no_stale_work_behind():
    pool = _pool()

    def stop(signum, frame):
        raise _Stop

    old = signal.signal(signal.SIGINT, stop)
    try:
        before = pool.pids()
        hung = _guarded("fault_sleeps", pool, timeout_s=30.0, batch_timeout_s=30.0)
        main = threading.get_ident()
        threading.Timer(1.0, signal.pthread_kill, (main, signal.SIGINT)).start()
        t0 = time.monotonic()
        with pytest.raises(_Stop):
            hung(completions=["a"] * 20, blob=[BIG] * 20)  # in this thread: signals reach the main thread
        assert time.monotonic() - t0 < 20  # the handler ran at once, not after a budget ran out
        _gone(before)  # the workers holding the interrupted call's items were killed
        good = _guarded("plugin_len", pool, timeout_s=10.0, batch_timeout_s=60.0)
        out, _ = _call_bounded(good, 60, completions=["x" * 100, "x" * 200], blob=[BIG] * 2)
        assert out == [1.0, 2.0] and good.stats["timeouts"] == good.stats["errors"] == 0
    finally:
        signal.signal(signal.SIGINT, old)
        pool.close()


@pytest.mark.slow
def test_workers_killed_from_outside_mid_call_still_give_every_item_an_outcome():
    # What a scheduler's SIGTERM to the whole process group did to the old code: its workers died
    # while the trainer was blocked sending to one of them, their items vanished, and the guard
    # crashed on a None outcome (AttributeError) instead of the run checkpointing.
    pool = _pool()
    try:
        before = pool.pids()
        for pid in before:  # workers ignore SIGTERM: the trainer decides when they go
            os.kill(pid, signal.SIGTERM)
        guarded = _guarded("fault_sleeps", pool, timeout_s=3.0, batch_timeout_s=6.0)

        def kill_workers():
            for pid in before:
                os.kill(pid, signal.SIGKILL)

        threading.Timer(1.0, kill_workers).start()
        n = 24
        out, _ = _call_bounded(guarded, 6.0 + 60, completions=["a"] * n, blob=[BIG] * n)
        assert out == [0.0] * n
        assert guarded.stats["errors"] >= 2  # the two items the killed workers were on
        assert guarded.stats["errors"] + guarded.stats["timeouts"] == n
    finally:
        pool.close()


def test_the_guard_gives_failure_reward_for_an_item_without_outcome():
    class LosingPool:
        def run(self, tasks, timeout_s, batch_timeout_s):
            return [None] * len(tasks)

    guarded = _guarded("plugin_len", LosingPool(), timeout_s=1.0, batch_timeout_s=1.0)
    assert guarded(completions=["a", "b"]) == [0.0, 0.0]
    assert guarded.stats["errors"] == 2
