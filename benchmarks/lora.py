"""Benchmark: LoRA against full fine-tuning on the tiny Qwen2.5-VL, side by side in one process.

    python benchmarks/lora.py                  # ~1 minute on 2 cores
    python benchmarks/lora.py --steps 5 --completion 256 --checkpointing

For each mode, a fresh tiny model (same seed) with TRL's fused LM head (what GRPOTrainer installs) and, for LoRA,
mmr1's adapters (``model.lora`` defaults: r 8, alpha 32, all-linear, through ``mmr1.models.lora.peft_config``),
trains the GRPO micro-batch of tests/launch/test_memory.py (8 rows of 100 text + 64 image + 512 completion tokens;
the clipped surrogate, backward, AdamW on the trainable parameters). Reported: the trainable share, seconds per
step (median of ``--steps`` after a warm-up), and memory: weights + Adam states (counted from their tensors) + the
step's peak above them (the kernel's resident high-water mark, reset before the step: /proc/self/clear_refs),
next to mmr1's estimate for the same micro-batch (mmr1.launch.memory). Then, on paper, the seed's GeoQA layout
(Qwen2.5-VL-3B, 6 trainers, ZeRO-3) under full, lora and qlora.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import re
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests"))

# glibc hands freed tensors back to the OS at once with a fixed mmap threshold, so that RSS follows live tensors
# (as CUDA's allocated bytes do); set before the interpreter's allocator starts, hence the re-exec.
_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}


def _kb(key: str) -> int:
    m = re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    return int(m.group(1)) if m else 0


def measure(mode: str, args: argparse.Namespace) -> dict:
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForImageTextToText
    from trl.trainer.utils import add_fused_lm_head

    from mmr1.models.lora import peft_config, trainable_share
    from mmr1.models.tiny import tiny_qwen2_5_vl_path
    from testkit import compose_cfg

    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = AutoModelForImageTextToText.from_pretrained(str(tiny_qwen2_5_vl_path()), dtype=torch.float32)
    add_fused_lm_head(model, outputs=("log_probs", "entropy"))
    if mode == "lora":
        model = get_peft_model(model, peft_config(compose_cfg(["model.train_type=lora"]).model, model))
    if args.checkpointing:
        if mode == "lora":
            model.enable_input_require_grads()  # as TRL does for peft + checkpointing (grpo_trainer.py)
        base = model.get_base_model() if mode == "lora" else model
        (getattr(base, "activation_checkpointing_enable", None) or base.gradient_checkpointing_enable)()
    model.train()
    c = model.config
    b, text, grid, comp = args.batch, 100, 16, args.completion
    img = grid * grid // 4
    row = ([7] * text + [c.vision_start_token_id] + [c.image_token_id] * img + [c.vision_end_token_id]
           + [11 + i % 500 for i in range(comp)])
    ids = torch.tensor([row] * b)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
              "pixel_values": torch.randn(b * grid * grid, 1176), "image_grid_thw": torch.tensor([[1, grid, grid]] * b)}
    labels = ids.clone()
    labels[:, :-comp] = -100
    adv = torch.randn(b, 1)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)

    def step() -> None:
        out = model(**inputs, labels=labels, fused_lm_head=True)
        logps = out.log_probs[:, -comp:]
        ratio = torch.exp(logps - logps.detach())
        per_token = -torch.min(ratio * adv, torch.clamp(ratio, 0.8, 1.2) * adv)
        (per_token.sum() / per_token.numel()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up: Adam states, lazy buffers
    gc.collect()
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    optim = sum(t.numel() * t.element_size() for st in opt.state.values() for t in st.values()
                if torch.is_tensor(t) and t.dim() > 0)
    base_rss = _kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    times = []
    for _ in range(args.steps):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    peak = (_kb("VmHWM") - base_rss) * 1024
    trainable, total = trainable_share(model)
    return {"mode": mode, "trainable": trainable, "total": total, "s_per_step": statistics.median(times),
            "weights": weights, "optimizer": optim, "step_peak": peak, "measured": weights + optim + peak}


def estimate(mode: str, args: argparse.Namespace) -> int:
    from mmr1.launch.memory import estimate_plan, plan_from_cfg
    from testkit import compose_cfg

    img = 64
    extra = ["model.train_type=lora"] if mode == "lora" else []
    cfg = compose_cfg(["+experiment=tiny_count", f"trainer.per_device_train_batch_size={args.batch}",
                       f"trainer.max_completion_length={args.completion}",
                       f"trainer.gradient_checkpointing={args.checkpointing}", "trainer.max_length=null",
                       "rollout.max_model_len=null", *extra])
    plan, _ = plan_from_cfg(cfg, prompt_tokens=100 + 2 + img, image_tokens=img, env={})
    est = estimate_plan(dataclasses.replace(plan, compact_lm_head=False, overhead_gb=0.0))  # CPU: every position
    c = est["trainer_gpu_bytes"]
    return int(c["weights"] + c["gradients"] + c["optimizer"] + c["activations"])


def on_paper() -> list[str]:
    from mmr1.launch.memory import estimate_memory
    from testkit import compose_cfg

    lines = []
    for tt in ("full", "lora", "qlora"):
        est = estimate_memory(compose_cfg(["+experiment=geoqa", f"model.train_type={tt}"]), env={})
        g = est["trainer_gpu_gb"]
        lines.append(f"  {tt:5s}  weights {g['weights']:5.2f}  grads {g['gradients']:5.2f}  "
                     f"Adam {g['optimizer']:5.2f}  reference {g['reference']:4.2f}  "
                     f"activations {g['activations']:4.1f}  -> train phase "
                     f"{est['train_phase_gb']:5.1f} GB, peak {est['peak_gb']:5.1f} GB")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--completion", type=int, default=512)
    parser.add_argument("--checkpointing", action="store_true")
    args = parser.parse_args()
    if any(os.environ.get(k) != v for k, v in _MALLOC.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **_MALLOC})
    mib = 2**20
    rows = []
    for mode in ("full", "lora"):
        rows.append(measure(mode, args))
        gc.collect()  # the model and optimizer of the mode before, gone before the next one's baseline
    print(f"tiny Qwen2.5-VL, GRPO micro-batch {args.batch} x ({100 + 2 + 64} prompt + {args.completion} completion) "
          f"tokens, fp32, 1 thread, checkpointing {'on' if args.checkpointing else 'off'}, {args.steps} steps:")
    print(f"  {'mode':5s} {'trainable':>20s} {'s/step':>7s} {'weights':>8s} {'Adam':>7s} {'step peak':>10s} "
          f"{'total':>8s} {'estimate':>9s}")
    for r in rows:
        r["estimate"] = estimate(r["mode"], args)
        print(f"  {r['mode']:5s} {r['trainable']:>9,d} ({100 * r['trainable'] / r['total']:5.2f}%) "
              f"{r['s_per_step']:7.3f} {r['weights'] / mib:7.1f}M {r['optimizer'] / mib:6.1f}M "
              f"{r['step_peak'] / mib:9.1f}M {r['measured'] / mib:7.1f}M {r['estimate'] / mib:8.1f}M "
              f"(estimate/measured {r['estimate'] / r['measured']:.2f})")
    full, lora = rows
    print(f"  lora / full: trainable {lora['trainable'] / full['trainable']:.3f}, s/step "
          f"{lora['s_per_step'] / full['s_per_step']:.2f}, Adam states {lora['optimizer'] / full['optimizer']:.3f}, "
          f"step peak {lora['step_peak'] / full['step_peak']:.2f}, total {lora['measured'] / full['measured']:.2f}")
    print("Qwen2.5-VL-3B, the seed's GeoQA layout (6 trainers, ZeRO-3, bf16), per trainer GPU (estimate):")
    print("\n".join(on_paper()))


if __name__ == "__main__":
    main()
