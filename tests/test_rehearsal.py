"""`+preset=rehearsal`: each seed experiment's exact configuration runs for real on a CPU.

A dry run proves a configuration composes; these prove it runs: two optimizer steps, one evaluation and
one checkpoint of each seed experiment, on parquet files in the hub datasets' schemas (ClevrCount: 480x320
RGBA PNGs), with only what needs GPUs or downloads swapped, and every swap accounted for.
"""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from data.data_fixtures import write_hub_parquet
from mmr1.config.rehearsal import apply_rehearsal
from mmr1.launch.layout import resolve_layout
from testkit import EXPERIMENTS, changed_parts, compose_cfg, run_cli

# The seed's generation batch per optimizer step: 6 ranks x 8 x 2 accumulation = 96 completions.
SEED_BATCH = {"clevr_count": (4, 24), "geoqa": (12, 8), "openr1_mm": (12, 8)}  # prompts x num_generations
SEED_ITERATIONS = {"clevr_count": 1, "geoqa": 2, "openr1_mm": 2}
# Keys a rehearsal may change; anything else differing from the experiment is a bug (or must be listed).
USER_OVERRIDES = {"dataset.source", "dataset.path", "run_dir"}


def _flat(cfg) -> dict:
    out = {}

    def walk(node, prefix):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            out[prefix[:-1]] = node

    walk(OmegaConf.to_container(cfg, resolve=False, enum_to_str=True), "")
    return out


@pytest.mark.parametrize("preset", ["rehearsal", "cpu"])
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_presets_run_one_process(experiment, preset, tmp_path):
    # The experiments ask for 6 trainer ranks; a laptop preset must own every launcher key it implies.
    cfg = compose_cfg([f"+experiment={experiment}", f"+preset={preset}"], run_dir=tmp_path)
    apply_rehearsal(cfg)
    assert resolve_layout(cfg, {}, gpus=0).world_size == 1


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_rehearsal_keeps_the_generation_batch_and_swaps_only_what_needs_a_gpu(experiment, tmp_path):
    before = compose_cfg([f"+experiment={experiment}"], run_dir=tmp_path)
    cfg = compose_cfg([f"+experiment={experiment}", "+preset=rehearsal"], run_dir=tmp_path)
    swaps = apply_rehearsal(cfg)
    assert apply_rehearsal(cfg) == swaps  # idempotent: main() and train() both call it
    t = cfg.trainer
    prompts, gens = SEED_BATCH[experiment]
    assert t.num_generations == gens
    assert t.per_device_train_batch_size * t.gradient_accumulation_steps == prompts * gens == 96
    assert t.per_device_train_batch_size == before.trainer.per_device_train_batch_size  # same micro-batches
    assert t.num_iterations == SEED_ITERATIONS[experiment] and t.loss_type == "bnpo" and t.beta == 0.001
    # The experiment's processor limits and lengths survive the swap to the tiny model.
    assert cfg.model.max_pixels == before.model.max_pixels and cfg.model.min_pixels == before.model.min_pixels
    assert t.max_completion_length == 1024 and t.max_length == 8192
    assert cfg.rollout.max_model_len == before.rollout.max_model_len
    # Every difference from the experiment is in the table, and the table holds nothing else.
    a, b = _flat(before), _flat(cfg)
    changed = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k) and not k.startswith("rehearsal.")}
    assert changed == {s["setting"] for s in swaps}
    assert {"model.name_or_path", "rollout.backend", "deepspeed.enabled", "launcher.nproc_per_node"} <= changed


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_cpu_preset_takes_the_rehearsals_hardware_swaps_and_shrinks_the_rest(experiment, tmp_path):
    """One home for what a CPU needs: +preset=cpu swaps exactly the rehearsal's hardware settings (the same
    table), and its own YAML, not the rehearsal's layout rule, sets the batch and the steps."""
    rehearsal = compose_cfg([f"+experiment={experiment}", "+preset=rehearsal"], run_dir=tmp_path)
    cpu = compose_cfg([f"+experiment={experiment}", "+preset=cpu"], run_dir=tmp_path)
    hardware = ("model.", "trainer.bf16", "rollout.", "deepspeed.", "launcher.", "dataset.source",
                "dataset.tasks.")
    swapped = {s["setting"]: s["rehearsal"] for s in apply_rehearsal(cpu)}
    expected = {s["setting"]: s["rehearsal"] for s in apply_rehearsal(rehearsal)
                if s["setting"].startswith(hardware) and not s["setting"].endswith(("num_samples", "eval_size"))}
    assert swapped == expected and "model.name_or_path" in swapped
    t = cpu.trainer
    assert (t.gradient_accumulation_steps, t.per_device_train_batch_size, t.max_steps) == (1, 16, 50)
    assert not cpu.model.warmstart.enabled and list(cpu.logger.report_to) == []  # logger=none: no wandb


def _rows_needed(experiment: str) -> int:
    prompts, gens = SEED_BATCH[experiment]
    train = prompts * (2 // SEED_ITERATIONS[experiment])  # a generation batch serves num_iterations steps
    return train + 48 // gens  # + one eval batch (8 x 6 ranks completions)


# One rehearsal per distinct trainer shape: ClevrCount (24 generations, one iteration, a 1024-token
# context) and GeoQA (8 generations, two iterations, repetition penalty, clipping 0.5). Open R1 and the r1v_mix
# mixture run GeoQA's trainer on other data: test_unrehearsed_experiments_... shows the configs differ only in data
# and image limits, and builds and pre-flights their data; tests/test_mixture_run.py trains a mixture end to end.
REHEARSED = ["clevr_count", "geoqa"]
# What an unrehearsed experiment may change against GeoQA's rehearsed config: its data and the image limit.
DATA_KEYS = ("dataset.", "model.max_pixels", "model.min_pixels", "launcher.master_port", "rehearsal.")


@pytest.mark.parametrize("experiment", ["openr1_mm", "r1v_mix"])
def test_unrehearsed_experiments_share_a_rehearsed_trainer_and_load_their_data(experiment, tmp_path):
    from data.data_fixtures import png_bytes
    from mmr1.data import build_datasets, resolve_pixel_limits
    from mmr1.data.preflight import data_skips_long_prompts, preflight
    from mmr1.models.policy import prepare_policy

    local = []
    if experiment == "openr1_mm":  # the hub's schema, one picture above MAX_PIXELS=262144
        data = write_hub_parquet(tmp_path / "hub" / "data" / "train-00000-of-00001.parquet", experiment, n=16,
                                 images={0: png_bytes((1024, 768))})
        local = ["dataset.source=local", f"dataset.path={data.parent.parent}"]
    cfg = compose_cfg([f"+experiment={experiment}", "+preset=rehearsal", *local], run_dir=tmp_path / "run")
    geoqa = compose_cfg(["+experiment=geoqa", "+preset=rehearsal"], run_dir=tmp_path / "run")
    apply_rehearsal(cfg), apply_rehearsal(geoqa)
    a, b = _flat(geoqa), _flat(cfg)
    differ = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
    assert differ and all(k.startswith(DATA_KEYS) for k in differ), sorted(differ)
    # The data as the rehearsal would train on it: built, every prompt measured against the experiment's bounds.
    limits = resolve_pixel_limits(cfg.model.max_pixels, cfg.model.min_pixels)
    processor = prepare_policy(cfg, warmstart=False, limits=limits).processor
    bundle = build_datasets(cfg.dataset, min_pixels=limits.min_pixels, max_pixels=limits.max_pixels,
                            seed=cfg.trainer.seed)
    fit = preflight(processor, bundle, max_length=cfg.trainer.max_length, context=cfg.rollout.max_model_len,
                    max_completion_length=cfg.trainer.max_completion_length, skip=data_skips_long_prompts(cfg.dataset))
    held_out = len(bundle.eval) if bundle.eval is not None else 0
    assert len(bundle.train) == (cfg.dataset.limit if experiment == "r1v_mix" else 16 - held_out) and held_out
    assert 0 < fit.longest_image <= 262144 // (28 * 28) and fit.longest_prompt <= cfg.trainer.max_length
    if experiment == "openr1_mm":
        assert fit.longest_image > 300  # the 1024x768 picture, resized to the cap, not skipped
    else:
        assert set(bundle.train["task"]) == {"clevr_count", "geoqa", "openr1_mm"}


@pytest.mark.slow
@pytest.mark.parametrize("experiment", REHEARSED)
def test_seed_experiment_rehearses_on_hub_schema_files(experiment, tmp_path):
    data = write_hub_parquet(tmp_path / "hub" / "data" / "train-00000-of-00001.parquet", experiment,
                             n=_rows_needed(experiment))
    run_dir = tmp_path / "run"
    proc = run_cli([f"+experiment={experiment}", "+preset=rehearsal", "dataset.source=local",
                    f"dataset.path={data.parent.parent}", f"hydra.run.dir={run_dir}"], timeout=1800)
    # The table of swaps is printed at start and kept in the run directory.
    assert "settings swapped" in proc.stdout and "model.name_or_path" in proc.stdout
    swaps = {s["setting"]: s for s in json.loads((run_dir / "rehearsal.json").read_text())}
    assert swaps["rollout.backend"]["experiment"] == "vllm" and swaps["rollout.backend"]["rehearsal"] == "hf"
    assert "dataset.source" not in swaps  # the local hub-schema files, as given

    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["status"] == "finished" and info["steps"] == 2 and info["world_size"] == 1
    args = json.loads((run_dir / "grpo_args.json").read_text())
    assert args["loss_type"] == "bnpo" and args["adam_beta2"] == 0.999 and args["max_completion_length"] == 1024
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "eval_reward" not in r]
    assert [r["step"] for r in train_rows] == [1, 2]
    assert all("grad_norm" in r and "loss" in r for r in train_rows)  # a random model may earn no advantage
    # One generation batch per step, or one per num_iterations steps (TRL logs rewards where it generates).
    generated = [r for r in train_rows if "reward" in r]
    assert len(generated) == 2 // SEED_ITERATIONS[experiment] and generated[0]["num_tokens"] > 0
    evals = [json.loads(line) for line in (run_dir / "eval_metrics.jsonl").read_text().splitlines()]
    assert len(evals) == 1 and evals[0]["step"] == 2
    assert (run_dir / "checkpoint-2" / "mmr1_complete.json").exists()
    assert (run_dir / "final" / "config.json").exists()
    # --train_type full as ms-swift v3.2.1 ran it: the vision tower and merger frozen (freeze_vit/freeze_aligner),
    # bit-identical after training; the language model moved (weight decay 0.1 alone moves it at lr 1e-6).
    assert changed_parts(info["model_path"], run_dir / "final") == {
        "language_model": True, "vision_tower": False, "aligner": False}

    fit = json.loads((run_dir / "preflight.json").read_text())
    if experiment == "clevr_count":
        # 480x320 RGBA -> 476x308 = 187 image tokens; --vllm_max_model_len 1024 ends every completion at
        # 1024 - prompt tokens, as vLLM did for the seed (the random tiny model never stops on its own).
        assert fit["longest_image"] == 187
        longest = max(r["completions/max_length"] for r in generated)
        assert longest <= 1024 - fit["longest_prompt"]  # every ClevrCount prompt has the same text and image size
        assert longest < 1024


def test_mixture_rehearsal_swaps_each_task_to_its_stand_in(tmp_path):
    # r1v_mix: the hub tasks become their stand-ins, the mixed set the steps' 12 prompts,
    # the eval batch (48 completions = 6 prompts) split over the three tasks' own held-out rows.
    before = compose_cfg(["+experiment=r1v_mix"], run_dir=tmp_path)
    cfg = compose_cfg(["+experiment=r1v_mix", "+preset=rehearsal"], run_dir=tmp_path)
    swaps = apply_rehearsal(cfg)
    t = cfg.trainer
    assert t.per_device_train_batch_size * t.gradient_accumulation_steps == 12 * t.num_generations == 96
    assert cfg.dataset.limit == 12
    for name, task in cfg.dataset.tasks.items():
        assert task.source.value == "synthetic" and task.generator == before.dataset.tasks[name].generator
        assert task.eval_size == 2 and task.query_suffix == before.dataset.tasks[name].query_suffix
    a, b = _flat(before), _flat(cfg)
    changed = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k) and not k.startswith("rehearsal.")}
    assert changed == {s["setting"] for s in swaps}


@pytest.mark.slow
@pytest.mark.vllm
def test_clevr_count_rehearses_with_vllm_enforcing_its_context(tmp_path):
    """`rehearsal.rollout=vllm`: the rollouts go through vLLM (its CPU build, colocate in this process), so vLLM
    itself ends each completion at ClevrCount's `vllm_max_model_len 1024`, with the experiment's sampling settings
    and image limits. One step (a step is ~2 min of 96 completions on 2 cores), its evaluation and checkpoint."""
    data = write_hub_parquet(tmp_path / "hub" / "data" / "train-00000-of-00001.parquet", "clevr_count", n=4 + 2)
    run_dir = tmp_path / "run"
    run_cli(["+experiment=clevr_count", "+preset=rehearsal", "rehearsal.rollout=vllm", "rehearsal.max_steps=1",
             "dataset.source=local", f"dataset.path={data.parent.parent}", f"hydra.run.dir={run_dir}"], timeout=1800)
    swaps = {s["setting"]: s for s in json.loads((run_dir / "rehearsal.json").read_text())}
    assert "rollout.backend" not in swaps  # vLLM stays
    assert (swaps["rollout.vllm_mode"]["experiment"], swaps["rollout.vllm_mode"]["rehearsal"]) == ("server", "colocate")
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["status"] == "finished" and info["steps"] == 1
    args = json.loads((run_dir / "grpo_args.json").read_text())
    assert args["use_vllm"] is True and args["vllm_mode"] == "colocate" and args["vllm_max_model_length"] == 1024
    (row,) = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if "reward" in line
              and "eval_reward" not in line]
    fit = json.loads((run_dir / "preflight.json").read_text())
    # The random tiny model never stops: vLLM ends every completion where its 1024-token context does, counting the
    # prompt as the trainer does (each image's 187 tokens once: mmr1.rollout.vllm_engine, trl#6294).
    assert row["completions/max_length"] == row["completions/min_length"] == 1024 - fit["longest_prompt"]
    assert row["rollout/vision_token_cuts"] == 0
    assert (run_dir / "checkpoint-1" / "mmr1_complete.json").exists()
    assert len((run_dir / "eval_metrics.jsonl").read_text().splitlines()) == 1
