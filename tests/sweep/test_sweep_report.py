"""Sweep report from run directories alone: values, statuses, collapse verdicts, point names (fast, no training)."""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from mmr1.sweep.naming import point_dirname, short_label, swept_keys_of
from mmr1.sweep.status import STALE_AFTER_S, first_error_line, read_run, record_failure
from mmr1.sweep.table import collapse_verdict, write_report
from mmr1.tracking.series import WINDOW, rolling


def make_run(root: Path, name: str, overrides: list[str], rows: list[dict] | None = None,
             info: dict | None = None, **files) -> Path:
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(overrides)))
    (run / "config.yaml").write_text("{}\n")
    if rows is not None:
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if info is not None:
        (run / "run_info.json").write_text(json.dumps(info))
    for fname, rows_ in files.items():
        (run / fname.replace("__", ".")).write_text("".join(json.dumps(r) + "\n" for r in rows_))
    return run


def metric_rows(acc: list[float], **series) -> list[dict]:
    rows = []
    for i, a in enumerate(acc):
        row = {"step": i + 1, "reward": a + 1.0, "rewards/external_r1v_acc/mean": a, "rewards/format/mean": 1.0,
               "completions/mean_length": 12.0 + i, "grad_norm": 0.5, "loss": 0.1}
        for k, v in series.items():
            row[k] = v[i]
        rows.append(row)
    return rows


def write_multirun(sweep: Path, task: list[str], params: dict | None = None) -> None:
    sweep.mkdir(parents=True, exist_ok=True)
    cfg = {"hydra": {"overrides": {"task": task}, "sweeper": {"params": params}}}
    (sweep / "multirun.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))


def test_swept_keys_from_command_line_and_sweeper_params():
    task = ["trainer.max_steps=2", "trainer.beta=0,0.001", "+sweep=beta", "hydra.verbose=true",
            "model.max_pixels=range(1,3)"]
    assert swept_keys_of(task, {"optimizer.max_grad_norm": "0.5,1.0,null", "trainer.seed": "1"}) == [
        "trainer.beta", "model.max_pixels", "optimizer.max_grad_norm"]


def test_point_dirname_keeps_only_swept_overrides(tmp_path):
    write_multirun(tmp_path, ["trainer.max_steps=2", "+sweep=beta"], {"trainer.beta": "0,0.001"})
    assert point_dirname(1, ["trainer.max_steps=2", "+sweep=beta", "trainer.beta=0.001"], tmp_path) == "1_beta=0.001"
    # No multirun.yaml (another sweeper): every override, made path-safe and bounded.
    name = point_dirname(0, ["a.b=x/y", "c=" + "z" * 300], tmp_path / "none")
    assert name.startswith("0_b=x_y,c=zz") and "/" not in name and len(name) < 130
    assert short_label(["a.x=1", "b.x=2", "c.y=3"]) == "a.x=1,b.x=2,y=3"  # clashing leaves keep full keys


def test_report_rows_match_metrics(tmp_path):
    sweep = tmp_path / "sweep"
    write_multirun(sweep, ["trainer.max_steps=30", "trainer.beta=0,0.04"])
    acc0 = [0.1 * (i % 5) for i in range(30)]
    acc1 = [0.5] * 25 + [0.9] * 5
    make_run(sweep, "0_beta=0", ["trainer.max_steps=30", "trainer.beta=0"], metric_rows(acc0),
             {"status": "finished", "steps": 30, "wall_time_s": 12.5})
    make_run(sweep, "1_beta=0.04", ["trainer.max_steps=30", "trainer.beta=0.04"],
             metric_rows(acc1, kl=[0.01] * 30, grad_norm=[0.2] * 29 + [3.0]),
             {"status": "finished", "steps": 30, "wall_time_s": 20.0},
             eval_metrics__jsonl=[{"step": 30, "eval_rewards/external_r1v_acc/mean": 0.75}])
    rows = write_report(sweep)
    assert [r["overrides"] for r in rows] == ["trainer.beta=0", "trainer.beta=0.04"]
    r0, r1 = rows
    assert r0["status"] == "finished" and r0["steps"] == 30 and r0["wall_time_s"] == 12.5
    assert r0["acc_final"] == pytest.approx(sum(acc0[-WINDOW:]) / WINDOW)
    assert r0["acc_best"] == pytest.approx(max(rolling(acc0)))
    assert r0["kl_final"] is None and r1["kl_final"] == pytest.approx(0.01)
    assert r1["acc_final"] == pytest.approx((5 * 0.5 + 5 * 0.9) / 10)
    assert r1["grad_norm_max"] == 3.0 and r1["completion_length"] == pytest.approx(sum(range(32, 42)) / 10)
    assert r1["eval_acc"] == 0.75 and r1["eval_step"] == 30
    assert r0["collapsed"] == "no" and r1["collapsed"] == "no"
    with open(sweep / "report.csv") as f:
        csv_rows = list(csv.DictReader(f))
    assert [float(r["acc_final"]) for r in csv_rows] == pytest.approx([r0["acc_final"], r1["acc_final"]])
    md = (sweep / "report.md").read_text()
    assert "| 1_beta=0.04 | trainer.beta=0.04 | - | finished | 30 |" in md and "0.750 @30" in md
    for png in ("reward.png", "kl.png", "grad_norm.png", "completion_length.png"):
        assert (sweep / png).stat().st_size > 1000


def test_statuses_failed_running_stale_and_custom(tmp_path):
    sweep = tmp_path / "s"
    try:
        raise ValueError("launch layout does not fit:\n  - batch 8 is not divisible by num_generations 3\nmore")
    except ValueError as err:
        run = make_run(sweep, "0_ng=3", ["trainer.num_generations=3"])
        record_failure(run, err)
    make_run(sweep, "1_ng=4", ["trainer.num_generations=4"], metric_rows([0.5] * 3))
    stale = make_run(sweep, "2_ng=8", ["trainer.num_generations=8"], metric_rows([0.5] * 3))
    old = time.time() - STALE_AFTER_S - 60
    for p in stale.rglob("*"):
        os.utime(p, (old, old))
    make_run(sweep, "3_ng=16", ["trainer.num_generations=16"], metric_rows([0.5] * 3),
             {"status": "stopped", "steps": 3})
    rows = write_report(sweep, plots=False)
    assert rows[0]["status"] == ("failed (ValueError: launch layout does not fit: batch 8 is not divisible by "
                                 "num_generations 3)")
    assert rows[1]["status"] == "running" and rows[1]["steps"] == 3
    assert rows[2]["status"].startswith("stale (no update for")
    assert rows[3]["status"] == "stopped"
    # A run's own end record wins over a later failure report (e.g. from the Hydra callback).
    record_failure(sweep / "3_ng=16", RuntimeError("late"))
    assert read_run(sweep / "3_ng=16").status == "stopped"
    assert first_error_line(KeyError()) == "KeyError"


def test_collapse_verdicts(tmp_path):
    healthy = [0.3 + 0.02 * i for i in range(30)]
    collapsed = [0.9] * 20 + [0.1] * 20
    grad = [0.5] * 20 + [50.0] * 20
    runs = {
        "short": make_run(tmp_path, "short", [], metric_rows([0.5] * 5)),
        "healthy": make_run(tmp_path, "healthy", [], metric_rows(healthy)),
        "collapsed": make_run(tmp_path, "collapsed", [], metric_rows(collapsed, grad_norm=grad)),
        "drop": make_run(tmp_path, "drop", [], metric_rows(collapsed)),
        "nan": make_run(tmp_path, "nan", [], metric_rows([0.5] * 3, loss=[0.1, "nan", 0.1])),
        # What the guard writes (GuardCallback.on_log, then the run loop's _event for the rollback).
        "guard": make_run(tmp_path, "guard", [], metric_rows(healthy), guard_events__jsonl=[
            {"event": "trip", "action": "rollback", "step": 7, "reason": "collapse", "streak_start": 5,
             "numbers": {"rewards/accuracy/mean": 0.1, "rewards/accuracy/mean/running_mean": 0.9,
                         "rewards/accuracy/mean/drop": 0.8, "grad_norm": 50.0, "grad_norm/running_mean": 0.5,
                         "grad_norm/ratio": 100.0}},
            {"event": "rollback", "step": 7, "to_step": 4, "checkpoint": "guard/checkpoint-4", "rollbacks": 1,
             "lr_factor": 0.5}]),
    }
    verdict = {name: collapse_verdict(read_run(path)) for name, path in runs.items()}
    assert verdict["short"] == "-" and verdict["healthy"] == "no"
    # The guard's own definition (reward drop AND a spike, guard.patience steps in a row), replayed.
    assert verdict["collapsed"].startswith("yes (guard replay: guard trip at step 23 (collapse, streak from step 21)")
    assert verdict["drop"] == "no"  # a drop without a spike is not the seed's collapse, for the guard either
    assert verdict["nan"].startswith("yes (guard replay: guard trip at step 2 (nonfinite")
    assert verdict["guard"] == "yes (guard: 1 trip(s), first at step 7: collapse -> rollback)"


def test_report_cli_single_run_and_missing_dir(tmp_path):
    from mmr1.sweep.report import main

    run = make_run(tmp_path, "run", ["trainer.beta=0.01"], metric_rows([0.2, 0.4]), {"status": "finished"})
    assert main([str(run), "--no-plots"]) == 0
    assert "trainer.beta=0.01" in (run / "report.md").read_text()
    assert main([str(tmp_path / "nope")]) == 2


def test_collapse_verdict_uses_the_runs_own_guard_settings(tmp_path):
    collapsed = [0.9] * 20 + [0.1] * 20
    grad = [0.5] * 20 + [50.0] * 20
    run = make_run(tmp_path, "patient", [], metric_rows(collapsed, grad_norm=grad))
    (run / "config.yaml").write_text("guard:\n  patience: 30\n")  # longer than the 20 bad steps
    assert collapse_verdict(read_run(run)) == "no"
    (run / "config.yaml").write_text("guard:\n  patience: 2\n")
    assert "guard trip at step 22 " in collapse_verdict(read_run(run))


def test_a_mixtures_runs_get_per_task_columns(tmp_path):
    # Issue 14 part 2: each task's final accuracy reward and evaluation accuracy, beside a single-task run.
    sweep = tmp_path / "sweep"
    n = WINDOW + 2
    geo = [0.1 * (i % 4) for i in range(n)]
    rows = metric_rows([0.5] * n, **{"rewards/external_r1v_acc/geoqa/mean": geo,
                                     "rewards/external_r1v_acc/clevr_count/mean": [0.9] * n})
    make_run(sweep, "0_mix", ["trainer.beta=0"], rows, info={"status": "finished", "steps": n},
             eval_metrics__jsonl=[{"step": n, "eval_rewards/external_r1v_acc/geoqa/mean": 0.25,
                                   "eval_rewards/external_r1v_acc/clevr_count/mean": 0.75}],
             eval__json=[{"accuracy": 0.5, "tasks": {"geoqa": {"accuracy": 0.2, "rows": 5}}}])
    make_run(sweep, "1_one", ["trainer.beta=0.001"], metric_rows([0.5] * n), info={"status": "finished", "steps": n})
    mix, one = write_report(sweep, plots=False)
    assert mix["acc_final/geoqa"] == pytest.approx(sum(geo[-WINDOW:]) / WINDOW)
    assert mix["acc_final/clevr_count"] == pytest.approx(0.9)
    # eval.json's per-task accuracy wins; a task it lacks falls back to the last in-training evaluation.
    assert mix["eval_acc/geoqa"] == 0.2 and mix["eval_acc/clevr_count"] == 0.75
    assert not any("/" in k for k in one)
    with open(sweep / "report.csv") as f:
        table = list(csv.DictReader(f))
    assert float(table[0]["acc_final/clevr_count"]) == pytest.approx(0.9) and table[1]["acc_final/clevr_count"] == ""
    md = (sweep / "report.md").read_text()
    assert "| clevr_count acc | clevr_count eval | geoqa acc | geoqa eval |" in md
    assert "| 0.900 | 0.750 |" in md
