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
    rng = random.Random(0)
    assert feed(CollapseDetector(CFG), [healthy(s, rng) for s in range(1, 500)]) == []


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
