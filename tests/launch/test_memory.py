"""The dry run's memory estimate (mmr1.launch.memory): the published parameter counts, the three seed
experiments, the seed layout against 80 GB, monotonicity, and the formula against a peak measured on
this CPU (the tiny model's GRPO forward + backward + AdamW step, in a fresh process).

Run as a script, this file is that measurement: ``python tests/launch/test_memory.py measure --gc 1``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmr1.launch.memory import (
    GB,
    QWEN2_5_VL_3B,
    QWEN2_5_VL_7B,
    UnknownArchitecture,
    arch_from_config,
    estimate_memory,
    estimate_plan,
    format_estimate,
    memory_summary,
    plan_from_cfg,
)
from testkit import EXPERIMENTS, compose_cfg

REPO = Path(__file__).resolve().parents[2]

# The measured micro-batch: big enough that activations (hundreds of MB without checkpointing) dwarf the
# allocator's noise, small enough for seconds on one core.
MEASURE = {"batch": 8, "text": 100, "image_grid": 16, "completion": 512}  # 16x16 patches = 64 image tokens


def _proc_status_kb(key: str) -> int:
    return int(re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1))


def measure(gc_on: bool) -> dict:
    """One GRPO micro-batch of the tiny model on CPU: peak resident bytes above the settled model + optimizer.

    The kernel's own high-water mark (VmHWM) is reset just before the measured step (``/proc/self/clear_refs``
    5, Linux >= 4.0) and read after it: exact, no sampling. glibc returns freed tensors to the OS at once
    with MALLOC_MMAP_THRESHOLD_ fixed (set by the caller), so RSS tracks live tensors like CUDA's allocated
    bytes do. Weights and Adam states are counted from their tensors (they exist before the step)."""
    import gc

    import torch
    from transformers import AutoModelForImageTextToText
    from trl.trainer.utils import add_fused_lm_head

    from mmr1.models.tiny import tiny_qwen2_5_vl_path

    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = AutoModelForImageTextToText.from_pretrained(str(tiny_qwen2_5_vl_path()), dtype=torch.float32)
    add_fused_lm_head(model, outputs=("log_probs", "entropy"))  # what GRPOTrainer.__init__ installs
    if gc_on:
        enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        enable()
    model.train()
    c = model.config
    b, text, grid, comp = MEASURE["batch"], MEASURE["text"], MEASURE["image_grid"], MEASURE["completion"]
    img = grid * grid // 4
    row = ([7] * text + [c.vision_start_token_id] + [c.image_token_id] * img + [c.vision_end_token_id]
           + [11 + i % 500 for i in range(comp)])
    ids = torch.tensor([row] * b)
    mask = torch.ones_like(ids)
    pixel_values = torch.randn(b * grid * grid, 1176)
    thw = torch.tensor([[1, grid, grid]] * b)
    labels = ids.clone()
    labels[:, :-comp] = -100
    adv = torch.randn(b, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        out = model(input_ids=ids, attention_mask=mask, pixel_values=pixel_values, image_grid_thw=thw,
                    labels=labels, fused_lm_head=True)
        logps = out.log_probs[:, -comp:]
        ratio = torch.exp(logps - logps.detach())  # GRPO's clipped surrogate, TRL "bnpo" normalisation
        per_token = -torch.min(ratio * adv, torch.clamp(ratio, 0.8, 1.2) * adv)
        loss = per_token.sum() / per_token.numel()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up: Adam states, kernels' lazy buffers, thread pools
    gc.collect()
    static = sum(p.numel() * p.element_size() for p in model.parameters())
    optim = sum(t.numel() * t.element_size() for st in opt.state.values() for t in st.values()
                if torch.is_tensor(t) and t.dim() > 0)
    base = _proc_status_kb("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError as err:  # a sandbox without it (gVisor, some containers): nothing to measure with
        return {"skip": f"cannot reset the peak RSS: {err}"}
    started = time.perf_counter()
    step()
    seconds = time.perf_counter() - started
    peak_new = (_proc_status_kb("VmHWM") - base) * 1024
    n_params = sum(p.numel() for p in model.parameters())
    return {"gc": gc_on, "n_params": n_params, "weights": static, "optimizer": optim, "peak_new": peak_new,
            "measured_total": static + optim + peak_new, "step_s": round(seconds, 2)}


def _run_measure(gc_on: bool) -> dict:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536",
           "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO / "tests")])}
    proc = subprocess.run([sys.executable, __file__, "measure", "--gc", str(int(gc_on))], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


SEED_ENV: dict[str, str] = {}  # a clean env: no NPROC_PER_NODE/MAX_PIXELS from the machine running the tests


def _est(overrides: list[str], **kw) -> dict:
    return estimate_memory(compose_cfg(overrides), env=SEED_ENV, **kw)


def test_published_parameter_counts():
    """The counts (transformers' module tree for the config): Qwen2.5-VL-3B = the hub's 3.75B (3,754,622,976),
    7B = 8.29B."""
    a3 = arch_from_config(QWEN2_5_VL_3B)
    assert a3.n_params == 3_754_622_976 and round(a3.n_params / 1e9, 2) == 3.75
    assert a3.n_params_vision == 668_684_288
    assert round(arch_from_config(QWEN2_5_VL_7B).n_params / 1e9, 2) == 8.29


def test_count_matches_transformers_on_meta_device():
    """The counts are those of the model the run builds (no weights: the meta device), split as the run splits
    it; the LM head tied to the embedding counts once."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    config = Qwen2_5_VLConfig(**{k: v for k, v in QWEN2_5_VL_3B.items() if k != "model_type"})
    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(config)
    arch = arch_from_config(QWEN2_5_VL_3B)
    assert sum(p.numel() for p in model.parameters()) == arch.n_params
    # Per part, as mmr1.models.parts splits (and freezes) the real module tree: the seed's frozen share.
    from mmr1.models.parts import freeze_parts

    counts = freeze_parts(model, freeze_vision_tower=True, freeze_aligner=True)
    assert counts == {"language_model": (arch.n_params_text,) * 2,
                      "vision_tower": (arch.n_params_vision - arch.n_params_aligner, 0),
                      "aligner": (arch.n_params_aligner, 0)}


def test_frozen_vision_trains_only_the_language_model():
    """The seed's recipe freezes the tower and merger (ms-swift v3.2.1 freeze_vit/freeze_aligner): gradients and
    Adam states for the language model only, no vision activations kept for the backward; the dry-run line says so."""
    from mmr1.launch.memory import format_estimate

    seed = _est(["+experiment=geoqa"])
    trained = _est(["+experiment=geoqa", "model.freeze_vision_tower=false", "model.freeze_aligner=false"])
    merger = _est(["+experiment=geoqa", "model.freeze_aligner=false"])
    arch = arch_from_config(QWEN2_5_VL_3B)
    assert seed["n_trainable"] == arch.n_params_text and trained["n_trainable"] == arch.n_params
    assert merger["n_trainable"] == arch.n_params_text + arch.n_params_aligner
    b_seed, b_all = seed["trainer_gpu_bytes"], trained["trainer_gpu_bytes"]
    assert b_seed["weights"] == b_all["weights"] and b_seed["reference"] == b_all["reference"]
    ratio = arch.n_params_text / arch.n_params
    for part in ("gradients", "optimizer"):
        assert b_seed[part] == pytest.approx(b_all[part] * ratio)
    vision = [e["activations_gb"]["vision"] for e in (seed, merger, trained)]
    assert vision[0] == 0 < vision[1] < vision[2]
    line = next(x for x in format_estimate(seed).splitlines() if "parameters:" in x)
    assert "language model 3.09B trains" in line and "vision tower 631.98M frozen" in line
    assert "aligner 36.71M frozen" in line and "3.09B of 3.75B train" in line
    assert "vision tower 631.98M trains" in format_estimate(trained)


def test_tiny_count_matches_the_built_model():
    """The embedded tiny model: sizes read from its cached config.json, count equal to the built model's."""
    import torch
    from transformers import AutoModelForImageTextToText

    from mmr1.launch.memory import model_config
    from mmr1.models.tiny import tiny_qwen2_5_vl_path

    model = AutoModelForImageTextToText.from_pretrained(str(tiny_qwen2_5_vl_path()), dtype=torch.float32)
    assert arch_from_config(model_config("tiny_qwen2_5_vl")).n_params == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_seed_experiments_produce_estimates(experiment):
    est = _est([f"+experiment={experiment}"])
    p = est["plan"]
    assert (p["world"], p["zero_stage"], p["param_bytes"], p["micro_batch"]) == (6, 3, 2, 8)
    assert est["n_params"] == 3_754_622_976
    assert p["rollout"] == "vllm_server" and est["vllm_server"]["gpus"] == 2
    assert est["peak_gb"] == max(est["train_phase_gb"], est["generation_phase_gb"])
    text = format_estimate(est)
    assert "fits 80 GB:" in text and len(text.splitlines()) <= 10


def test_seed_layout_fits_80_gb():
    """GeoQA as the seed ran it: 6 trainers, ZeRO-3, bf16, batch 8, 1024 completion tokens, 512 image tokens."""
    est = _est(["+experiment=geoqa"])
    p, c = est["plan"], est["trainer_gpu_gb"]
    assert (p["image_tokens"], p["completion_tokens"], p["seq_len"]) == (512, 1024, 256 + 512 + 1024)
    # ZeRO-3 over 6: 2 bytes x 3.75B / 6 of weights, the reference alike; the seed froze the vision tower and merger
    # (recipe: model.freeze_*), so gradients (2) and Adam (12 bytes) for the language model's 3.09B only.
    lm = arch_from_config(QWEN2_5_VL_3B).n_params_text
    assert c["weights"] == c["reference"] == pytest.approx(3_754_622_976 * 2 / 6 / GB, abs=1e-3)
    assert c["gradients"] == pytest.approx(lm * 2 / 6 / GB, abs=1e-3)
    assert c["optimizer"] == pytest.approx(lm * 12 / 6 / GB, abs=1e-3)
    assert est["fits"] and 10 < est["peak_gb"] < 40
    print("\n" + format_estimate(est))


def test_ms_swift_4311_layout_is_tighter():
    """ms-swift#4311's run (4 trainers, ZeRO-3, transformers generate, MAX_PIXELS 602112, 4 x 2 generated rows,
    full logits) needs more per GPU than the seed's layout: gathered weights for generate, unfused logits."""
    cfg = compose_cfg(["+experiment=geoqa", "launcher.nproc_per_node=4", "rollout=hf", "model.max_pixels=602112",
                       "trainer.max_length=2048", "trainer.gradient_accumulation_steps=4"])
    plan, _ = plan_from_cfg(cfg, env=SEED_ENV)
    seed = _est(["+experiment=geoqa"])
    unfused = estimate_plan(dataclasses.replace(plan, fused_lm_head=False))
    fused = estimate_plan(plan)
    assert fused["generation_gb"]["gathered_weights"] > 5.0  # 7.0 GB of bf16 weights less the own shard
    assert unfused["peak_gb"] > fused["peak_gb"] > seed["peak_gb"]
    print(f"\nms-swift#4311 layout: fused head {fused['peak_gb']:.1f} GB, unfused (full logits) "
          f"{unfused['peak_gb']:.1f} GB per GPU")


def test_zero_stages_shard_model_states():
    """Per GPU: ZeRO-3 < ZeRO-2 < no DeepSpeed for the model states; offload empties the GPU's optimizer."""
    base = ["+experiment=geoqa"]
    none = _est([*base, "deepspeed=none"])["trainer_gpu_gb"]
    z2 = _est([*base, "deepspeed=zero2"])["trainer_gpu_gb"]
    z3 = _est(base)["trainer_gpu_gb"]
    off = _est([*base, "deepspeed=zero3_offload"])

    def states(c):
        return c["weights"] + c["gradients"] + c["optimizer"]

    assert states(z3) < states(z2) < states(none)
    assert z3["weights"] < z2["weights"] == none["weights"]
    assert z2["optimizer"] < none["optimizer"] * 6  # sharded 12 bytes vs torch AdamW's unsharded 2 x 2
    assert off["trainer_gpu_gb"]["optimizer"] == off["trainer_gpu_gb"]["weights"] == 0
    assert off["cpu_offload_gb_per_node"] > 20  # 3.75B x (2 + 12 + 4) bytes / 6 ranks x 6 processes, + ref


def test_gradient_checkpointing_lowers_activations():
    on = _est(["+experiment=geoqa"])["trainer_gpu_gb"]["activations"]
    off = _est(["+experiment=geoqa", "trainer.gradient_checkpointing=false"])["trainer_gpu_gb"]["activations"]
    assert on < off / 4


def test_more_pixels_more_activations():
    # The vision tower trained (the seed's is frozen and keeps no activations: test_frozen_vision_...).
    small = _est(["+experiment=geoqa", "model.max_pixels=200704", "model.freeze_vision_tower=false"])
    large = _est(["+experiment=geoqa", "model.max_pixels=802816", "model.freeze_vision_tower=false"])
    assert small["plan"]["image_tokens"] == 256 and large["plan"]["image_tokens"] == 1024
    assert small["trainer_gpu_gb"]["activations"] < large["trainer_gpu_gb"]["activations"]
    assert small["activations_gb"]["vision"] < large["activations_gb"]["vision"]


def test_colocated_vllm_takes_its_share():
    """Colocated vLLM: gpu_memory_utilization x the GPU on the trainer's own GPU; asleep while training."""
    est = _est(["+experiment=geoqa", "rollout=vllm_colocate", "rollout.gpu_memory_utilization=0.6"])
    assert est["generation_gb"]["vllm"] == pytest.approx(48.0)
    assert est["generation_phase_gb"] > 48.0 and est["plan"]["vllm_sleep"]
    awake = _est(["+experiment=geoqa", "rollout=vllm_colocate", "rollout.enable_sleep_mode=false"])
    assert awake["train_phase_gb"] > est["train_phase_gb"] + 40


def test_measured_prompt_and_unknown_model():
    """Measured prompt lengths replace the max_pixels bound; an unknown hub id gives a line, not an error."""
    measured = _est(["+experiment=geoqa"], prompt_tokens=400, image_tokens=300)
    assert (measured["plan"]["text_tokens"], measured["plan"]["image_tokens"]) == (100, 300)
    cfg = compose_cfg(["+experiment=geoqa", "model.name_or_path=someone/unknown-vl"])
    with pytest.raises(UnknownArchitecture):
        estimate_memory(cfg)
    assert memory_summary(cfg).startswith("memory estimate: none")
    assert "fits 80 GB" in memory_summary(cfg, config=QWEN2_5_VL_3B)


@pytest.mark.slow
@pytest.mark.skipif(not (sys.platform == "linux" and Path("/proc/self/clear_refs").exists()),
                    reason="needs Linux's resettable peak RSS")
@pytest.mark.parametrize("gc_on", [True, False], ids=["checkpointing", "no_checkpointing"])
def test_estimate_against_measured_cpu_peak(gc_on):
    """The formula against a measured peak: the tiny model's GRPO micro-batch on CPU (fp32, one process, no
    ZeRO), weights + Adam states + the step's peak, against the same components of the estimate."""
    measured = _run_measure(gc_on)
    if "skip" in measured:
        pytest.skip(measured["skip"])
    b, text, grid, comp = MEASURE["batch"], MEASURE["text"], MEASURE["image_grid"], MEASURE["completion"]
    img = grid * grid // 4
    cfg = compose_cfg(["+experiment=tiny_count", f"trainer.per_device_train_batch_size={b}",
                       f"trainer.max_completion_length={comp}", f"trainer.gradient_checkpointing={gc_on}",
                       "trainer.max_length=null", "rollout.max_model_len=null"])
    plan, _ = plan_from_cfg(cfg, prompt_tokens=text + 2 + img, image_tokens=img, env=SEED_ENV)
    # On CPU TRL's fused head scores every position (no Triton: trl/trainer/utils.py add_fused_lm_head).
    est = estimate_plan(dataclasses.replace(plan, compact_lm_head=False, overhead_gb=0.0))
    c = est["trainer_gpu_bytes"]
    estimated = c["weights"] + c["gradients"] + c["optimizer"] + c["activations"]
    assert measured["n_params"] == est["n_params"]
    ratio = estimated / measured["measured_total"]
    print(f"\ntiny CPU step, checkpointing={gc_on}: measured {measured['measured_total'] / 2**20:.0f} MiB "
          f"(peak above model+Adam {measured['peak_new'] / 2**20:.0f} MiB), estimated {estimated / 2**20:.0f} MiB, "
          f"ratio {ratio:.2f}; step {measured['step_s']} s")
    assert 1 / 3 < ratio < 3


def test_benchmark_builds_the_published_config():
    """benchmarks/gpu_step.py carries its own copy of the 3B sizes (it needs only torch + transformers)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_step", REPO / "benchmarks" / "gpu_step.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.QWEN2_5_VL_3B == QWEN2_5_VL_3B
    assert module.image_grid(401408) == (16, 32)  # GeoQA's MAX_PIXELS: 512 image tokens
    args = module.parse_args([])
    assert (args.batch, args.num_generations, args.max_new_tokens, args.num_iterations, args.dtype) == (
        8, 8, 1024, 2, "bfloat16")


@pytest.mark.slow
def test_gpu_step_cpu_smoke():
    """The prepared GPU check end to end at toy sizes on CPU: one JSON line with the figures it promises."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_step.py"), "--cpu-smoke"], cwd=REPO,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("s_per_step", "gen_tokens_per_s", "train_tokens_per_s", "peak_mem_gb", "mfu", "settings"):
        assert key in report
    assert report["s_per_step"] > 0 and report["gen_tokens_per_s"] > 0 and report["train_tokens_per_s"] > 0
    assert report["measured_steps"] == 1 and report["settings"]["image_input"] == "Qwen2VLImageProcessor"
    assert report["settings"]["image_tokens"] == 64 and isinstance(report["mmr1_estimate"], dict)
    assert time.perf_counter() - started < 120


if __name__ == "__main__":  # python tests/launch/test_memory.py measure --gc 0|1 (PYTHONPATH=src:tests)
    print(json.dumps(measure(gc_on=sys.argv[sys.argv.index("--gc") + 1] == "1")))
