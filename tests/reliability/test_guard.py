"""Collapse guard: the detector on synthetic rows (fast), and an injected collapse in a real run (slow)."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest
from harness import assert_same_weights, cli, rows_by_step, with_overrides

from mmr1.reliability.config import GuardConfig, GuardConfigError, as_guard_config
from mmr1.reliability.guard import CollapseDetector, main, read_events
from mmr1.tracking.metrics import read_metrics

# Small windows so that a handful of rows arms the detector.
CFG = replace(GuardConfig(), min_history=3, window=5, patience=3)


def healthy(step: int, rng: random.Random) -> dict:
    return {"step": step, "loss": rng.uniform(-0.1, 0.1), "grad_norm": rng.uniform(0.2, 0.6),
            "rewards/external_r1v_acc/mean": rng.uniform(0.3, 0.7), "rewards/format/mean": rng.uniform(0.8, 1.0)}


def collapsed(step: int) -> dict:
    return {"step": step, "loss": 0.5, "grad_norm": 12.0, "rewards/external_r1v_acc/mean": 0.0,
            "rewards/format/mean": 0.05}


def feed(det: CollapseDetector, rows: list[dict]):
    return [t for r in rows if (t := det.update(r["step"], r)) is not None]


def test_noise_never_trips():
    """Healthy noise with the excursions healthy runs do have (README: single-step drops up to 0.46, a grad
    norm up to 8.6x on one step): each condition alone for several steps, and both at once on one step
    at a time. A detector that ORed the two conditions, or ignored the patience, trips here."""
    rng = random.Random(0)
    rows = [healthy(s, rng) for s in range(1, 500)]
    for s in range(30, 480, 50):
        for k in range(4):  # a 4-step reward drop with a normal gradient
            rows[s + k - 1]["rewards/format/mean"] = 0.3
        for k in range(10, 14):  # a 4-step gradient spike with normal rewards
            rows[s + k - 1]["grad_norm"] = 8.6 * 0.4
        rows[s + 24]["rewards/format/mean"], rows[s + 24]["grad_norm"] = 0.3, 8.6 * 0.4  # both, one step
    det = CollapseDetector(CFG)
    assert feed(det, rows) == []
    # The excursions were real: each one off the running means by more than the thresholds.
    assert det._ref("rewards/format/mean") - 0.3 > CFG.reward_drop and 8.6 * 0.4 / det._ref("grad_norm") > 5


def test_drop_with_spike_trips_on_the_patience_th_step_with_its_numbers():
    rng = random.Random(1)
    det = CollapseDetector(CFG)
    assert feed(det, [healthy(s, rng) for s in range(1, 11)]) == []
    assert det.update(11, collapsed(11)) is None and det.update(12, collapsed(12)) is None
    trip = det.update(13, collapsed(13))
    assert trip is not None and trip.reason == "collapse" and (trip.step, trip.streak_start) == (13, 11)
    assert trip.numbers["rewards/format/mean/drop"] > 0.5 and trip.numbers["grad_norm/ratio"] > 5


def test_a_dead_policy_trips_too_reward_and_gradient_gone():
    """The tiny model's real collapse at lr 1e-3: every completion the same truncated string, rewards
    0, grad norm 0 (masked truncated completions): no spike, the gradient vanishes."""
    rng = random.Random(4)
    dead = [{**collapsed(s), "grad_norm": 0.0, "loss": 0.0} for s in range(11, 14)]
    trips = feed(CollapseDetector(CFG), [healthy(s, rng) for s in range(1, 11)] + dead)
    assert [(t.step, t.streak_start) for t in trips] == [(13, 11)] and trips[0].numbers["grad_norm/ratio"] == 0


def test_drop_alone_spike_alone_or_a_broken_streak_do_not_trip():
    rng = random.Random(2)
    rows = [healthy(s, rng) for s in range(1, 11)]
    drop_only = [{**collapsed(s), "grad_norm": 0.4} for s in range(11, 20)]
    spike_only = [{**healthy(s, rng), "grad_norm": 30.0} for s in range(11, 20)]
    broken = [collapsed(11), collapsed(12), healthy(13, rng), collapsed(14), collapsed(15)]
    for tail in (drop_only, spike_only, broken):
        assert feed(CollapseDetector(CFG), rows + tail) == []


def test_a_kl_spike_alone_with_the_drop_trips():
    """beta > 0 runs log ``kl``: a reward drop with KL off its scale trips though the grad norm stays normal."""
    rng = random.Random(5)
    rows = [{**healthy(s, rng), "kl": rng.uniform(0.01, 0.02)} for s in range(1, 11)]
    kl_only = [{**healthy(s, rng), "rewards/format/mean": 0.05, "kl": 0.5} for s in range(11, 14)]
    trips = feed(CollapseDetector(CFG), rows + kl_only)
    assert [(t.step, t.streak_start) for t in trips] == [(13, 11)]
    assert trips[0].numbers["kl/ratio"] > 5 and "grad_norm/ratio" not in trips[0].numbers
    no_kl = replace(CFG, spike_keys=["grad_norm"])  # the same rows, KL not watched: nothing spikes
    assert feed(CollapseDetector(no_kl), rows + kl_only) == []


def _callback_run(tmp_path, action: str):
    """A GuardCallback fed Trainer's on_log calls: 10 healthy steps then 3 collapsed ones."""
    from transformers import TrainerControl, TrainerState

    from mmr1.reliability.guard import GuardCallback

    cb = GuardCallback(replace(CFG, action=action), tmp_path)
    state, rng, controls, rows = TrainerState(), random.Random(6), [], []
    for s in range(1, 14):
        state.global_step = s
        row = healthy(s, rng) if s <= 10 else collapsed(s)
        control = TrainerControl()
        cb.on_log(None, state, control, logs=row)
        controls.append(control)
        rows.append(row)
    return cb, controls, rows


@pytest.mark.parametrize("action", ["warn", "stop", "rollback"])
def test_the_callbacks_action_on_a_trip(tmp_path, action):
    cb, controls, rows = _callback_run(tmp_path, action)
    assert [r.get("guard/trip") for r in rows] == [None] * 12 + [1]  # the trip's row, for metrics.jsonl
    assert rows[-1]["guard/reason"] == "collapse" and rows[-1]["guard/streak_start"] == 11
    events = read_events(tmp_path)
    assert [(e["event"], e["action"], e["step"]) for e in events] == [("trip", action, 13)]
    stops = [c.should_training_stop for c in controls]
    if action == "warn":  # recorded, and training goes on
        assert not any(stops) and cb.pending is None
    else:  # the runner decides (stop or roll back); the collapsed state is never checkpointed
        assert stops == [False] * 12 + [True] and controls[-1].should_save is False
        assert cb.pending is not None and cb.pending.step == 13


def test_the_readmes_guard_numbers_are_the_defaults():
    """The README's own sentences (0.3 / 5x / 3 / 20, lr x0.5, 2 rollbacks), parsed, against the dataclass."""
    import re

    from mmr1.trainer.loop import _SEED_STRIDE
    from testkit import REPO

    text = " ".join((REPO / "README.md").read_text().split())
    d = GuardConfig()
    found = {
        "reward_drop": float(re.search(r"`guard\.reward_drop` \(([\d.]+)\)", text).group(1)),
        "spike_factor": float(re.search(r"`guard\.spike_factor` \(([\d.]+)×", text).group(1)),
        "patience": int(re.search(r"`guard\.patience` \((\d+)\)", text).group(1)),
        "window": int(re.search(r"with its mean over the last (\d+) healthy steps", text).group(1)),
        "lr_factor": float(re.search(r"`guard\.lr_factor` \(([\d.]+)\)", text).group(1)),
        "max_rollbacks": int(re.search(r"`guard\.max_rollbacks` \((\d+)\)", text).group(1)),
    }
    assert found == {k: getattr(d, k) for k in found}
    assert f"seed + {_SEED_STRIDE} × rollback" in text and d.action.value == "rollback"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "nan"])  # "nan": metrics.jsonl's spelling
def test_non_finite_loss_or_grad_norm_trips_at_once(bad):
    det = CollapseDetector(CFG)
    trip = det.update(1, {"step": 1, "loss": bad, "grad_norm": 1.0})
    assert trip is not None and trip.reason == "nonfinite" and trip.streak_start == 1
    assert det.update(1, {"step": 1, "loss": 0.1, "grad_norm": bad}).reason == "nonfinite"


def test_replay_cli_reports_trips(tmp_path, capsys):
    rng = random.Random(3)
    rows = [healthy(s, rng) for s in range(1, 30)] + [collapsed(s) for s in range(30, 34)]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    main(["replay", str(path), "--set", "min_history=3", "window=5"])
    out = capsys.readouterr().out
    assert "guard trip at step 32 (collapse, streak from step 30)" in out and "1/1 runs tripped" in out


def test_invalid_guard_settings_fail_naming_the_key():
    with pytest.raises(GuardConfigError, match="guard.action"):
        as_guard_config({"action": "panic"})
    with pytest.raises(GuardConfigError, match="lr_factor"):
        as_guard_config({"lr_factor": 2.0})


@pytest.mark.slow
def test_injected_collapse_rolls_back_then_gives_up_on_the_last_good_weights(tmp_path):
    """Reward falls to ~-10 and the gradient grows ~60x from step 5 on, every time (a recipe that
    always collapses): trip at step 6 (patience 2), rollback to checkpoint-4 at half the lr, the
    collapse comes back, trip again, give up (max_rollbacks=1): final weights = checkpoint-4's."""
    run = tmp_path / "run"
    overrides = with_overrides(
        "reward.funcs=[collapse_reward]", "trainer.scale_rewards=none", "trainer.max_steps=8",
        "guard.min_history=2", "guard.window=4", "guard.patience=2", "guard.max_rollbacks=1")
    cli(overrides, run, env={"MMR1_TEST_COLLAPSE_AT": "4"})  # rollouts generated at global_step >= 4

    events = read_events(run)
    assert [(e["event"], e["step"]) for e in events] == [("trip", 6), ("rollback", 6), ("trip", 6), ("gave_up", 6)]
    assert events[0]["streak_start"] == 5 and events[1]["to_step"] == 4 and events[1]["lr_factor"] == 0.5
    rows = rows_by_step(run)
    assert sorted(rows) == [1, 2, 3, 4, 5, 6]
    trip_row = rows[6]
    assert trip_row["guard/trip"] == 1 and trip_row["guard/reason"] == "collapse"
    assert trip_row["guard/rewards/collapse_reward/mean/drop"] > 0.5 and trip_row["guard/grad_norm/ratio"] > 5
    first_attempt = {r["step"]: r for r in read_metrics(run / "metrics_rolled_back.jsonl")}
    assert sorted(first_attempt) == [5, 6] and first_attempt[6]["guard/trip"] == 1
    assert rows[5]["guard/rollbacks"] == 1
    assert rows[5]["learning_rate"] == pytest.approx(first_attempt[5]["learning_rate"] * 0.5)
    assert not (run / "checkpoint-6").exists()  # the collapsed state is never checkpointed
    assert_same_weights(run / "final" / "model.safetensors", run / "checkpoint-4" / "model.safetensors")
    assert json.loads((run / "run_info.json").read_text())["status"] == "guard_gave_up"
    assert (run / "curves.png").stat().st_size > 1000


@pytest.mark.slow
def test_guard_action_stop_ends_the_run_naming_the_trip_and_the_last_good_checkpoint(tmp_path):
    run = tmp_path / "run"
    overrides = with_overrides(
        "reward.funcs=[collapse_reward]", "trainer.scale_rewards=none", "trainer.max_steps=8",
        "guard.min_history=2", "guard.window=4", "guard.patience=2", "guard.action=stop")
    proc = cli(overrides, run, env={"MMR1_TEST_COLLAPSE_AT": "4"}, check=False)
    assert proc.returncode != 0
    assert "guard trip at step 6 (collapse, streak from step 5)" in proc.stderr
    assert f"Last good checkpoint: {run / 'checkpoint-4'}" in proc.stderr
    assert [e["event"] for e in read_events(run)] == ["trip"] and not (run / "final").exists()
    assert rows_by_step(run)[6]["guard/trip"] == 1 and (run / "curves.png").exists()


@pytest.mark.slow
def test_a_rollback_that_recovers_finishes_reseeded_with_the_undone_checkpoints_set_aside(tmp_path):
    """The collapse comes once (MMR1_TEST_COLLAPSE_ONCE): trip at step 6, roll back to checkpoint-4
    (checkpoint-5, saved inside the bad streak, becomes checkpoint-5.rolled-back1), then healthy to the end:
    status finished. The replayed step 5 draws other prompts and other samples (seed + 1000) than the
    first attempt, which an exact resume without the reseed would repeat bit for bit."""
    run, trace = tmp_path / "run", tmp_path / "trace.jsonl"
    overrides = with_overrides(
        "reward.funcs=[collapse_reward,hash_reward]", "trainer.scale_rewards=none", "trainer.max_steps=7",
        "trainer.save_steps=1", "trainer.save_total_limit=2",
        "guard.min_history=2", "guard.window=4", "guard.patience=2", "guard.max_rollbacks=1")
    cli(overrides, run, env={"MMR1_TEST_COLLAPSE_AT": "4", "MMR1_TEST_COLLAPSE_ONCE": "1",
                                    "MMR1_TEST_TRACE": str(trace)})
    events = read_events(run)
    assert [(e["event"], e["step"]) for e in events] == [("trip", 6), ("rollback", 6)]
    assert events[1]["to_step"] == 4 and events[1]["rollbacks"] == 1
    # The rollouts for step 5 (generated at global_step 4): first attempt, then after the rollback.
    calls = [json.loads(line) for line in trace.read_text().splitlines()]
    first, again = [c for c in calls if c["step"] == 4]
    assert first["completions"] != again["completions"] or first["solution"] != again["solution"]
    assert "lr x0.5, seed 1042" in (run / "train.log").read_text()  # trainer.seed 42 + 1000 x rollback 1
    info = json.loads((run / "run_info.json").read_text())
    assert info["status"] == "finished" and info["steps"] == 7
    assert sorted(rows_by_step(run)) == list(range(1, 8)) and rows_by_step(run)[5]["guard/rollbacks"] == 1
    assert (run / "checkpoint-5.rolled-back1").is_dir()
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-5.rolled-back1", "checkpoint-6",
                                                                "checkpoint-7"]  # 6 and 7: the new trajectory
    assert (run / "final" / "model.safetensors").exists()
