"""One GRPO step of the seed's GeoQA recipe on the real Qwen2.5-VL-3B architecture, timed, as one JSON line.

    python benchmarks/gpu_step.py                 # one GPU (an H200: ~3 minutes, see the estimate below)
    python benchmarks/gpu_step.py --cpu-smoke     # tiny sizes on CPU in seconds (tests/launch/test_memory.py)

Needs torch and transformers only: no download, no network, no vLLM, no DeepSpeed. The model is
``Qwen2_5_VLForConditionalGeneration`` built from Qwen2.5-VL-3B-Instruct's published config.json sizes
(below) with random weights, in bf16 with sdpa attention. The step is the seed's (conf/recipe/ms_swift_v3_2_1.yaml
+ conf/experiment/geoqa.yaml), on one device:

1. rollout: transformers ``generate`` of ``--batch`` rows (8 = 1 prompt x 8 generations), each a prompt of
   text + one synthetic image at GeoQA's MAX_PIXELS (401408 px -> 512 image tokens, through the real
   ``Qwen2VLImageProcessor``), sampling as the seed did (temperature 1.0, top_k 50, top_p 0.9,
   repetition_penalty 1.1), exactly ``--max-new-tokens`` (1024) new tokens (random weights would rarely stop
   anyway; a fixed length makes the figures comparable);
2. no-grad forwards for the old policy's log-probs (num_iterations 2) and the frozen reference's (beta 0.001);
3. ``--num-iterations`` (2) updates on that rollout: per-token log-probs of the completions under the policy
   with gradient checkpointing, GRPO's clipped surrogate (epsilon 0.2) + beta x k3 KL, TRL's "bnpo"
   normalisation (token sum / mask sum), backward, gradient clipping (0.5), AdamW (lr 1e-6, betas 0.9/0.999,
   weight decay 0.1) on fp32 master weights, as DeepSpeed's bf16 ZeRO keeps them.

Printed: s_per_step, gen_tokens_per_s, train_tokens_per_s, peak_mem_gb (torch.cuda.max_memory_allocated,
2**30 bytes; CPU: the process's peak RSS), mfu, the settings, and mmr1's own memory estimate for the same
step when mmr1 is importable (src/ on the path; mmr1.launch.memory).

MFU: model FLOPs (Kaplan et al. 2020 / PaLM appendix B convention) over the device's dense bf16 peak
(H100/H200 SXM: 989 TFLOPS; A100: 312): 2 N per token for a forward, 6 N for forward + backward, with N the
matmul parameters a token passes through (decoder layers, plus the LM head on scored tokens; vision tower
parameters per image patch); the checkpointing recompute is not counted (it would be HFU), nor attention's
s^2 term (~3% at these lengths). ``mfu`` is the whole step (generation included), ``mfu_train`` the updates.

Time on one H200 (estimated; measure and record in experiments/geoqa/README.md): build on the GPU + the
reference copy ~20 s; per step, generate 1024 tokens x 8 rows at ~25-40 ms a token (transformers' eager decode
is launch-bound) ~30-40 s, two no-grad forwards ~0.5 s, two updates over 8 x ~1.9k tokens ~3-5 s; 1 warm-up
+ 2 measured steps ~2-3 minutes. ``--time-budget-s`` (420) stops before a step that would overrun it, and the
JSON is printed whatever happens, so the whole command stays under 8 minutes.

Memory on one GPU (no sharding): 3.75B x (2 bf16 weights + 2 bf16 grads + 12 fp32 master/Adam) = 56 GB, the
reference 7 GB, activations ~7 GB, the KV cache ~1 GB, and a transient fp32 copy of the gradients at the
optimizer step (14 GB, in place of the freed bf16 ones and the activations): ~75-85 GB of an H200's 141.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch

# Qwen/Qwen2.5-VL-3B-Instruct config.json sizes (equal to mmr1.launch.memory.QWEN2_5_VL_3B, which a test
# checks; kept here so that this file needs nothing but torch and transformers).
QWEN2_5_VL_3B: dict[str, Any] = {
    "model_type": "qwen2_5_vl",
    "tie_word_embeddings": True,
    "image_token_id": 151655, "video_token_id": 151656,
    "vision_start_token_id": 151652, "vision_end_token_id": 151653,
    "bos_token_id": 151643, "eos_token_id": 151645,
    "text_config": {
        "vocab_size": 151936, "hidden_size": 2048, "num_hidden_layers": 36, "num_attention_heads": 16,
        "num_key_value_heads": 2, "intermediate_size": 11008, "max_position_embeddings": 128000,
        "rms_norm_eps": 1e-6, "tie_word_embeddings": True,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
    },
    "vision_config": {
        "depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "out_hidden_size": 2048,
        "in_channels": 3, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
        "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31], "tokens_per_second": 2,
    },
}
# --cpu-smoke: the same classes at toy sizes (special ids moved inside the small vocabulary).
SMOKE: dict[str, Any] = {
    **QWEN2_5_VL_3B,
    "image_token_id": 1000, "video_token_id": 1001, "vision_start_token_id": 1002, "vision_end_token_id": 1003,
    "bos_token_id": 1004, "eos_token_id": 1005,
    "text_config": {**QWEN2_5_VL_3B["text_config"], "vocab_size": 1024, "bos_token_id": 1004, "eos_token_id": 1005,
                    "pad_token_id": 1004, "hidden_size": 64, "num_hidden_layers": 2,
                    "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128,
                    "max_position_embeddings": 2048,
                    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}},
    "vision_config": {**QWEN2_5_VL_3B["vision_config"], "depth": 2, "hidden_size": 32, "intermediate_size": 64,
                      "num_heads": 2, "out_hidden_size": 64, "window_size": 56, "fullatt_block_indexes": [1]},
}
SMOKE_ARGS = {"batch": 4, "num_generations": 4, "max_new_tokens": 16, "max_pixels": 50176, "prompt_text_tokens": 32,
              "steps": 1, "warmup": 1, "device": "cpu", "dtype": "float32"}
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "H800": 989.0, "A100": 312.0, "A800": 312.0, "L40S": 362.0}
FACTOR = 28  # one Qwen2.5-VL image token per 28 x 28 pixels (14-px patches merged 2 x 2)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=2, help="measured GRPO steps (each: a rollout + its updates)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first (allocator, kernels)")
    ap.add_argument("--batch", type=int, default=8, help="rows per device (per_device_train_batch_size)")
    ap.add_argument("--num-generations", type=int, default=8, help="completions per prompt")
    ap.add_argument("--max-new-tokens", type=int, default=1024, help="completion tokens (max_completion_length)")
    ap.add_argument("--num-iterations", type=int, default=2, help="updates per rollout (GeoQA: 2)")
    ap.add_argument("--max-pixels", type=int, default=401408, help="image size (GeoQA MAX_PIXELS: 512 tokens)")
    ap.add_argument("--prompt-text-tokens", type=int, default=128, help="prompt text tokens around the image")
    ap.add_argument("--beta", type=float, default=0.001, help="KL weight; 0 = no reference model")
    ap.add_argument("--lr", type=float, default=1e-6)
    ap.add_argument("--max-grad-norm", type=float, default=0.5)
    ap.add_argument("--master-weights", choices=["fp32", "none"], default="fp32",
                    help="fp32: AdamW on fp32 master copies (DeepSpeed bf16); none: AdamW on the bf16 weights")
    ap.add_argument("--lm-head", choices=["auto", "trl", "chunked"], default="auto",
                    help="log-probs without [tokens, vocab] logits: TRL's fused head if importable, else chunked")
    ap.add_argument("--no-gradient-checkpointing", action="store_true")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--attn", default="sdpa", help="attn_implementation")
    ap.add_argument("--peak-tflops", type=float, default=None, help="device peak (default: by device name)")
    ap.add_argument("--time-budget-s", type=float, default=420.0, help="skip steps that would end past this")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cpu-smoke", action="store_true", help="toy sizes on CPU, for tests (seconds)")
    # The keys --cpu-smoke changes default to None here, so that an explicit value wins in both modes.
    gpu_defaults = {key: ap.get_default(key) for key in SMOKE_ARGS}
    ap.set_defaults(**dict.fromkeys(SMOKE_ARGS))
    args = ap.parse_args(argv)
    for key in SMOKE_ARGS:
        if getattr(args, key) is None:
            setattr(args, key, (SMOKE_ARGS if args.cpu_smoke else gpu_defaults)[key])
    if args.batch % args.num_generations:
        ap.error(f"--batch {args.batch} must be a multiple of --num-generations {args.num_generations}")
    return args


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_model(config_dict: dict[str, Any], dtype: torch.dtype, device: torch.device, attn: str):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    config = Qwen2_5_VLConfig(**{k: v for k, v in config_dict.items() if k != "model_type"})
    with torch.device(device):  # random init straight on the device: no 7 GB host round trip
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=dtype, attn_implementation=attn)
    model.generation_config.pad_token_id = config_dict["bos_token_id"]
    model.generation_config.eos_token_id = config_dict["eos_token_id"]
    return model


def image_grid(max_pixels: int) -> tuple[int, int]:
    """(rows, cols) of image tokens: the largest 1:2 grid within max_pixels (401408 -> 16 x 32 = 512)."""
    tokens = max(1, max_pixels // (FACTOR * FACTOR))
    rows = max(1, int(math.sqrt(tokens / 2)))
    while tokens % rows:  # an exact factorisation keeps every token max_pixels allows (64 -> 4 x 16)
        rows -= 1
    return rows, tokens // rows


def image_inputs(max_pixels: int, n_rows: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, int, str]:
    """pixel_values and image_grid_thw for one synthetic figure per row, through Qwen2VLImageProcessor."""
    rows, cols = image_grid(max_pixels)
    h, w = rows * FACTOR, cols * FACTOR
    g = torch.Generator().manual_seed(seed)
    image = (torch.rand(h, w, 3, generator=g) * 255).to(torch.uint8).numpy()
    try:
        from transformers import Qwen2VLImageProcessor

        proc = Qwen2VLImageProcessor(size={"shortest_edge": 56 * 56, "longest_edge": max_pixels}, patch_size=14,
                                     merge_size=2, temporal_patch_size=2)
        out = proc(images=[image] * n_rows, return_tensors="pt")
        pixel_values, thw, how = out["pixel_values"], out["image_grid_thw"], "Qwen2VLImageProcessor"
    except Exception as err:  # noqa: BLE001 - torchvision-less box: the processor's output layout by hand
        patches = (rows * 2) * (cols * 2)
        pixel_values = torch.randn(n_rows * patches, 3 * 2 * 14 * 14, generator=g)
        thw = torch.tensor([[1, rows * 2, cols * 2]] * n_rows)
        how = f"synthetic tensors ({type(err).__name__})"
    return pixel_values, thw, rows * cols, how


def prompt_ids(cfg: dict[str, Any], text_tokens: int, image_tokens: int, n_rows: int, seed: int) -> torch.Tensor:
    """Text, <|vision_start|>, image_token x image_tokens, <|vision_end|>, text: the chat prompt's shape."""
    g = torch.Generator().manual_seed(seed)
    vocab_text = min(cfg["bos_token_id"], cfg["image_token_id"], cfg["vision_start_token_id"])
    before = text_tokens // 4
    text = torch.randint(0, vocab_text, (text_tokens,), generator=g)
    row = torch.cat([text[:before], torch.tensor([cfg["vision_start_token_id"]]),
                     torch.full((image_tokens,), cfg["image_token_id"]), torch.tensor([cfg["vision_end_token_id"]]),
                     text[before:]])
    return row.unsqueeze(0).repeat(n_rows, 1)


class MasterAdamW:
    """AdamW on fp32 master copies of 16-bit weights (what DeepSpeed's bf16 optimizer keeps), or on the weights."""

    def __init__(self, params: list[torch.Tensor], *, lr: float, master: bool, fused: bool) -> None:
        self.params = params
        self.masters = [p.detach().float().clone().requires_grad_(True) for p in params] if master else None
        self.opt = torch.optim.AdamW(self.masters if self.masters is not None else params, lr=lr,
                                     betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1, fused=fused or None)

    @torch.no_grad()
    def step(self) -> None:
        if self.masters is None:
            self.opt.step()
        else:
            for p, m in zip(self.params, self.masters):
                m.grad = p.grad.float() if p.grad is not None else None
                p.grad = None  # the 16-bit gradient goes as its fp32 copy arrives
            self.opt.step()
            torch._foreach_copy_(self.params, self.masters)
            for m in self.masters:
                m.grad = None
        for p in self.params:
            p.grad = None


def _chunked_logps(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int = 1024):
    """log softmax(hidden @ W.T)[target] per row, in row chunks recomputed in the backward: never [N, V]."""
    from torch.utils.checkpoint import checkpoint

    def piece(hid: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        logits = (hid @ weight.t()).float()
        return logits.gather(-1, tgt.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)

    flat_h, flat_t = hidden.reshape(-1, hidden.size(-1)), targets.reshape(-1)
    out = [checkpoint(piece, flat_h[i:i + chunk], flat_t[i:i + chunk], use_reentrant=False)
           for i in range(0, flat_h.size(0), chunk)]
    return torch.cat(out).view(targets.shape)


def make_logps(model, how: str):
    """A function (model inputs, completion length) -> per-token log-probs of the completion [B, C]."""
    use_trl = how == "trl"
    if how == "auto":
        try:
            from trl.trainer.utils import add_fused_lm_head  # noqa: F401

            use_trl = True
        except Exception:  # noqa: BLE001 - TRL absent or too old: the chunked fallback does the same job
            use_trl = False
    if use_trl:
        from trl.trainer.utils import add_fused_lm_head

        add_fused_lm_head(model, outputs=("log_probs", "entropy"))  # what TRL's GRPOTrainer installs

        def trl_logps(m, inputs: dict, c: int) -> torch.Tensor:
            labels = inputs["input_ids"].clone()
            labels[:, :-c] = -100
            return m(**inputs, labels=labels, fused_lm_head=True).log_probs[:, -c:]

        return trl_logps, "trl fused head"

    def chunked_logps(m, inputs: dict, c: int) -> torch.Tensor:
        hidden = m.model(**inputs, use_cache=False).last_hidden_state[:, -c - 1:-1]
        return _chunked_logps(hidden, m.lm_head.weight, inputs["input_ids"][:, -c:])

    return chunked_logps, "chunked"


def set_checkpointing(model, on: bool) -> None:
    """transformers 5 calls it activation checkpointing (gradient_checkpointing_* are deprecated aliases)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        if on:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.activation_checkpointing_disable()
    elif on:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_disable()


def flops_per_token(cfg: dict[str, Any]) -> tuple[float, float, float]:
    """(decoder matmul params, LM-head params, vision params per patch): the N of 2N / 6N per token."""
    t, v = cfg["text_config"], cfg["vision_config"]
    h, i, kv = t["hidden_size"], t["intermediate_size"], t["num_key_value_heads"] * t["hidden_size"] // t[
        "num_attention_heads"]
    decoder = t["num_hidden_layers"] * (2 * h * h + 2 * h * kv + 3 * h * i)
    vh, vi = v["hidden_size"], v["intermediate_size"]
    vision = v["depth"] * (4 * vh * vh + 3 * vh * vi) + (4 * vh) ** 2 / 4 + 4 * vh * v["out_hidden_size"] / 4
    return float(decoder), float(t["vocab_size"] * h), float(vision)


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def mmr1_estimate(args: argparse.Namespace, cfg: dict[str, Any], prompt_len: int, image_tokens: int,
                  gpu_gb: float) -> dict | str:
    """mmr1's memory estimate for this very step (one process = ZeRO-3 over 1 rank: 2 + 2 + 12 bytes/param)."""
    try:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
        from omegaconf import OmegaConf

        from mmr1.config.schema import TrainConfig
        from mmr1.launch.memory import estimate_memory

        # Over the schema, so every key the estimate reads has its default (model.train_type, ...).
        node = OmegaConf.merge(OmegaConf.structured(TrainConfig), {
            "model": {"name_or_path": "Qwen/Qwen2.5-VL-3B-Instruct", "torch_dtype": args.dtype,
                      "max_pixels": args.max_pixels, "min_pixels": None},
            "launcher": {"nproc_per_node": 1, "nnodes": 1},
            "trainer": {"bf16": args.dtype == "bfloat16", "beta": args.beta,
                        "per_device_train_batch_size": args.batch, "gradient_accumulation_steps": 1, "extra": {},
                        "max_completion_length": args.max_new_tokens, "max_length": None,
                        "gradient_checkpointing": not args.no_gradient_checkpointing},
            "deepspeed": {"enabled": args.master_weights == "fp32", "stage": 3, "offload_optimizer": False,
                          "offload_param": False, "bf16": "auto", "gather_for_generation": True, "extra": {}},
            "rollout": {"backend": "hf", "vllm_mode": None, "gpu_memory_utilization": 0.0, "max_model_len": None,
                        "enable_sleep_mode": False, "server_gpus": 0, "tensor_parallel_size": 1},
        })
        est = estimate_memory(node, gpu_memory_gb=gpu_gb, config=cfg, prompt_tokens=prompt_len,
                              image_tokens=image_tokens, env={})
        overhead = est["trainer_gpu_gb"]["overhead"]  # CUDA context, NCCL: not in max_memory_allocated
        return {"allocated_peak_gb": round(est["peak_gb"] - overhead, 2),
                "train_phase_gb": round(est["train_phase_gb"] - overhead, 2),
                "generation_phase_gb": round(est["generation_phase_gb"] - overhead, 2),
                "components_gb": est["trainer_gpu_gb"], "activations_gb": est["activations_gb"]}
    except Exception as err:  # noqa: BLE001 - the benchmark never depends on mmr1 being importable
        return f"unavailable: {type(err).__name__}: {err}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    cfg = SMOKE if args.cpu_smoke else QWEN2_5_VL_3B
    torch.manual_seed(args.seed)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()

    model = build_model(cfg, dtype, device, args.attn)
    ref = None
    if args.beta:
        ref = copy.deepcopy(model).eval().requires_grad_(False)  # TRL: a frozen reference from the same weights
    logps_fn, lm_head = make_logps(model, args.lm_head)
    if ref is not None:
        make_logps(ref, "trl" if lm_head.startswith("trl") else "chunked")
    params: list[torch.Tensor] = [p for p in model.parameters() if p.requires_grad]
    n_params = sum(p.numel() for p in params)
    opt = MasterAdamW(params, lr=args.lr, master=args.master_weights == "fp32" and dtype != torch.float32,
                      fused=device.type == "cuda")

    b, c = args.batch, args.max_new_tokens
    pixel_values, thw, image_tokens, image_path = image_inputs(args.max_pixels, b, args.seed)
    prompt = prompt_ids(cfg, args.prompt_text_tokens, image_tokens, b, args.seed)
    prompt_len = prompt.size(1)
    pixel_values, thw, prompt = pixel_values.to(device, dtype), thw.to(device), prompt.to(device)
    mm_types = (prompt == cfg["image_token_id"]).int()
    build_s = time.perf_counter() - started
    dec, head, vis = flops_per_token(cfg)
    patches = int(thw.prod(-1).sum())

    def one_step() -> dict[str, float]:
        t0 = time.perf_counter()
        # 1. rollout (TRL: gradient checkpointing off and the model in eval mode while generating)
        model.eval()
        set_checkpointing(model, False)
        with torch.no_grad():
            out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), pixel_values=pixel_values,
                                 image_grid_thw=thw, mm_token_type_ids=mm_types, max_new_tokens=c,
                                 min_new_tokens=c, do_sample=True, temperature=1.0, top_k=50, top_p=0.9,
                                 repetition_penalty=1.1)
        sync(device)
        t_gen = time.perf_counter()
        new_tokens = int(out.size(1) - prompt_len) * b
        ids = out
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": pixel_values,
                  "image_grid_thw": thw,
                  "mm_token_type_ids": torch.cat([mm_types, torch.zeros_like(ids[:, prompt_len:], dtype=torch.int)], 1)}
        comp = ids.size(1) - prompt_len
        mask = torch.ones(b, comp, device=device)
        # Rewards -> group-normalised advantages (TRL scale_rewards="group": (r - mean) / (std + 1e-4)).
        rewards = torch.rand(b // args.num_generations, args.num_generations, device=device)
        adv = ((rewards - rewards.mean(1, keepdim=True)) / (rewards.std(1, keepdim=True) + 1e-4)).view(b, 1)
        # 2. no-grad forwards: the old policy (num_iterations > 1) and the reference (beta > 0)
        with torch.no_grad():
            old = logps_fn(model, inputs, comp) if args.num_iterations > 1 else None
            ref_lp = logps_fn(ref, inputs, comp) if ref is not None else None
        sync(device)
        t_nograd = time.perf_counter()
        # 3. the updates
        model.train()
        set_checkpointing(model, not args.no_gradient_checkpointing)
        for _ in range(args.num_iterations):
            lp = logps_fn(model, inputs, comp)
            ratio = torch.exp(lp - (old if old is not None else lp.detach()))
            per_token = -torch.min(ratio * adv, torch.clamp(ratio, 0.8, 1.2) * adv)
            if ref_lp is not None:
                delta = ref_lp - lp
                per_token = per_token + args.beta * (torch.exp(delta) - delta - 1)  # k3 KL
            loss = (per_token * mask).sum() / mask.sum().clamp(min=1)  # TRL "bnpo"
            loss.backward()
            if args.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm)
            opt.step()
        sync(device)
        t_end = time.perf_counter()
        seq = ids.size(1)
        f_fwd = 2 * (dec * b * seq + vis * patches) + 2 * head * b * comp  # one forward of the batch
        gen_flops = 2 * (dec * b * seq + vis * patches) + 2 * head * (new_tokens + b)  # prefill + decode
        nograd_flops = f_fwd * ((old is not None) + (ref_lp is not None))
        train_flops = 3 * f_fwd * args.num_iterations
        return {"step_s": t_end - t0, "gen_s": t_gen - t0, "nograd_s": t_nograd - t_gen, "train_s": t_end - t_nograd,
                "new_tokens": new_tokens, "train_tokens": b * seq * args.num_iterations, "seq": seq,
                "flops": gen_flops + nograd_flops + train_flops, "train_flops": train_flops,
                "loss": float(loss.detach())}

    results: list[dict[str, float]] = []
    warm: list[dict[str, float]] = []
    skipped, error = 0, None
    try:
        for i in range(args.warmup + args.steps):
            elapsed = time.perf_counter() - started
            done = results or warm
            if done and elapsed + done[-1]["step_s"] * 1.1 > args.time_budget_s:
                skipped = args.warmup + args.steps - i
                break
            (warm if i < args.warmup else results).append(one_step())
    except Exception as err:  # noqa: BLE001 - an OOM mid-run still reports what was measured, and why it stopped
        error = f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"
    measured = results or warm  # a budget that allowed only the warm-up still reports it (flagged)
    peak_flops = peak_tflops(device, args.peak_tflops)

    def mean(key: str) -> float | None:
        return sum(r[key] for r in measured) / len(measured) if measured else None

    def ratio(num: float | None, den: float | None, scale: float = 1.0, nd: int = 1) -> float | None:
        return round(num / den / scale, nd) if num is not None and den else None

    if device.type == "cuda":
        peak_gb = torch.cuda.max_memory_allocated(device) / 2**30
        reserved_gb = torch.cuda.max_memory_reserved(device) / 2**30
        total_gb = torch.cuda.get_device_properties(device).total_memory / 2**30
        device_name = torch.cuda.get_device_name(device)
    else:
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux
        reserved_gb, total_gb, device_name = None, None, "cpu"
    s_step = mean("step_s")
    peak = peak_flops * 1e12 if peak_flops else None
    report = {
        "s_per_step": ratio(s_step, 1.0, nd=3),
        "gen_tokens_per_s": ratio(mean("new_tokens"), mean("gen_s")),
        "train_tokens_per_s": ratio(mean("train_tokens"), mean("train_s")),
        "peak_mem_gb": round(peak_gb, 2),
        "mfu": ratio(mean("flops"), s_step, peak or 0.0, 4) if peak else None,
        "mfu_train": ratio(mean("train_flops"), mean("train_s"), peak or 0.0, 4) if peak else None,
        "gen_s": ratio(mean("gen_s"), 1.0, nd=3), "nograd_s": ratio(mean("nograd_s"), 1.0, nd=3),
        "train_s": ratio(mean("train_s"), 1.0, nd=3),
        "peak_reserved_gb": round(reserved_gb, 2) if reserved_gb is not None else None,
        "device": device_name, "device_memory_gb": round(total_gb, 1) if total_gb else None,
        "peak_tflops": peak_flops, "measured_steps": len(results), "warmup_only": bool(warm) and not results,
        "skipped_steps": skipped, "error": error, "build_s": round(build_s, 1),
        "total_s": round(time.perf_counter() - started, 1),
        "settings": {
            "model": "smoke" if args.cpu_smoke else "Qwen2.5-VL-3B (random weights)", "n_params": n_params,
            "dtype": args.dtype, "param_dtype": str(params[0].dtype).replace("torch.", ""), "attn": args.attn,
            "gradient_checkpointing": not args.no_gradient_checkpointing,
            "batch": args.batch, "num_generations": args.num_generations, "max_new_tokens": c,
            "num_iterations": args.num_iterations, "beta": args.beta, "lr": args.lr, "max_pixels": args.max_pixels,
            "image_tokens": image_tokens, "prompt_tokens": prompt_len,
            "seq_len": int(mean("seq") or 0), "patches": patches,
            "image_input": image_path, "lm_head": lm_head, "master_weights": opt.masters is not None,
            "torch": torch.__version__, "transformers": __import__("transformers").__version__,
        },
        "mmr1_estimate": mmr1_estimate(args, cfg, prompt_len, image_tokens, total_gb or 80.0),
    }
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(1 if main().get("error") else 0)
