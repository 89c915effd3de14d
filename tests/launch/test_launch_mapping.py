"""Every rollout / launcher / deepspeed setting lands where its engine reads it: GRPOConfig keywords,
the `vllm serve` line TRL builds (parsed by vLLM's own parser where vLLM is installed), `accelerate launch` flags
(parsed by accelerate's)."""

from __future__ import annotations

import json

import pytest
from launch_helpers import arg, by_role, compose_cfg, plan_for

from mmr1.config.grpo_args import build_grpo_kwargs
from mmr1.launch import deepspeed_config, server_command
from mmr1.launch.plan import rank_args
from testkit import REPO

SERVER_8 = ["+experiment=geoqa", "launcher.gpus_per_node=8"]


def test_hf_rollout_maps_to_no_vllm():
    args = build_grpo_kwargs(compose_cfg(), "/r")
    assert args["use_vllm"] is False and not any(k.startswith("vllm_") and k != "vllm_importance_sampling_correction"
                                                  for k in args)
    assert "deepspeed" not in args


def test_colocate_rollout_maps_every_setting():
    cfg = compose_cfg(["rollout=vllm_colocate", "rollout.gpu_memory_utilization=0.45", "rollout.max_model_len=2048",
                       "rollout.tensor_parallel_size=2", "rollout.enable_sleep_mode=false",
                       "rollout.model_impl=transformers", "rollout.importance_sampling_correction=true"])
    args = build_grpo_kwargs(cfg, "/r")
    assert {k: args[k] for k in args if k.startswith("vllm_") or k == "use_vllm"} == {
        "use_vllm": True, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": 0.45,
        "vllm_max_model_length": 2048, "vllm_tensor_parallel_size": 2, "vllm_enable_sleep_mode": False,
        "vllm_model_impl": "transformers", "vllm_importance_sampling_correction": True}


def test_server_rollout_maps_client_settings():
    cfg = compose_cfg([*SERVER_8, "rollout.server_port=8011", "rollout.group_port=51300",
                       "rollout.server_timeout_s=900"])
    args = build_grpo_kwargs(cfg, "/r")
    assert (args["vllm_mode"], args["vllm_server_host"], args["vllm_server_port"], args["vllm_group_port"],
            args["vllm_server_timeout"]) == ("server", "127.0.0.1", 8011, 51300, 900.0)
    # Engine settings belong to the server's command line, not to the trainers.
    assert "vllm_gpu_memory_utilization" not in args and "vllm_tensor_parallel_size" not in args


def test_attach_to_a_running_server(tmp_path):
    overrides = [*SERVER_8, "rollout.server_base_url=http://rollouts:8000"]
    args = build_grpo_kwargs(compose_cfg(overrides), "/r")
    assert args["vllm_server_base_url"] == "http://rollouts:8000" and "vllm_server_host" not in args
    plan, _ = plan_for(tmp_path, overrides)
    assert not by_role(plan, "rollout_server") and plan["rollout"]["attach"] is True
    assert plan["trainer_gpus"] == [str(i) for i in range(6)]


SERVER_FLAGS = [*SERVER_8, "rollout.max_model_len=4096", "rollout.tensor_parallel_size=2",
                "rollout.data_parallel_size=1", "rollout.server_port=8123", "rollout.dtype=float16",
                "rollout.enable_prefix_caching=true", "rollout.enforce_eager=true", "model.trust_remote_code=true",
                "rollout.model_impl=transformers", "rollout.server_extra_args=[--max-num-seqs,64]"]


def test_server_command_is_the_vllm_serve_line_trl_builds():
    from trl.scripts.vllm_serve import build_command

    cmd = server_command(compose_cfg(SERVER_FLAGS), "/models/m")
    serve = cmd.index("serve")
    assert cmd[serve - 1] in ("vllm.entrypoints.cli.main", "mmr1.launch.vllm_cli") and cmd[serve + 1] == "/models/m"
    assert (arg(cmd, "--tensor-parallel-size"), arg(cmd, "--data-parallel-size"), arg(cmd, "--port"),
            arg(cmd, "--gpu-memory-utilization"), arg(cmd, "--max-model-len"), arg(cmd, "--dtype"),
            arg(cmd, "--model-impl"), arg(cmd, "--host")) == (
        "2", "1", "8123", "0.6", "4096", "float16", "transformers", "0.0.0.0")
    assert {"--enable-prefix-caching", "--enforce-eager", "--trust-remote-code"} <= set(cmd)
    # What TRL's client needs: NCCL weight transfer, log-probs after temperature, every log-prob.
    assert json.loads(arg(cmd, "--weight-transfer-config")) == {"backend": "nccl"}
    assert arg(cmd, "--logprobs-mode") == "processed_logprobs" and arg(cmd, "--max-logprobs") == "-1"
    # The image limits reach vLLM's processor; the user's extra flags come last, as they are.
    assert '--mm-processor-kwargs={"max_pixels": 401408, "min_pixels": 3136}' in cmd
    assert cmd[-2:] == ["--max-num-seqs", "64"]
    # TRL's own builder, nothing hand-written: the same line but for the CPU build's entry module.
    from trl.scripts.vllm_serve import ScriptArguments

    trl_cmd = build_command(ScriptArguments(
        model="/models/m", tensor_parallel_size=2, data_parallel_size=1, port=8123, gpu_memory_utilization=0.6,
        dtype="float16", max_model_len=4096, enable_prefix_caching=True, enforce_eager=True, trust_remote_code=True,
        vllm_model_impl="transformers"), ['--mm-processor-kwargs={"max_pixels": 401408, "min_pixels": 3136}',
                                          "--max-num-seqs", "64"])
    assert [a if a != "mmr1.launch.vllm_cli" else "vllm.entrypoints.cli.main" for a in cmd] == trl_cmd


@pytest.mark.vllm
def test_server_command_parses_with_vllms_own_parser():
    from vllm.entrypoints.cli import serve
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    cmd = server_command(compose_cfg(SERVER_FLAGS), "/models/m")
    parser = FlexibleArgumentParser()
    for sub in serve.cmd_init():
        sub.subparser_init(parser.add_subparsers(dest="subparser"))
    args = parser.parse_args(cmd[cmd.index("serve"):])
    assert (args.model_tag, args.tensor_parallel_size, args.data_parallel_size, args.port, args.max_model_len,
            args.dtype, args.enforce_eager, args.trust_remote_code, args.model_impl, args.logprobs_mode,
            args.max_logprobs, args.max_num_seqs) == (
        "/models/m", 2, 1, 8123, 4096, "float16", True, True, "transformers", "processed_logprobs", -1, 64)
    assert args.mm_processor_kwargs == {"max_pixels": 401408, "min_pixels": 3136}
    assert args.weight_transfer_config is not None and "nccl" in str(args.weight_transfer_config)


def test_clevr_server_images_fit_its_context():
    # ClevrCount: max_pixels null (Qwen's 12845056 = 16384 tokens) against --vllm_max_model_len 1024. vLLM
    # profiles with a dummy image at max_pixels, which must fit: capped at 1023 tokens of 28x28 pixels.
    cmd = server_command(compose_cfg(["+experiment=clevr_count"]), "/models/m")
    mm = json.loads(next(a for a in cmd if a.startswith("--mm-processor-kwargs=")).split("=", 1)[1])
    assert mm == {"max_pixels": 1023 * 28 * 28, "min_pixels": 3136}
    # GeoQA has no context setting: its MAX_PIXELS reaches vLLM unchanged.
    cmd = server_command(compose_cfg(["+experiment=geoqa"]), "/models/m")
    assert '--mm-processor-kwargs={"max_pixels": 401408, "min_pixels": 3136}' in cmd


def test_gpu_extra_takes_vllm_from_trls_own_extra():
    # TRL's server/client speak to a narrow vLLM range (TRL 1.16: >=0.22.0,<=0.31.0); `.[gpu]` must not drift.
    from importlib.metadata import requires

    import tomllib

    gpu = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]
    assert any(dep.startswith("trl[vllm]") for dep in gpu) and not any(dep.startswith("vllm") for dep in gpu)
    assert any(r.startswith("vllm") and 'extra == "vllm"' in r for r in requires("trl"))


@pytest.mark.parametrize(("overrides", "gpus", "expect"), [
    (SERVER_8, 8, {"use_deepspeed": True, "num_processes": 6, "mixed_precision": "bf16"}),
    (["launcher=accelerate", "launcher.nproc_per_node=2"], 0, {"multi_gpu": True, "num_processes": 2,
                                                               "mixed_precision": "no", "use_deepspeed": False}),
    (["launcher=accelerate", "launcher.nproc_per_node=1"], 0, {"cpu": True, "num_processes": 1}),
    (["launcher=accelerate", "launcher.nproc_per_node=4", "deepspeed=zero2", "trainer.bf16=true",
      "launcher.extra_args=[--rdzv_backend,c10d]"], 4, {"use_deepspeed": True, "rdzv_backend": "c10d"}),
])
def test_accelerate_command_parses_with_accelerates_parser(overrides, gpus, expect, tmp_path):
    from accelerate.commands.launch import launch_command_parser

    plan, layout = plan_for(tmp_path, overrides, gpus=gpus)
    cmd = by_role(plan, "launcher")[0]["command"]
    ns = launch_command_parser().parse_args(cmd[3:])
    assert ns.module and ns.training_script == "mmr1.train"
    assert (ns.num_machines, ns.machine_rank, ns.main_process_ip, ns.main_process_port) == (
        layout.nnodes, layout.node_rank, layout.master_addr, layout.master_port)
    for key, value in expect.items():
        assert getattr(ns, key) == value, key
    if ns.use_deepspeed:
        assert ns.deepspeed_config_file == str(tmp_path.resolve() / "deepspeed.json")
    assert ns.training_script_args[-2:] == [f"hydra.run.dir={tmp_path.resolve()}", "hydra.output_subdir=null"]


def test_rank_args_keep_overrides_and_fix_one_run_dir(tmp_path):
    args = rank_args(["+experiment=geoqa", "trainer.beta=0.01", "hydra.run.dir=outputs/x", "dry_run=true",
                      "model.name_or_path='a b'"], tmp_path)
    assert args == ["+experiment=geoqa", "trainer.beta=0.01", "model.name_or_path='a b'",
                    f"hydra.run.dir={tmp_path.resolve()}", "hydra.output_subdir=null"]


@pytest.mark.parametrize(("group", "stage", "offload"), [("zero2", 2, False), ("zero3", 3, False),
                                                          ("zero3_offload", 3, True)])
def test_deepspeed_groups(group, stage, offload, tmp_path):
    cfg = compose_cfg([f"deepspeed={group}", "trainer.bf16=true"])
    ds = deepspeed_config(cfg.deepspeed)
    zero = ds["zero_optimization"]
    assert zero["stage"] == stage and ds["bf16"] == {"enabled": "auto"}
    # Everything the Trainer knows is "auto": filled from grpo_args.json, never contradicting it.
    assert all(ds[k] == "auto" for k in ("train_batch_size", "train_micro_batch_size_per_gpu",
                                         "gradient_accumulation_steps", "gradient_clipping"))
    assert ("offload_optimizer" in zero) is offload and ("offload_param" in zero) is offload
    assert ("optimizer" in ds) is offload  # DeepSpeed's CPU Adam: it refuses a torch optimizer with offload
    if stage == 3:
        assert zero["stage3_gather_16bit_weights_on_model_save"] is True
    args = build_grpo_kwargs(cfg, tmp_path)
    assert args["deepspeed"] == str(tmp_path / "deepspeed.json")
    assert args.get("ds3_gather_for_generation", None) == (True if stage == 3 else None)
    json.dumps(ds)  # JSON-serialisable as written


def test_deepspeed_extra_and_bf16_pin():
    cfg = compose_cfg(["deepspeed=zero3", "deepspeed.bf16=true",
                       "+deepspeed.extra={zero_optimization: {sub_group_size: 100}}"])
    ds = deepspeed_config(cfg.deepspeed)
    assert ds["bf16"]["enabled"] is True and ds["zero_optimization"]["sub_group_size"] == 100
    assert ds["zero_optimization"]["stage"] == 3  # merged, not replaced


def test_ds3_without_gather_clashes_with_vllm(tmp_path):
    from mmr1.launch import LayoutError

    with pytest.raises(LayoutError, match="gather_for_generation"):
        plan_for(tmp_path, [*SERVER_8, "deepspeed.gather_for_generation=false"])
