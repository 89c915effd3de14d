"""Benchmark: the algorithms of conf/algorithm/ side by side on ``+experiment=tiny_count``, several seeds each.

    python benchmarks/algorithms.py                              # 4 algorithms x 3 seeds, 300 steps, 2 at a time
    python benchmarks/algorithms.py --seeds 1 --max-steps 100 --algorithms grpo_seed dapo

Each run is ``python -m mmr1.train +experiment=tiny_count algorithm=A trainer.seed=S trainer.max_steps=N`` (no
in-training evaluation, one thread), run to the end, then ``python -m mmr1.evaluate`` scores its ``final/`` model
greedily on the task's 100 held-out scenes. Per run:

- steps to 0.9: the first step whose 10-step mean of ``rewards/external_r1v_acc/mean`` (the training accuracy,
  over every completion generated in the step) reaches 0.9, or "not by N";
- completions and train s up to that step: ``per_device_train_batch_size`` per generation batch, plus DAPO's
  refill batches (``dynamic_sampling/extra_batches``); the sum of TRL's ``step_time`` (rollouts, rewards, forward
  and backward: the costs the algorithms change);
- final acc: the last 10 steps' training accuracy; held-out: mmr1.evaluate's greedy accuracy of final/;
- guard trips: the collapse guard's trip events (guard_events.jsonl), a rollback each.

``--jobs`` runs that many at once (each on one thread): the machine's load is printed with the table, since wall
and step times depend on it. The warm-start is built by the first run and cached for the others (excluded).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ACC = "rewards/external_r1v_acc/mean"
ALGORITHMS = ["grpo_seed", "dapo", "dr_grpo", "gspo"]


def _rows(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [r for r in rows if ACC in r]


def first_reaching(values: list[float], target: float, window: int) -> int | None:
    """Index of the first value whose trailing ``window``-mean reaches ``target``.

    >>> first_reaching([0.5, 1.0, 1.0, 0.8], 0.9, 2), first_reaching([0.1, 0.2], 0.9, 2)
    (2, None)
    """
    for i in range(window - 1, len(values)):
        if statistics.fmean(values[i - window + 1:i + 1]) >= target:
            return i
    return None


def measure(run_dir: Path, target: float, window: int) -> dict:
    rows = _rows(run_dir)
    acc = [float(r[ACC]) for r in rows]
    hit = first_reaching(acc, target, window)
    upto = rows[:(len(rows) if hit is None else hit + 1)]
    grpo = json.loads((run_dir / "grpo_args.json").read_text())
    per_batch = grpo["per_device_train_batch_size"] * grpo.get("gradient_accumulation_steps", 1)
    events = run_dir / "guard_events.jsonl"
    trips = sum(json.loads(line).get("event") == "trip" for line in events.read_text().splitlines()) \
        if events.exists() else 0
    evaluated = run_dir / "eval.json"
    return {"steps_logged": len(rows), "reached": hit is not None, "steps": len(upto),
            "completions": sum(per_batch * (1 + int(r.get("dynamic_sampling/extra_batches", 0))) for r in upto),
            "train_s": sum(float(r.get("step_time", 0.0)) for r in upto),
            "final_acc": statistics.fmean(acc[-window:]) if acc else None,
            "held_out": json.loads(evaluated.read_text())["accuracy"] if evaluated.exists() else None,
            "trips": trips}


def run(algorithm: str, seed: int, args: argparse.Namespace) -> dict:
    run_dir = Path(args.out) / f"{algorithm}-seed{seed}"
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with open(run_dir.with_suffix(".log"), "w") as log:
        for cmd in (
            ["-m", "mmr1.train", "+experiment=tiny_count", f"algorithm={algorithm}", f"trainer.seed={seed}",
             f"trainer.max_steps={args.max_steps}", "trainer.eval_strategy=no", "trainer.save_steps=100000",
             "resume=never", f"hydra.run.dir={run_dir}"],
            ["-m", "mmr1.evaluate", "+experiment=tiny_count", f"algorithm={algorithm}", f"eval.checkpoint={run_dir}",
             f"hydra.run.dir={run_dir}/eval"],
        ):
            done = subprocess.run([sys.executable, *cmd], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
            if done.returncode != 0:
                break
    out = {"algorithm": algorithm, "seed": seed, "returncode": done.returncode,
           **measure(run_dir, args.target, args.window)}
    print(json.dumps(out), flush=True)
    return out


def _cell(values: list, fmt: str) -> str:
    present = [v for v in values if v is not None]
    return format(statistics.fmean(present), fmt) if present else "—"


def table(results: list[dict], args: argparse.Namespace) -> str:
    lines = [f"| algorithm | seed | {args.target} at step | completions | train s | final acc ({args.window}) | "
             "held-out greedy | guard trips |", "|---|---|---|---|---|---|---|---|"]
    for r in sorted(results, key=lambda r: (ALGORITHMS.index(r["algorithm"]), r["seed"])):
        step = r["steps"] if r["reached"] else f"not by {r['steps_logged']}"
        held = "—" if r["held_out"] is None else f"{r['held_out']:.2f}"
        final = "—" if r["final_acc"] is None else f"{r['final_acc']:.2f}"
        lines.append(f"| {r['algorithm']} | {r['seed']} | {step} | {r['completions']} | {r['train_s']:.0f} | "
                     f"{final} | {held} | {r['trips']} |")
    for name in ALGORITHMS:
        arm = [r for r in results if r["algorithm"] == name]
        hit = [r for r in arm if r["reached"]]
        if arm:
            cells = [_cell([r[k] for r in hit], ".0f") for k in ("steps", "completions", "train_s")]
            cells += [_cell([r[k] for r in arm], ".2f") for k in ("final_acc", "held_out")]
            lines.append(f"| **{name}**, mean | {len(hit)}/{len(arm)} reached | " + " | ".join(cells)
                         + f" | {sum(r['trips'] for r in arm)} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--algorithms", nargs="+", default=ALGORITHMS, choices=ALGORITHMS)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds first..first+N-1 (to finish a partial table)")
    ap.add_argument("--max-steps", type=int, default=300)
    ap.add_argument("--jobs", type=int, default=2, help="runs at once, one thread each")
    ap.add_argument("--target", type=float, default=0.9)
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--out", default="/tmp/mmr1-bench-algorithms")
    args = ap.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    # The warm-start is built once, by a first run alone: parallel runs would all wait on its lock anyway.
    subprocess.run([sys.executable, "-m", "mmr1.train", "+experiment=tiny_count", "trainer.max_steps=1",
                    "trainer.eval_strategy=no", f"hydra.run.dir={args.out}/warmup"], cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL, env={**os.environ, "WANDB_MODE": "disabled"})
    started = time.monotonic()
    jobs = [(a, s) for s in range(args.first_seed, args.first_seed + args.seeds) for a in args.algorithms]
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda job: run(*job, args), jobs))
    print(table(results, args))
    load = os.getloadavg()
    print(f"\n{len(results)} runs in {time.monotonic() - started:.0f} s, {args.jobs} at a time; {os.cpu_count()} CPUs, "
          f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min) at the end")


if __name__ == "__main__":
    main()
