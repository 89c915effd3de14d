"""Benchmark: dynamic sampling on and off, side by side, until the training accuracy first reaches a target.

    python benchmarks/dynamic_sampling.py                       # 3 seeds x 2 arms of +experiment=tiny_count
    python benchmarks/dynamic_sampling.py --seeds 1 --max-steps 100 --out /tmp/ds-bench

Each run is ``python -m mmr1.train +experiment=tiny_count trainer.seed=S trainer.dynamic_sampling=X`` (no
evaluation, no checkpoints), the two arms of a seed one after the other so that a partial result is paired.
The script reads metrics.jsonl as the run writes it and stops the run (SIGTERM) at the first step whose
10-step mean of ``rewards/external_r1v_acc/mean`` reaches 0.9. Per run it reports:

- steps: that step (or "not reached" within ``--max-steps``);
- completions: completions generated up to it: ``per_device_train_batch_size`` per generation batch, one
  batch per step plus ``dynamic_sampling/extra_batches``;
- train s: the sum of TRL's ``step_time`` up to it (generation, rewards, forward and backward: the cost
  dynamic sampling changes); wall s: from the first step's start to that row's arrival (adds logging, the
  progress bar, callbacks). Model loading and the warm-start (cached after the first run) are excluded.

The accuracy is the mean over all completions generated in the step, dropped groups included (TRL logs every
generation batch), so both arms measure the policy the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ACC = "rewards/external_r1v_acc/mean"


def run_arm(seed: int, on: bool, args: argparse.Namespace) -> dict:
    run_dir = Path(args.out) / f"seed{seed}-{'on' if on else 'off'}"
    cmd = [sys.executable, "-m", "mmr1.train", "+experiment=tiny_count", f"trainer.seed={seed}",
           f"trainer.max_steps={args.max_steps}", f"trainer.dynamic_sampling={str(on).lower()}",
           "trainer.eval_strategy=no", "trainer.save_steps=100000", "guard.save_on_interrupt=false",
           "resume=never", f"hydra.run.dir={run_dir}"]
    if args.max_batches is not None:
        cmd.append(f"trainer.dynamic_sampling_max_batches={args.max_batches}")
    env = {**os.environ, "WANDB_MODE": "disabled"}
    log = open(run_dir.with_suffix(".log"), "w") if run_dir.parent.is_dir() else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    metrics = run_dir / "metrics.jsonl"
    rows: list[dict] = []
    arrived: list[float] = []
    reached = None
    while reached is None:
        finished = proc.poll() is not None
        if metrics.exists():
            lines = metrics.read_text().splitlines()
            for line in lines[len(rows):]:
                row = json.loads(line)
                if ACC not in row:
                    continue
                rows.append(row)
                arrived.append(time.monotonic())
                window = [r[ACC] for r in rows[-args.window:]]
                if len(window) == args.window and statistics.fmean(window) >= args.target:
                    reached = len(rows) - 1
                    break
        if finished:
            break
        time.sleep(0.5)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    proc.wait()
    end = reached if reached is not None else len(rows) - 1
    upto = rows[:end + 1]
    # Completions per generation batch: one process, steps_per_generation = gradient accumulation (1 here).
    grpo = json.loads((run_dir / "grpo_args.json").read_text())
    per_batch = grpo["per_device_train_batch_size"] * grpo.get("gradient_accumulation_steps", 1)
    out = {"seed": seed, "dynamic_sampling": on, "reached": reached is not None, "steps": len(upto),
           "completions": sum(per_batch * (1 + int(r.get("dynamic_sampling/extra_batches", 0))) for r in upto),
           "train_s": sum(float(r.get("step_time", 0.0)) for r in upto),
           "wall_s": (arrived[end] - arrived[0] + float(upto[0].get("step_time", 0.0))) if upto else 0.0,
           "kept": statistics.fmean(r["dynamic_sampling/kept"] for r in upto) if on and upto else None}
    print(json.dumps(out), flush=True)
    return out


def table(results: list[dict]) -> str:
    lines = ["| seed | dynamic sampling | reached 0.9 at step | completions | train s | wall s | kept groups |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        step = r["steps"] if r["reached"] else f"not by {r['steps']}"
        kept = f"{r['kept']:.2f}" if r["kept"] is not None else "—"
        lines.append(f"| {r['seed']} | {'on' if r['dynamic_sampling'] else 'off'} | {step} | {r['completions']} | "
                     f"{r['train_s']:.0f} | {r['wall_s']:.0f} | {kept} |")
    for on in (False, True):
        arm = [r for r in results if r["dynamic_sampling"] == on and r["reached"]]
        if arm:
            lines.append(f"| mean of {len(arm)} reached | {'on' if on else 'off'} | "
                         f"{statistics.fmean(r['steps'] for r in arm):.0f} | "
                         f"{statistics.fmean(r['completions'] for r in arm):.0f} | "
                         f"{statistics.fmean(r['train_s'] for r in arm):.0f} | "
                         f"{statistics.fmean(r['wall_s'] for r in arm):.0f} | |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3, help="how many seeds, both arms each")
    ap.add_argument("--first-seed", type=int, default=0, help="seeds first..first+N-1 (to finish a partial table)")
    ap.add_argument("--max-steps", type=int, default=400, help="give up on a run after this many steps")
    ap.add_argument("--max-batches", type=int, default=None, help="trainer.dynamic_sampling_max_batches")
    ap.add_argument("--target", type=float, default=0.9)
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--out", default="/tmp/mmr1-bench-dynamic-sampling")
    args = ap.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    results = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for on in (False, True):
            results.append(run_arm(seed, on, args))
            print(table(results), flush=True)
    print(f"\n{os.cpu_count()} CPUs visible; target {args.target} = {args.window}-step mean of {ACC}")


if __name__ == "__main__":
    main()
