"""Evaluate: ``python -m mmr1.evaluate [+experiment=E] [eval.checkpoint=PATH] [eval.benchmark=NAME] [key=value ...]``.

Greedy accuracy (and, with ``eval.num_samples=n``, sampled pass@k) of a model, written to ``eval.json`` with
per-sample records. The config is the training config (same overrides, same data seed, so the same held-out rows)
plus the ``eval`` node (conf/evaluate.yaml; its keys: mmr1.config.schema.EvalConfig).

What is scored:
- no benchmark: the task's held-out split (a task mixture's: each task's too, under ``tasks``), by the reward
  functions training uses (``reward.funcs``, sandboxed);
- ``eval.benchmark=NAME`` (conf/eval/benchmark/): a fixed test set under its authors' protocol (their prompt,
  greedy decoding, token budget, image limits, answer extraction; mmr1.evaluation), its score as ``accuracy`` with
  the training reward's beside it and the published baselines (``baselines``);
- ``eval.completions=FILE``: completions made elsewhere, scored under the benchmark's protocol, nothing generated.

What is evaluated (``eval.checkpoint``):
- null: the model training would start from (``model.name_or_path`` plus its cached warm-start), i.e. the
  "before" of a run;
- a run directory: its ``final/`` model; ``eval.json`` then goes into the run directory, where the sweep
  report picks it up;
- a checkpoint directory (``.../checkpoint-350``, ``.../final``) or a hub id.

Who generates: vLLM when it is installed (``eval.backend``), a vLLM server (``eval.server_url``), or transformers.
"""

from __future__ import annotations

import functools
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm

from mmr1.config import CONF_DIR
from mmr1.config.schema import register_configs
from mmr1.config.typed import typed_config
from mmr1.data import build_datasets, load_system_prompt, resolve_pixel_limits
from mmr1.evaluation.completions import read_completions
from mmr1.evaluation.config import BenchmarkConfig, Rows
from mmr1.evaluation.engines import make_generator
from mmr1.evaluation.protocol import apply_scorer, benchmark_summary, check_benchmark, is_benchmark, published
from mmr1.evaluation.testsets import load_rows
from mmr1.models import resolve_model_path
from mmr1.models.policy import prepare_policy
from mmr1.rewards import build_reward_funcs
from mmr1.rewards import shutdown as shutdown_rewards
from mmr1.tracking.run_dir import prepare_run_dir, write_json
from mmr1.tracking.series import reward_roles

log = logging.getLogger("mmr1.evaluate")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al. 2021): 1 - C(n-c, k) / C(n, k)."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per prompt (eval.num_samples={n})")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def score(reward_funcs, rows: list[dict], completions: list[list[dict]]) -> None:
    """Add ``rewards: {name: value}`` to every completion, calling each reward as TRL does."""
    flat_rows = [r for r, cs in zip(rows, completions) for _ in cs]
    flat = [c for cs in completions for c in cs]
    columns = {k: [r[k] for r in flat_rows] for k in flat_rows[0] if k not in ("prompt", "image", "images")}
    conv = [[{"role": "assistant", "content": c["text"]}] for c in flat]
    prompts = [r["prompt"] for r in flat_rows]
    for fn in reward_funcs:
        values = fn(prompts=prompts, completions=conv, **columns)
        for c, v in zip(flat, values):
            c.setdefault("rewards", {})[fn.__name__] = v


def _mean(xs: list[float | None]) -> float | None:
    vals = [float(x) for x in xs if x is not None]
    return sum(vals) / len(vals) if vals else None


def summarize(completions: list[dict], acc: str, fmt: str | None, names: list[str]) -> dict[str, Any]:
    return {
        "accuracy": _mean([c["rewards"].get(acc) for c in completions]),
        "format_rate": _mean([c["rewards"].get(fmt) for c in completions]) if fmt else None,
        # None for completions made elsewhere (eval.completions): their token counts are not known here.
        "mean_length": _mean([c["length"] for c in completions]),
        "truncated_rate": _mean([None if c["truncated"] is None else float(c["truncated"]) for c in completions]),
        "rewards": {n: _mean([c["rewards"].get(n) for c in completions]) for n in names},
    }


def resolve_target(cfg: DictConfig, limits) -> tuple[str, str, Path | None]:
    """(model path, processor path, run dir the result belongs to or None)."""
    ckpt = cfg.eval.checkpoint
    if ckpt is None:
        start = prepare_policy(cfg).path  # the model GRPO would start from (its warm-start, if any)
        return start, start, None
    path = Path(ckpt).expanduser()
    if path.is_dir() and (path / "final").is_dir():
        return str(path / "final"), str(path / "final"), path
    if path.is_dir():
        has_processor = any((path / f).exists() for f in ("preprocessor_config.json", "processor_config.json"))
        # Trainer checkpoints hold weights only: the processor is the run's final/ one or the base model's.
        proc = str(path) if has_processor else (str(path.parent / "final") if (path.parent / "final").is_dir()
                                                 else resolve_model_path(cfg.model))
        return str(path), proc, None
    return str(ckpt), str(ckpt), None  # a hub id


def evaluate(cfg: DictConfig, out_dir: str | Path) -> dict[str, Any]:
    """Run the evaluation described by ``cfg.eval``; write and return the eval.json content."""
    ev = cfg.eval
    _check(ev)
    started = time.time()
    bench = typed_config(BenchmarkConfig, ev.benchmark, key="eval.benchmark")
    check_benchmark(bench)
    # A benchmark's image limits are its authors'; without one, the model's (what training saw).
    limits = resolve_pixel_limits(bench.max_pixels or cfg.model.max_pixels, bench.min_pixels or cfg.model.min_pixels)
    reported: float | None = None
    sampled: list[list[dict]] = []
    max_new = bench.max_new_tokens or ev.max_new_tokens or cfg.trainer.max_completion_length
    sampling = _sampling(cfg)
    if ev.completions:  # scored as they are: nothing is loaded or generated
        rows, greedy, reported = read_completions(ev.completions)
        model_path = None
        out_path = _out_path(ev, None, out_dir)
        reward_funcs, acc, fmt, names = _rewards(cfg, out_path)
        score(reward_funcs, rows, greedy)
        apply_scorer(bench, acc, rows, greedy)
    else:
        model_path, proc_path, run_dir = resolve_target(cfg, limits)
        rows = _rows(cfg, bench, limits)
        out_path = _out_path(ev, run_dir, out_dir)
        reward_funcs, acc, fmt, names = _rewards(cfg, out_path)
        gen = make_generator(cfg, model_path, proc_path, limits, max_new=max_new,
                             images_per_prompt=max(len(r["images"]) if r.get("images") is not None else 1
                                                   for r in rows),
                             videos_per_prompt=max(len(r.get("videos") or []) for r in rows))
        protocol = functools.partial(apply_scorer, bench, acc) if is_benchmark(bench) else None
        greedy, sampled = _rollouts(ev, gen, reward_funcs, rows, acc, max_new, sampling,
                                    desc=Path(model_path).name, protocol=protocol)
    result: dict[str, Any] = {"model": model_path, "checkpoint": ev.checkpoint, "dataset": cfg.dataset.name,
                              "split": ev.split, "rows": len(rows), "accuracy_reward": acc, "format_reward": fmt,
                              "max_new_tokens": max_new, "completions": ev.completions}
    result.update(_scores(ev, rows, greedy, sampled, sampling, acc, fmt, names))
    if is_benchmark(bench) or ev.completions:
        result.update(benchmark_summary(bench, rows, greedy or sampled, acc, reported))
    result["wall_time_s"] = round(time.time() - started, 1)
    result["records"] = [_record(i, r, greedy, sampled) for i, r in enumerate(rows)]
    write_json(out_path, result)
    shutdown_rewards()
    log.info("eval: %s", {k: v for k, v in result.items() if k != "records"})
    _print(result, bench, out_path)
    return result


def _out_path(ev: DictConfig, run_dir: Path | None, out_dir: str | Path) -> Path:
    out_path = Path(ev.output) if ev.output else (run_dir or prepare_run_dir(out_dir)) / "eval.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)  # eval.output may name a folder not made yet
    return out_path


def _rewards(cfg: DictConfig, out_path: Path) -> tuple[list, str, str | None, list[str]]:
    """The training reward functions (sandboxed, their logs beside eval.json), and which is accuracy, which format."""
    reward_funcs = build_reward_funcs(cfg.reward, out_path.parent)
    names = [fn.__name__ for fn in reward_funcs]
    acc, fmt = reward_roles(names)
    return reward_funcs, acc or names[0], fmt, names  # only `format` configured: it is what there is to score


def _record(i: int, r: dict, greedy: list[list[dict]], sampled: list[list[dict]]) -> dict[str, Any]:
    head: dict[str, Any] = {"index": i, **({"task": r["task"]} if "task" in r else {})}
    if "problem" in r:  # a task's held-out row
        head.update(problem=r.get("problem"), solution=r.get("solution"),
                    image_id=r.get("image_id", r.get("image_ids")))  # image_ids: a row with several images
    if "question" in r:  # a benchmark's row, or a completions file's
        head.update(question=r["question"], ground_truth=r["ground_truth"],
                    **({"image_path": r["image_path"]} if "image_path" in r else {}))
    return {**head, **({"greedy": greedy[i][0]} if greedy else {}), **({"samples": sampled[i]} if sampled else {})}


def _print(result: dict[str, Any], bench: BenchmarkConfig, out_path: Path) -> None:
    fmt = result.get("format_rate")
    length = result.get("mean_length")
    print(f"accuracy={result['accuracy']:.3f} format_rate={fmt if fmt is None else round(fmt, 3)} "
          f"mean_length={length if length is None else round(length, 1)} rows={result['rows']} -> {out_path}")
    if "benchmark" in result:
        print(f"  {bench.name}: {result['correct']}/{result['rows']} by {bench.scorer} ({bench.protocol_source}); "
              f"training reward {result['reward_accuracy']:.3f}, {len(result['disagreements'])} rows scored apart")
        if result.get("reported_accuracy") is not None:
            print(f"  the file's own accuracy: {result['reported_accuracy']:.4f}")
        if result["baselines"]:
            print(f"  published: {published(result['baselines'], training=True)}")
    for task, stats in result.get("tasks", {}).items():
        print(f"  {task}: accuracy={stats['accuracy']:.3f} rows={stats['rows']}")


def _check(ev: DictConfig) -> None:
    if ev.num_samples and max(ev.pass_k) > ev.num_samples:
        raise ValueError(f"eval.pass_k={list(ev.pass_k)} needs eval.num_samples >= {max(ev.pass_k)}")
    if not ev.greedy and not ev.num_samples:
        raise ValueError("eval.greedy=false needs eval.num_samples > 0: nothing to evaluate")


def _rows(cfg: DictConfig, bench: BenchmarkConfig, limits: Any) -> list[dict]:
    """A benchmark's test rows (its file, its prompt), or the task's held-out rows."""
    if bench.rows == Rows.jsonl:
        return load_rows(bench, system_prompt=load_system_prompt(cfg.dataset.system_prompt),
                         query_suffix=cfg.dataset.query_suffix, limit=cfg.eval.limit)
    rows = _held_out_rows(cfg, limits)
    if bench.rows == Rows.held_out:  # question and answer under the benchmark's names, for the scorer and records
        for i, r in enumerate(rows):
            r.update(index=i, question=r.get("problem"), ground_truth=r.get("solution"))
    return rows


def _held_out_rows(cfg: DictConfig, limits: Any) -> list[dict]:
    """The split's rows, built with the training seed: the same held-out rows as training."""
    ev = cfg.eval
    data = build_datasets(cfg.dataset, min_pixels=limits.min_pixels, max_pixels=limits.max_pixels,
                          seed=cfg.trainer.seed, video=cfg.model.video)
    split = data.eval if ev.split == "eval" else data.train if ev.split == "train" else None
    if split is None:
        raise ValueError(f"eval.split={ev.split!r}: no such split (dataset.eval_size={cfg.dataset.eval_size}; "
                         "use eval.split=eval with dataset.eval_size > 0, or eval.split=train)")
    return [split[i] for i in range(len(split) if ev.limit is None else min(ev.limit, len(split)))]


def _sampling(cfg: DictConfig) -> dict[str, Any]:
    """Sampling settings: eval's own, else the trainer's (what rollouts used)."""
    ev, tr = cfg.eval, cfg.trainer
    return {"temperature": tr.temperature if ev.temperature is None else ev.temperature,
            "top_p": tr.top_p if ev.top_p is None else ev.top_p,
            "top_k": tr.top_k if ev.top_k is None else ev.top_k}


def _rollouts(ev: DictConfig, gen: Any, reward_funcs: list, rows: list[dict], acc: str, max_new: int,
              sampling: dict[str, Any], desc: str, protocol: Any = None) -> tuple[list[list[dict]], list[list[dict]]]:
    """Greedy and sampled completions per row, scored (by the rewards, and by a benchmark's ``protocol`` scorer),
    with a progress bar showing the running accuracy (the protocol's when there is one)."""
    torch.manual_seed(ev.seed)
    greedy: list[list[dict]] = []
    sampled: list[list[dict]] = []
    bar = tqdm(total=len(rows), desc=f"eval {desc}", unit="prompt", dynamic_ncols=True)
    for i in range(0, len(rows), ev.batch_size):
        batch = rows[i:i + ev.batch_size]
        if ev.greedy:
            g = gen(batch, n=1, do_sample=False, max_new_tokens=max_new)
            score(reward_funcs, batch, g)
            if protocol is not None:
                protocol(batch, g)
            greedy += g
        if ev.num_samples:
            s = gen(batch, n=ev.num_samples, do_sample=True, max_new_tokens=max_new, **sampling)
            score(reward_funcs, batch, s)
            if protocol is not None:
                protocol(batch, s)
            sampled += s
        bar.update(len(batch))
        done = [c[0] for c in greedy] if greedy else [c for cs in sampled for c in cs]
        hits = [float(c["correct"]) if "correct" in c else c["rewards"].get(acc) for c in done]
        bar.set_postfix(acc=f"{_mean(hits):.3f}")
    bar.close()
    return greedy, sampled


def _scores(ev: DictConfig, rows: list[dict], greedy: list[list[dict]], sampled: list[list[dict]],
            sampling: dict[str, Any], acc: str, fmt: str | None, names: list[str]) -> dict[str, Any]:
    """The headline numbers (greedy, else the samples'), pass@k, and a mixture's numbers per task."""
    out: dict[str, Any] = {}
    if greedy:
        out.update(summarize([c[0] for c in greedy], acc, fmt, names), mode="greedy")
    if sampled:
        n = ev.num_samples
        correct = [sum(1 for c in cs if (c["rewards"].get(acc) or 0) >= 1.0) for cs in sampled]
        stats = summarize([c for cs in sampled for c in cs], acc, fmt, names)
        stats.update(n=n, **sampling,
                     pass_at_k={str(k): sum(pass_at_k(n, c, k) for c in correct) / len(correct) for k in ev.pass_k})
        out["sampled"] = stats
        if not greedy:  # headline numbers from the samples
            out.update({k: stats[k] for k in ("accuracy", "format_rate", "mean_length", "truncated_rate")},
                       mode=f"sampled (n={n})")
    tasks = [r.get("task") for r in rows]
    if any(t is not None for t in tasks):  # a task mixture (mmr1.data.mixture): the headline numbers per task
        per_row = [[c[0]] for c in greedy] if greedy else sampled
        out["tasks"] = {t: {"rows": tasks.count(t), **summarize(
            [c for cs, rt in zip(per_row, tasks, strict=True) if rt == t for c in cs], acc, fmt, names)}
            for t in dict.fromkeys(tasks)}
    return out


@hydra.main(config_path=CONF_DIR, config_name="evaluate", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> float | None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    result = evaluate(cfg, cfg.run_dir)
    return result.get("accuracy")


def group_overrides(argv: list[str]) -> list[str]:
    """``eval.benchmark=NAME`` -> ``eval/benchmark=NAME``: Hydra picks a group's option with ``/``, and read with a
    dot the override would set the node to a string (a schema error). Keys under it (``eval.benchmark.path=F``)
    and the multirun form (``eval.benchmark=a,b``) pass as they are, respectively are rewritten the same way.

    >>> group_overrides(["eval.benchmark=geoqa_test", "eval.benchmark.path=f.jsonl", "eval.limit=3"])
    ['eval/benchmark=geoqa_test', 'eval.benchmark.path=f.jsonl', 'eval.limit=3']
    """
    return [("eval/benchmark=" + a.split("=", 1)[1]) if a.startswith("eval.benchmark=") else a for a in argv]


def main() -> None:
    register_configs()
    sys.argv[1:] = group_overrides(sys.argv[1:])
    _hydra_main()


if __name__ == "__main__":
    main()
