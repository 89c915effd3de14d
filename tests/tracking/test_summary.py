"""The end of a run: the summary from the run directory's files, then "Run directory: ..." as the last line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmr1.tracking.run_dir import write_json
from mmr1.tracking.summary import build_summary, format_summary, print_ending, warmstart_gate

ACC = "rewards/external_r1v_acc/mean"
# What a default run printed before mmr1 filtered its own warnings (and must not any more): mmr1 caused each.
NOISE = [
    "`gradient_checkpointing` is deprecated",     # transformers training_args: mmr1 passed the old name
    "`is_gradient_checkpointing` is deprecated",  # transformers modeling_utils, read by TRL's generation
    "'pin_memory' argument is set as true",       # torch DataLoader on a machine without an accelerator
    "find_unused_parameters=True",                # torch DDP reducer, once per rank
    "Writing model shards",                       # transformers' save bar at every checkpoint (and the warm-start's)
    "'train_runtime'",                            # the warm-start SFTTrainer's log dicts (a first, uncached run)
]


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _run(tmp_path: Path, n: int = 25) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    rows = []
    for s in range(1, n + 1):
        rows.append({"step": s, "reward": 1.0 + s / 100, ACC: s / 100, "rewards/format/mean": 1.0,
                     "rewards/external_r1v_acc/timeouts": 0.5 if s == 7 else 0.0,
                     "rewards/external_r1v_acc/errors": 0.0})
    _write(run / "metrics.jsonl", rows)
    return run


def test_summary_from_the_run_files(tmp_path):
    run = _run(tmp_path)
    _write(run / "eval_metrics.jsonl", [{"step": 10, "eval_rewards/external_r1v_acc/mean": 0.4},
                                        {"step": 20, "eval_rewards/external_r1v_acc/mean": 0.55}])
    _write(run / "guard_events.jsonl", [{"event": "trip", "step": 12, "reason": "collapse", "action": "warn"}])
    _write(run / "reward_failures.jsonl", [{"reward": "external_r1v_acc", "kind": "timeout", "step": 7}])
    s = build_summary(run, status="finished", steps=25, wall_time_s=341.24, world_size=2, max_steps=25,
                      warmstart_gate=0.65)
    assert s["status"] == "finished" and s["steps"] == 25 and s["wall_time_s"] == 341.2
    # First 10 logged steps -> last 10.
    assert s["reward"] == {"first": pytest.approx(1.055), "last": pytest.approx(1.205), "window": 10,
                           "first_steps": [1, 10], "last_steps": [16, 25]}
    assert s["accuracy_metric"] == ACC
    assert (s["accuracy"]["first"], s["accuracy"]["last"]) == (pytest.approx(0.055), pytest.approx(0.205))
    assert s["eval"] == {"accuracy": 0.55, "step": 20, "metric": "eval_rewards/external_r1v_acc/mean", "points": 2}
    assert s["guard"]["trips"] == 1 and s["guard"]["first_trip_step"] == 12
    # 0.5 timeouts per call, averaged over 2 ranks: one timed-out item; the failures file agrees.
    assert s["reward_failures"] == {"timeouts": 1, "errors": 0, "steps": 1, "logged": 1}
    # Files worth opening: only those that exist (no curves.png here).
    assert s["files"] == [str(run / f) for f in ("metrics.jsonl", "eval_metrics.jsonl", "guard_events.jsonl",
                                                  "reward_failures.jsonl")]
    (run / "curves.png").write_bytes(b"png")
    assert build_summary(run, status="finished", steps=25, wall_time_s=1)["files"][0] == str(run / "curves.png")
    # Stored in run_info.json through mmr1's redacting writer, unchanged (no key reads as a secret).
    write_json(tmp_path / "run_info.json", {"summary": s})
    assert json.loads((tmp_path / "run_info.json").read_text())["summary"] == json.loads(json.dumps(s))

    text = format_summary(s, run)
    lines = text.splitlines()
    assert lines[0] == "Run finished: 25 steps in 5 min 41 s (2 processes)"
    assert lines[1].split() == "reward 1.055 -> 1.205 (mean of the first 10 -> last 10 logged steps)".split()
    assert "accuracy   0.055 -> 0.205" in text and "warm-start gate 0.65" in text
    assert "held-out   0.550 accuracy at step 20" in text
    assert "guard      1 trip(s), first at step 12 (collapse)" in text
    assert "rewards    1 timeout(s), 0 error(s) in 1 step(s)" in text
    assert lines[-1] == "  open       metrics.jsonl  eval_metrics.jsonl  guard_events.jsonl  reward_failures.jsonl"
    assert len(lines) <= 8


def test_a_short_run_compares_its_halves(tmp_path):
    run = _run(tmp_path, n=3)
    s = build_summary(run, status="finished", steps=3, wall_time_s=44.0)
    assert s["reward"]["window"] == 1 and s["reward"]["first_steps"] == [1, 1] and s["reward"]["last_steps"] == [3, 3]
    text = format_summary(s, run)
    assert "first 1 -> last 1 logged steps" in text
    assert "guard      no trips" in text and "rewards    no failures or timeouts" in text
    assert "held-out" not in text  # not evaluated


def test_a_sweep_point_points_to_the_sweep_report(tmp_path):
    (tmp_path / "multirun.yaml").write_text("hydra: {}\n")
    run = _run(tmp_path)
    s = build_summary(run, status="finished", steps=25, wall_time_s=10, max_steps=300)
    assert s["files"][-1] == str((tmp_path / "report.md").resolve())
    text = format_summary(s, run)
    assert text.splitlines()[0] == "Run finished: 25/300 steps in 10 s (1 process)"
    assert str((tmp_path / "report.md").resolve()) in text.splitlines()[-1]


def test_print_ending_summary_then_the_run_directory_last(tmp_path, capsys):
    run = _run(tmp_path)
    summary = build_summary(run, status="guard_gave_up", steps=25, wall_time_s=3725)
    (run / "run_info.json").write_text(json.dumps({"status": "guard_gave_up", "summary": summary}))
    print_ending(run)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Run stopped by the collapse guard (gave up): 25 steps in 1 h 02 min (1 process)"
    assert out[-1] == f"Run directory: {run.resolve()}"
    assert sum(line.startswith("Run directory:") for line in out) == 1
    print_ending(run, with_summary=False)  # a dry run: no summary, even if an old run_info.json is there
    assert capsys.readouterr().out.splitlines() == [f"Run directory: {run.resolve()}"]


def test_warmstart_gate_is_read_next_to_the_cached_model(tmp_path):
    assert warmstart_gate(tmp_path) is None and warmstart_gate(None) is None
    (tmp_path / "mmr1_warmstart.json").write_text(json.dumps({"steps": 250, "gate_accuracy": 0.65}))
    assert warmstart_gate(tmp_path) == 0.65


def _summary_block(stdout: str, run_dir: Path) -> list[str]:
    lines = stdout.strip().splitlines()
    assert lines[-1] == f"Run directory: {run_dir.resolve()}"
    assert sum(line.startswith("Run directory:") for line in lines) == 1, stdout[-3000:]
    start = max(i for i, line in enumerate(lines) if line.startswith("Run finished: "))
    return lines[start:-1]


@pytest.mark.slow
@pytest.mark.xdist_group("default_job")
def test_default_run_output_ends_with_summary_then_run_directory(default_job):
    """The README's default job, shortened: none of mmr1's noise, the summary, then one run directory line."""
    run_dir, proc = default_job
    output = proc.stdout + proc.stderr
    for noise in NOISE:
        assert noise not in output, f"{noise!r} in the output:\n{output[-6000:]}"
    block = _summary_block(proc.stdout, run_dir)
    assert block[0].startswith("Run finished: 3 steps in ") and block[0].endswith("(1 process)")
    assert any(line.startswith("  reward ") for line in block)
    assert any(line.startswith("  accuracy ") and "warm-start gate" in line for line in block)
    assert block[-1].startswith("  open ") and "curves.png" in block[-1] and "metrics.jsonl" in block[-1]
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["status"] == "finished" and info["summary"]["steps"] == 3 == info["steps"]
    assert format_summary(info["summary"], run_dir).splitlines() == block  # the same summary in run_info.json



@pytest.mark.slow
@pytest.mark.xdist_group("two_rank_run")
def test_two_rank_run_prints_one_ending_and_no_ddp_warning(two_rank_run):
    run_dir, proc = two_rank_run
    output = proc.stdout + proc.stderr
    for noise in NOISE:
        assert noise not in output, f"{noise!r} in the output:\n{output[-6000:]}"
    block = _summary_block(proc.stdout, run_dir)
    assert block[0].startswith("Run finished: 2 steps in ") and block[0].endswith("(2 processes)")
