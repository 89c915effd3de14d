"""`python -m mmr1.train --multirun ...` end to end on the tiny model: point directories, report, failures."""

from __future__ import annotations

import json

import pytest

from mmr1.rewards.overlong import NAME as OVERLONG
from mmr1.tracking.metrics import read_metrics
from mmr1.tracking.series import WINDOW
from test_algorithms import EXPECTED
from testkit import TINY, run_cli

pytestmark = pytest.mark.slow

# A tiny model gains nothing from a second OpenMP thread, and on shared cores it costs up to 5x
# (measured: a tiny_count step on 2 loaded cores).
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def _mean_tail(rows: list[dict], key: str) -> float:
    vals = [r[key] for r in rows if isinstance(r.get(key), (int, float))][-WINDOW:]
    return sum(vals) / len(vals)


def test_algorithm_sweep_trains_each_and_its_report_matches_each_runs_metrics(tmp_path):
    """The stored algorithm sweep (conf/sweep/algorithm.yaml): each algorithm trains 2 steps with its papers' values
    (tests/test_algorithms.py's EXPECTED), and report.csv / report.md hold each run's own numbers."""
    sweep = tmp_path / "sweep"
    proc = run_cli(["+sweep=algorithm", *TINY, "trainer.max_steps=2", f"hydra.sweep.dir={sweep}"],
                   timeout=600, env=ONE_THREAD)
    points = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert points == [f"{i}_algorithm={a}" for i, a in enumerate(["grpo_seed", "dapo", "dr_grpo", "gspo"])]
    assert "[4/4] algorithm=gspo" in proc.stderr  # the progress bar names the sweep point
    for png in ("reward.png", "kl.png", "grad_norm.png", "completion_length.png"):
        assert (sweep / png).exists()
    rows = {r["run"]: r for r in _csv(sweep / "report.csv")}
    assert set(rows) == set(points)
    for point in points:
        metrics = read_metrics(sweep / point / "metrics.jsonl")
        info = json.loads((sweep / point / "run_info.json").read_text())
        row, name = rows[point], point.split("=")[1]
        assert row["status"] == "finished" and int(row["steps"]) == info["steps"] == 2
        assert row["algorithm"] == name and row["overrides"] == f"algorithm={name}"
        args = json.loads((sweep / point / "grpo_args.json").read_text())
        assert {k: args.get(k) for k in EXPECTED[name]} == EXPECTED[name]
        assert float(row["acc_final"]) == pytest.approx(_mean_tail(metrics, "rewards/external_r1v_acc/mean"))
        assert float(row["format_final"]) == pytest.approx(_mean_tail(metrics, "rewards/format/mean"))
        assert float(row["completion_length"]) == pytest.approx(_mean_tail(metrics, "completions/mean_length"))
        assert float(row["clip_low"]) == pytest.approx(_mean_tail(metrics, "clip_ratio/low_mean"))
        assert float(row["grad_norm_max"]) == pytest.approx(max(r["grad_norm"] for r in metrics))
        assert float(row["wall_time_s"]) == pytest.approx(info["wall_time_s"])
    # KL is only computed with a reference model: the seed's beta 0.001; DAPO and GSPO drop it, Dr. GRPO keeps the
    # spine's 0.
    assert all(rows[p]["kl_final"] == "" for p in points[1:])
    kl = _mean_tail(read_metrics(sweep / points[0] / "metrics.jsonl"), "kl")
    assert float(rows[points[0]]["kl_final"]) == pytest.approx(kl)
    # DAPO: its overlong penalty and dynamic sampling ran every step.
    dapo = [r for r in read_metrics(sweep / points[1] / "metrics.jsonl") if "loss" in r]
    assert dapo and all(f"rewards/{OVERLONG}/mean" in r and "dynamic_sampling/kept" in r for r in dapo)
    md = (sweep / "report.md").read_text()
    assert "4 runs: 4 finished" in md and "| 1_algorithm=dapo | algorithm=dapo | dapo | finished | 2 |" in md


def test_a_failing_point_is_reported_and_the_others_finish(tmp_path):
    sweep = tmp_path / "sweep"
    # 3 generations cannot split a batch of 8 completions: that point fails at startup, before any weights.
    proc = run_cli(["--multirun", *TINY, "trainer.max_steps=1", "trainer.num_generations=3,4",
                    f"hydra.sweep.dir={sweep}"], timeout=240, check=False, env=ONE_THREAD)
    assert proc.returncode != 0  # the sweep says a point failed ...
    rows = {r["run"]: r for r in _csv(sweep / "report.csv")}
    assert set(rows) == {"0_num_generations=3", "1_num_generations=4"}
    failed, ok = rows["0_num_generations=3"], rows["1_num_generations=4"]
    assert failed["status"].startswith("failed (") and "3" in failed["status"]
    assert json.loads((sweep / "0_num_generations=3" / "run_info.json").read_text())["status"] == "failed"
    assert ok["status"] == "finished" and ok["steps"] == "1"  # ... and still ran the others


def test_stored_sweep_dry_run_maps_null_clipping(tmp_path):
    sweep = tmp_path / "sweep"
    # No --multirun: the stored sweep sets hydra.mode MULTIRUN itself.
    run_cli(["+sweep=grad_clip", "dry_run=true", f"hydra.sweep.dir={sweep}"], timeout=240, env=ONE_THREAD)
    got = {p.name: json.loads((p / "grpo_args.json").read_text())["max_grad_norm"]
           for p in sweep.iterdir() if p.is_dir()}
    assert got == {"0_max_grad_norm=0.5": 0.5, "1_max_grad_norm=1.0": 1.0, "2_max_grad_norm=null": 0.0}


def _csv(path):
    import csv

    with open(path) as f:
        return list(csv.DictReader(f))
