"""Benchmark: mmr1's `external_r1v_acc` against the seed's MultiModalAccuracyORM, in the same run.

    python benchmarks/rewards.py            # ~1-2 minutes on 2 cores
    python benchmarks/rewards.py --scale 2  # twice the prompts

Builds a deterministic corpus of GRPO-shaped groups (prompts x num_generations completions:
counting, geometry numbers/degrees/LaTeX, chart answers, malformed items), scores it with the seed's
loop (benchmarks/seed_orm.py, in this process's main thread, as ms-swift called it) and with mmr1's
sandboxed reward (default `conf/reward/r1v.yaml` settings, called per generation batch as TRL does),
and prints agreement, completions/s, the ratio, p50/p99 latency and the worst single item.
Pathological items (inputs known to stall math-verify) are scored separately: the seed side runs
each in a child process under a guard so a hang cannot stall the benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from seed_orm import MultiModalAccuracyORM  # noqa: E402

from mmr1.rewards import RewardConfig, build_reward_funcs  # noqa: E402
from mmr1.rewards.accuracy import WARMUP  # noqa: E402

NUM_GENERATIONS = 8  # the seed's GeoQA / open-r1 setting
CALL_SIZE = 16  # completions per reward call: per_device_train_batch_size 8 x 2 accumulation steps
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven"]
COLORS = ["red", "blue", "green", "yellow", "purple", "cyan", "gray", "brown"]
SHAPES = ["cube", "sphere", "cylinder"]
STATES = ["Alabama", "Texas", "Ohio", "Maine", "Utah", "Oregon", "Nevada", "Iowa"]


def counting_group(rng: random.Random) -> tuple[str, list[str]]:
    n = rng.randint(2, 10)
    objects = [
        f"a {rng.choice(['small', 'large'])} {rng.choice(COLORS)} {rng.choice(['metal', 'rubber'])} "
        f"{rng.choice(SHAPES)}"
        for _ in range(n)
    ]
    completions = []
    for _ in range(NUM_GENERATIONS):
        seen = list(objects)
        if rng.random() < 0.35:  # miscounts: a missed or a doubled object
            seen = seen[:-1] if rng.random() < 0.5 else seen + [seen[0]]
        k = len(seen)
        think = (
            "<think>Let me count the objects one by one. "
            + ", ".join(f"{i + 1}. {o}" for i, o in enumerate(seen))
            + f". That makes {k} objects.</think>"
        )
        r = rng.random()
        if r < 0.70:
            completions.append(f"{think}\n<answer>{k}</answer>")
        elif r < 0.80:
            completions.append(f"{think}\n<answer> {k} </answer>")
        elif r < 0.86:
            completions.append(f"{think}\n<answer>{WORDS[k] if k < len(WORDS) else k}</answer>")
        elif r < 0.92:
            completions.append(f"{think}\n<answer>{k} objects</answer>")
        elif r < 0.96:
            completions.append(f"{think} There are {k} objects in the image.")
        else:
            completions.append(f"<answer>{k}</answer>")
    return f"<answer> {n} </answer>", completions


GEOMETRY_STEPS = [
    "Since AB is tangent to circle O at point A, the radius OA is perpendicular to AB, "
    "so \\angle OAB = 90^\\circ.",
    "Given \\angle ABO = {x}^\\circ, in triangle OAB we get "
    "\\angle AOB = 90^\\circ - {x}^\\circ = {y}^\\circ.",
    "Points A, C and D lie on circle O, so by the inscribed angle theorem "
    "\\angle ADC = \\frac{{1}}{{2}} \\angle AOC = \\frac{{1}}{{2}} \\times {y}^\\circ.",
    "Let me double-check the relation between the arc AC and the central angle: the arc measures {y}^\\circ.",
    "The chord AC subtends the central angle {y}^\\circ, so its length is 2r\\sin({z:g}^\\circ).",
    "With r = {x} we have AB = r\\tan(\\angle AOB) and OB = \\sqrt{{r^2 + AB^2}}.",
    "The area of triangle OAB is \\frac{{1}}{{2}} \\cdot OA \\cdot AB = \\frac{{{x}}}{{2}} AB.",
    "Since OC = OA = r, triangle OAC is isosceles and \\angle OCA = \\frac{{180^\\circ - {y}^\\circ}}{{2}}.",
    "Therefore the quantity asked for follows from these relations; "
    "computing it step by step gives the value.",
]


def geometry_group(rng: random.Random) -> tuple[str, list[str]]:
    # ~250-token completions (the seed's GeoQA curve settles there); GeoQA-R1V solutions are
    # "<answer>N</answer>" (see conf/dataset/synthetic_geoqa.yaml).
    x = rng.randint(20, 70)
    y, z = 90 - x, (90 - x) / 2
    kind = rng.choice(["deg", "int", "frac", "sqrt", "dec"])
    truth = {
        "deg": f"{z:g}°",
        "int": f"{y}",
        "frac": f"\\frac{{{y}}}{{2}}",
        "sqrt": f"{x}\\sqrt{{3}}",
        "dec": f"{y / 4:g}",
    }[kind]
    solution = f"<answer>{truth}</answer>"
    right = {
        "deg": [f"{z:g}", f"{z:g}°", f"${z:g}^\\circ$", f"The measure of angle ADC is {z:g} degrees."],
        "int": [f"{y}", f"${y}$", f"{y}.0"],
        "frac": [f"\\frac{{{y}}}{{2}}", f"{y / 2:g}", f"${y}/2$"],
        "sqrt": [f"{x}\\sqrt{{3}}", f"${x}\\sqrt{{3}}$", f"{x * 3**0.5:.4f}"],
        "dec": [f"{y / 4:g}", f"\\frac{{{y}}}{{4}}", f"${y / 4:g}$"],
    }[kind]
    wrong = [f"{y}", f"{x}", f"{z + 10:g}", f"\\frac{{{x}}}{{3}}", "none of the above"]
    completions = []
    for _ in range(NUM_GENERATIONS):
        steps = [t.format(x=x, y=y, z=z) for t in rng.sample(GEOMETRY_STEPS, rng.randint(5, 8))]
        think = "<think>\n" + "\n".join(steps) + "\n</think>"
        answer = rng.choice(right) if rng.random() < 0.45 else rng.choice(wrong)
        fmt = rng.random()
        if fmt < 0.75:
            completions.append(
                f"{think}\n<answer>\n{answer}\n</answer>"
                if fmt < 0.2
                else f"{think}\n<answer>{answer}</answer>"
            )
        elif fmt < 0.9:
            completions.append(f"{think}\nSo the answer is $\\boxed{{{answer}}}$.")
        else:
            completions.append(f"{think}\n<answer> {answer} </answer>")
    return solution, completions


def chart_group(rng: random.Random) -> tuple[str, list[str]]:
    # ~200-token completions (the seed's open-r1 curve); answers are words, ranges, numbers, fractions.
    kind = rng.choice(["state", "pct", "num", "frac"])
    a = rng.randint(2, 40)
    truth = {
        "state": rng.choice(STATES),
        "pct": f"{a / 2:.1f}% - {a / 2 + 0.5:.1f}%",
        "num": str(a * 7),
        "frac": f"\\frac{{{a}}}{{{a + 3}}}",
    }[kind]
    reasoning = (
        f"The chart shows values for several categories. The legend maps colours to ranges; "
        f"reading the bars from left to right gives {a}, {a * 2}, {a * 7} and {a + 3}. "
        f"Comparing them, the requested quantity corresponds to {truth}."
    )
    solution = rng.choice(
        [
            f"<answer>{truth}</answer>",
            f"<answer> {truth} </answer>",
            f"<think>{reasoning}</think>\n<answer> {truth} </answer>",
        ]
    )
    alternatives = [truth, truth.lower(), f"{a * 2}", f"{a + 3}", rng.choice(STATES), f"{a / (a + 3):.3f}"]
    completions = []
    for _ in range(NUM_GENERATIONS):
        answer = truth if rng.random() < 0.4 else rng.choice(alternatives)
        sentences = [
            f"The image provided shows a colour-coded chart with {rng.randint(4, 9)} categories.",
            f"According to the legend at the bottom, the lowest range "
            f"({a / 2:.1f}% - {a / 2 + 0.5:.1f}%) is white.",
            f"Reading the bars from left to right, the values are {a}, {a * 2}, {a * 7} and {a + 3}.",
            f"The ratio of the first to the last is {a}/{a + 3}, roughly {a / (a + 3):.3f}.",
            f"{rng.choice(STATES)} is shaded darker than {rng.choice(STATES)}, so it is not the lowest.",
            f"Summing the visible values gives {a + a * 2 + a * 7 + a + 3}, "
            "which is consistent with the axis.",
            f"The title says the data are from {rng.randint(1990, 2023)}, so no later values are shown.",
            f"The second bar is exactly twice the first ({a * 2} = 2 \\times {a}), as the gridlines confirm.",
            f"Therefore, based on the chart, the answer is {answer}.",
        ]
        think = (
            "<think>\n"
            + " ".join(sentences[:2] + rng.sample(sentences[2:8], 4) + sentences[8:])
            + "\n</think>"
        )
        completions.append(
            f"{think}\n<answer>{answer}</answer>"
            if rng.random() < 0.85
            else f"{think}\nTherefore, the answer is {answer}."
        )
    return solution, completions


def malformed_group(rng: random.Random) -> tuple[str, list[str]]:
    n = rng.randint(1, 9)
    pool = [
        "",
        "   \n ",
        f"<answer>{n}",
        f"<think>unfinished reasoning about {n} objects",
        f"<answer>{n}</answer>2</answer>2</answer>",  # the length-cap reward hack
        ("I will count again. " * 60)[:1200],  # truncated at the length cap, no tags
        f"<think><answer>{n}</answer></think><answer>{n + 1}</answer>",
        "<answer>三</answer>",
        "1" * 400,
        f"<answer>{'(' * 50}{n}{')' * 50}</answer>",
        f"<think>{'$' * 300}</think><answer>{n}</answer>",
    ]
    return f"<answer> {n} </answer>", [rng.choice(pool) for _ in range(NUM_GENERATIONS)]


# Inputs known to stall math-verify (its issues 59/63/65 and nested powers); scored one per group.
PATHOLOGICAL = [
    (
        "\\boxed{\\dfrac{5^{\\left(5^{\\left(5^{\\left(5^5\\right)}\\right)} - 4\\right)} - 5}{16}}",
        "\\boxed{3}",
    ),
    ("The answer is $9^{9^{9^{9}}}$", "<answer> 7 </answer>"),
    ("<think>big</think> $\\boxed{(10^{6})!}$", "<answer> 3 </answer>"),
    ("So x = $2^{2^{32}} - 1$", "$5$"),
]


def build_corpus(scale: int, seed: int = 20250101) -> list[tuple[str, list[str]]]:
    rng = random.Random(seed)
    makers = [counting_group] * 16 + [geometry_group] * 16 + [chart_group] * 12 + [malformed_group] * 4
    groups = [make(rng) for make in makers * scale]
    rng.shuffle(groups)
    return groups


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of processes (Linux /proc): the workers' share of mmr1's cost."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return total


def seed_guarded(completion: str, solution: str, guard_s: float) -> tuple[float | None, float]:
    code = (
        "import json,sys,time; sys.path.insert(0, sys.argv[1]);"
        "from seed_orm import MultiModalAccuracyORM as S;"
        "from math_verify import parse; parse('$1$'); t=time.perf_counter();"
        "r=S()([sys.argv[2]],[sys.argv[3]])[0]; print(json.dumps([r, time.perf_counter()-t]))"
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", code, str(HERE), completion, solution],
            capture_output=True,
            text=True,
            timeout=guard_s,
        )
        value, seconds = json.loads(out.stdout.strip().splitlines()[-1])
        return value, seconds
    except (subprocess.TimeoutExpired, IndexError, ValueError):
        return None, guard_s


def score_seed(seed, completions, solutions, stats) -> list[float]:
    """The seed's loop, one item at a time (to time items), grouped into TRL-sized calls."""
    values = []
    cpu0, t0 = time.process_time(), time.perf_counter()
    for start in range(0, len(completions), CALL_SIZE):
        call_t = time.perf_counter()
        for c, s in zip(completions[start : start + CALL_SIZE], solutions[start : start + CALL_SIZE]):
            t = time.perf_counter()
            values += seed([c], [s])
            stats["item"].append(time.perf_counter() - t)
        stats["call"].append(time.perf_counter() - call_t)
    stats["wall"] += time.perf_counter() - t0
    stats["cpu"] += time.process_time() - cpu0
    return values


def score_mmr1(acc, completions, solutions, stats) -> list[float]:
    values = []
    pids = acc.pool.pids()
    cpu0, t0 = time.process_time() + cpu_seconds(pids), time.perf_counter()
    for start in range(0, len(completions), CALL_SIZE):
        call_t = time.perf_counter()
        values += acc(
            completions=completions[start : start + CALL_SIZE], solution=solutions[start : start + CALL_SIZE]
        )
        stats["call"].append(time.perf_counter() - call_t)
        stats["item"] += acc.last_seconds
    stats["wall"] += time.perf_counter() - t0
    stats["cpu"] += time.process_time() + cpu_seconds(pids) - cpu0
    return values


def ms(values: list[float]) -> str:
    return f"{1e3 * pct(values, 50):.2f}/{1e3 * pct(values, 99):.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=1, help="multiply the number of prompts per round")
    parser.add_argument("--rounds", type=int, default=3, help="fresh corpora, scored by both sides in turn")
    parser.add_argument("--guard-s", type=float, default=60.0, help="seed-side guard per pathological item")
    parser.add_argument("--skip-pathological", action="store_true")
    args = parser.parse_args()

    cfg = RewardConfig()
    seed = MultiModalAccuracyORM()
    seed([c for c, _ in WARMUP], [s for _, s in WARMUP])  # the same warm-up mmr1's workers get
    t0 = time.perf_counter()
    acc, fmt = build_reward_funcs(cfg, None)
    acc.pool.wait_ready()
    startup = time.perf_counter() - t0
    print(
        f"cpu cores: {os.cpu_count()}, load avg at start: {os.getloadavg()[0]:.2f} "
        "(others share this machine)"
    )

    # Each round a new corpus (no cache carries over between rounds), the two sides in turn so
    # that load from other processes falls on both.
    seed_st = {"item": [], "call": [], "wall": 0.0, "cpu": 0.0}
    our_st = {"item": [], "call": [], "wall": 0.0, "cpu": 0.0}
    seed_values, ours, fmt_wall, n = [], [], 0.0, 0
    for r in range(args.rounds):
        groups = build_corpus(args.scale, seed=20250101 + r)
        completions = [c for _, comps in groups for c in comps]
        solutions = [s for s, comps in groups for _ in comps]
        n += len(completions)
        seed_values += score_seed(seed, completions, solutions, seed_st)
        ours += score_mmr1(acc, completions, solutions, our_st)
        t0 = time.perf_counter()
        for start in range(0, len(completions), CALL_SIZE):
            fmt(completions=completions[start : start + CALL_SIZE])
        fmt_wall += time.perf_counter() - t0

    agree = sum(a == b for a, b in zip(seed_values, ours))
    print(
        f"\nmain corpus: {args.rounds} rounds x {len(groups)} prompts x {NUM_GENERATIONS} generations = {n} "
        f"completions (seed mean reward {statistics.mean(seed_values):.3f})"
    )
    print(f"  agreement with the seed: {agree}/{n} = {100 * agree / n:.2f} %")
    print(f"  seed : {n / seed_st['wall']:8.1f} completions/s  ({seed_st['wall']:.2f} s)")
    print(
        f"  mmr1 : {n / our_st['wall']:8.1f} completions/s  ({our_st['wall']:.2f} s; "
        f"{cfg.num_workers} workers, "
        f"{acc.stats['scored_in_workers']} items sent to them; start-up {startup:.2f} s, not counted)"
    )
    print(f"  ratio: {seed_st['wall'] / our_st['wall']:.2f}x the seed's throughput")
    print(
        f"  CPU time: seed {seed_st['cpu']:.2f} s, mmr1 {our_st['cpu']:.2f} s (trainer + workers): "
        f"{seed_st['cpu'] / our_st['cpu']:.2f}x less work; the rest is parallelism"
    )
    print(f"  per item p50/p99: seed {ms(seed_st['item'])}, mmr1 {ms(our_st['item'])}")
    print(f"  per call of {CALL_SIZE} p50/p99: seed {ms(seed_st['call'])}, mmr1 {ms(our_st['call'])}")
    print(
        f"  worst single item: seed {max(seed_st['item']):.3f} s, mmr1 {max(our_st['item']):.3f} s "
        f"(timeout_s {cfg.timeout_s})"
    )
    print(f"  format reward: {n / fmt_wall:.0f} completions/s (in-process regex)")
    print(f"  mmr1 errors/timeouts: {acc.stats['errors']}/{acc.stats['timeouts']}")
    if not args.skip_pathological:
        pathological(acc, cfg, args.guard_s)
    acc.close()


def pathological(acc, cfg: RewardConfig, guard_s: float) -> None:
    print(
        f"\npathological ({len(PATHOLOGICAL)} items; the seed in a child process each, guard {guard_s:.0f} s)"
    )
    t0 = time.perf_counter()
    ours = acc(completions=[c for c, _ in PATHOLOGICAL], solution=[s for _, s in PATHOLOGICAL])
    total, item_s = time.perf_counter() - t0, acc.last_seconds
    terminated = agree = 0
    for (c, s), value_ours, seconds_ours in zip(PATHOLOGICAL, ours, item_s):
        value, seconds = seed_guarded(c, s, guard_s)
        status = "hung (excluded)" if value is None else f"{value} in {seconds:.2f} s"
        terminated += value is not None
        agree += value is not None and value == value_ours
        print(f"  {c[:48]!r:52} seed {status:18} | mmr1 {value_ours} in {seconds_ours:.2f} s")
    print(
        f"  seed terminated on {terminated}/{len(PATHOLOGICAL)}; agreement where it did: {agree}/{terminated}"
    )
    print(
        f"  mmr1: the {len(PATHOLOGICAL)} in one call took {total:.2f} s; worst item {max(item_s):.2f} s "
        f"(<= timeout_s {cfg.timeout_s}: {max(item_s) <= cfg.timeout_s}); timeouts {acc.stats['timeouts']}"
    )


if __name__ == "__main__":
    main()
