"""Launch plans computed for machines that are not this one: the seed's 8-GPU node, a 4-GPU node, two
nodes; the env conventions; the relaunch rule; and the clashes that must fail before anything starts."""

from __future__ import annotations

import json

import pytest
from launch_helpers import EXPERIMENTS, arg, by_role, compose_cfg, plan_for, run_cli

from mmr1.launch import LayoutError
from mmr1.train import train

SEED_8 = ["launcher.gpus_per_node=8"]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_seed_experiments_on_one_8_gpu_node(experiment, tmp_path):
    plan, _ = plan_for(tmp_path, [f"+experiment={experiment}", *SEED_8])
    trainers = by_role(plan, "trainer")
    assert [t["rank"] for t in trainers] == list(range(6))
    assert [t["gpu"] for t in trainers] == ["0", "1", "2", "3", "4", "5"]
    assert all(t["env"]["CUDA_VISIBLE_DEVICES"] == "0,1,2,3,4,5" for t in trainers)
    assert {t["env"]["WORLD_SIZE"] for t in trainers} == {"6"}
    (launcher,) = by_role(plan, "launcher")
    cmd = launcher["command"]
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"] and arg(cmd, "--num_processes") == "6"
    assert "--use_deepspeed" in cmd and arg(cmd, "--deepspeed_config_file").endswith("deepspeed.json")
    assert plan["deepspeed"]["stage"] == 3
    (server,) = by_role(plan, "rollout_server")
    scmd = server["command"]
    assert scmd[1] == "-m" and scmd[3] == "serve"  # vLLM's own server, as TRL 1.16 builds its line
    assert arg(scmd, "--data-parallel-size") == "2" and arg(scmd, "--gpu-memory-utilization") == "0.6"
    assert server["env"] == {"CUDA_VISIBLE_DEVICES": "6,7", "VLLM_SERVER_DEV_MODE": "1"}
    assert server["gpus"] == ["6", "7"]
    assert server["ports"]["http"] == 8000
    # openr1_mm carries the seed's MASTER_PORT=29600.
    assert plan["master_port"] == (29600 if experiment == "openr1_mm" else 29500)
    assert arg(cmd, "--main_process_port") == str(plan["master_port"])


def test_one_node_with_4_gpus(tmp_path):
    # The seed's NPROC_PER_NODE=6 cannot fit; unset, the trainers take the GPUs the server leaves.
    plan, _ = plan_for(tmp_path, ["+experiment=geoqa", "launcher.gpus_per_node=4", "launcher.nproc_per_node=null"])
    assert [t["gpu"] for t in by_role(plan, "trainer")] == ["0", "1"]
    assert by_role(plan, "rollout_server")[0]["gpus"] == ["2", "3"]
    assert plan["sources"]["nproc_per_node"] == "GPUs not reserved for rollouts"
    # Colocated rollouts reserve nothing: all 4 GPUs train.
    plan, _ = plan_for(tmp_path, ["+experiment=geoqa", "rollout=vllm_colocate", "launcher.gpus_per_node=4",
                                  "launcher.nproc_per_node=null"])
    assert [t["gpu"] for t in by_role(plan, "trainer")] == ["0", "1", "2", "3"]
    assert not by_role(plan, "rollout_server")


@pytest.mark.parametrize("node_rank", [0, 1])
def test_two_nodes(node_rank, tmp_path):
    overrides = ["+experiment=geoqa", *SEED_8, "launcher.nnodes=2", f"launcher.node_rank={node_rank}",
                 "launcher.master_addr=10.0.0.1"]
    plan, _ = plan_for(tmp_path, overrides)
    trainers = by_role(plan, "trainer")
    assert [t["rank"] for t in trainers] == [6 * node_rank + i for i in range(6)]
    assert {t["env"]["WORLD_SIZE"] for t in trainers} == {"12"}
    cmd = by_role(plan, "launcher")[0]["command"]
    assert (arg(cmd, "--num_processes"), arg(cmd, "--num_machines"), arg(cmd, "--machine_rank"),
            arg(cmd, "--main_process_ip")) == ("12", "2", str(node_rank), "10.0.0.1")
    # The rollout server lives on node 0 only (TRL's client is trainer rank 0).
    assert len(by_role(plan, "rollout_server")) == (1 if node_rank == 0 else 0)


def test_env_conventions_are_defaults_and_config_wins(tmp_path):
    env = {"NPROC_PER_NODE": "4", "NNODES": "2", "NODE_RANK": "1", "MASTER_ADDR": "10.1.1.1",
           "MASTER_PORT": "29999", "CUDA_VISIBLE_DEVICES": "2,3,4,5"}
    plan, layout = plan_for(tmp_path, ["launcher=accelerate"], env=env)
    assert (layout.nproc_per_node, layout.nnodes, layout.node_rank, layout.master_addr, layout.master_port) == (
        4, 2, 1, "10.1.1.1", 29999)
    assert layout.trainer_gpu_ids == ["2", "3", "4", "5"]
    assert plan["sources"]["nproc_per_node"] == "env NPROC_PER_NODE"
    plan, layout = plan_for(tmp_path, ["launcher=accelerate", "launcher.nproc_per_node=2", "launcher.master_port=30001",
                                       "launcher.gpu_ids='4,5'"], env=env)
    assert (layout.nproc_per_node, layout.master_port, layout.trainer_gpu_ids) == (2, 30001, ["4", "5"])
    assert layout.nnodes == 2  # still the env's


def test_a_submitit_slurm_job_supplies_the_nodes(tmp_path, monkeypatch):
    # submitit's JobEnvironment reads the process environment itself.
    for key, value in {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "7", "SLURM_JOB_NUM_NODES": "2",
                       "SLURM_NODEID": "1", "SLURM_JOB_NODELIST": "gpu[01-02]"}.items():
        monkeypatch.setenv(key, value)
    plan, layout = plan_for(tmp_path, ["+experiment=geoqa", *SEED_8], env={"SUBMITIT_EXECUTOR": "slurm"})
    assert (layout.nnodes, layout.node_rank, layout.master_addr) == (2, 1, "gpu01")
    assert plan["sources"]["master_addr"] == "SLURM job"
    assert (tmp_path / "launch.node1.json").exists() and not by_role(plan, "rollout_server")


@pytest.mark.parametrize(("overrides", "env", "gpus", "relaunch"), [
    ([], {}, 0, False),                              # the tiny default: this process
    ([], {"NPROC_PER_NODE": "2"}, 0, True),          # launcher=auto honours NPROC_PER_NODE>1
    ([], {}, 8, True),                               # one trainer must not see 8 GPUs
    (["launcher=accelerate", "launcher.nproc_per_node=1"], {}, 0, True),
])
def test_relaunch_rule(overrides, env, gpus, relaunch, tmp_path):
    plan, layout = plan_for(tmp_path, overrides, env=env, gpus=gpus)
    assert layout.relaunch is relaunch
    assert bool(by_role(plan, "launcher")) is relaunch


@pytest.mark.parametrize(("overrides", "env", "gpus", "needle"), [
    ([], {"NPROC_PER_NODE": "2"}, 0, "2 processes"),
    (["deepspeed=zero2"], {}, 0, "DeepSpeed"),
    ([], {}, 8, "hiding 7 of 8 GPUs"),
])
def test_local_launcher_never_relaunches(overrides, env, gpus, needle, tmp_path):
    """launcher=local is this process or an error that says what asked for more (never accelerate launch)."""
    assert not plan_for(tmp_path, ["launcher=local"], env={}, gpus=0)[1].relaunch
    with pytest.raises(LayoutError, match="launcher=local") as err:
        plan_for(tmp_path, ["launcher=local", *overrides], env=env, gpus=gpus)
    assert needle in str(err.value)


@pytest.mark.parametrize(("overrides", "needles"), [
    # More processes than GPUs (the seed's 6 + 2 on a 4-GPU node).
    (["+experiment=geoqa", "launcher.gpus_per_node=4"], ["6 (launcher.nproc_per_node)", "+ 2", "= 8", "> 4"]),
    (["launcher=accelerate", "launcher.nproc_per_node=10", *SEED_8], ["10 (launcher.nproc_per_node)", "> 8"]),
    # Server GPUs overlapping the trainers'.
    (["+experiment=geoqa", *SEED_8, "rollout.server_gpu_ids='5,6'"], ["overlap", "0,1,2,3,4,5", "both use 5"]),
    # Generation batch not made of whole prompt groups across the ranks.
    (["+experiment=geoqa", *SEED_8, "trainer.num_generations=7"], ["x 6 processes", "= 96", "num_generations 7"]),
    (["+experiment=geoqa", *SEED_8, "rollout.data_parallel_size=4"], ["server_gpus=2", "data_parallel_size 4"]),
    (["+experiment=geoqa", *SEED_8, "rollout=vllm_colocate", "launcher.nproc_per_node=6",
      "rollout.tensor_parallel_size=4"], ["tensor_parallel_size=4", "6 trainer processes"]),
    (["+experiment=geoqa", *SEED_8, "launcher.nnodes=2"], ["loopback", "127.0.0.1"]),
    (["+experiment=geoqa", *SEED_8, "rollout.server_port=29500"], ["ports clash", "rollout.server_port=29500"]),
])
def test_clashes_fail_naming_the_numbers(overrides, needles, tmp_path):
    with pytest.raises(LayoutError) as err:
        plan_for(tmp_path, overrides)
    for needle in needles:
        assert needle in str(err.value)


def test_dry_run_cli_writes_the_seed_plan(tmp_path):
    run_dir = tmp_path / "d"
    run_cli(["+experiment=geoqa", "dry_run=true", "launcher.gpus_per_node=8", f"hydra.run.dir={run_dir}"],
            env={"CUDA_VISIBLE_DEVICES": "", "NPROC_PER_NODE": ""})
    plan = json.loads((run_dir / "launch.json").read_text())
    assert len(by_role(plan, "trainer")) == 6 and plan["deepspeed"]["stage"] == 3
    (server,) = by_role(plan, "rollout_server")
    assert server["gpus"] == ["6", "7"] and arg(server["command"], "--gpu-memory-utilization") == "0.6"
    assert arg(server["command"], "--data-parallel-size") == "2"
    # The plan shows the real run's rank command lines: same overrides, no dry_run, one run directory.
    rank_cmd = by_role(plan, "trainer")[0]["command"]
    assert "+experiment=geoqa" in rank_cmd and not any(a.startswith("dry_run") for a in rank_cmd)
    assert f"hydra.run.dir={run_dir.resolve()}" in rank_cmd
    args = json.loads((run_dir / "grpo_args.json").read_text())
    assert args["use_vllm"] is True and args["vllm_mode"] == "server"
    assert json.loads((run_dir / "deepspeed.json").read_text())["zero_optimization"]["stage"] == 3


def test_dry_run_colocate_grpo_args(tmp_path):
    cfg = compose_cfg(["+experiment=geoqa", "rollout=vllm_colocate", "dry_run=true", *SEED_8], run_dir=tmp_path)
    train(cfg)
    args = json.loads((tmp_path / "grpo_args.json").read_text())
    assert args["vllm_mode"] == "colocate" and args["vllm_gpu_memory_utilization"] == 0.6
    plan = json.loads((tmp_path / "launch.json").read_text())
    assert len(by_role(plan, "trainer")) == 6 and not by_role(plan, "rollout_server")


def test_dry_run_cli_fails_on_a_clash(tmp_path):
    proc = run_cli(["+experiment=geoqa", "dry_run=true", "launcher.gpus_per_node=4", f"hydra.run.dir={tmp_path}"],
                   check=False, env={"CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode != 0
    assert "= 8 > 4 (launcher.gpus_per_node) GPUs per node" in proc.stderr


def test_no_gpus_and_none_stated_plans_with_a_warning(tmp_path):
    # On a CPU machine the seed experiments still dry-run; the plan says it checked no GPU layout.
    plan, _ = plan_for(tmp_path, ["+experiment=geoqa"])
    assert plan["gpus_checked"] is False and "launcher.gpus_per_node" in plan["warnings"][0]
    assert len(by_role(plan, "trainer")) == 6


@pytest.mark.parametrize(("per_device", "accumulation", "num_generations", "eval_batch", "eval_strategy"), [
    (4, 1, 4, 4, "no"), (3, 1, 4, 4, "no"), (3, 4, 6, 4, "no"), (2, 3, 4, 4, "no"),
    (4, 1, 4, 3, "steps"), (4, 1, 4, 8, "steps"), (4, 2, 8, 6, "steps"),
])
def test_batch_rule_is_trls(per_device, accumulation, num_generations, eval_batch, eval_strategy, tmp_path):
    """mmr1's launcher-side batch check rejects exactly what TRL's GRPOConfig rejects (one process here)."""
    from omegaconf import OmegaConf
    from trl import GRPOConfig

    from mmr1.launch.layout import check_batch

    t = OmegaConf.create({"per_device_train_batch_size": per_device, "gradient_accumulation_steps": accumulation,
                          "num_generations": num_generations, "num_generations_eval": None,
                          "per_device_eval_batch_size": eval_batch, "eval_strategy": eval_strategy, "extra": {}})
    try:
        GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=per_device,
                   gradient_accumulation_steps=accumulation, num_generations=num_generations,
                   per_device_eval_batch_size=eval_batch, eval_strategy=eval_strategy,
                   do_eval=eval_strategy != "no", report_to="none", use_cpu=True)
        trl_rejects = False
    except ValueError:
        trl_rejects = True
    assert bool(check_batch(t, 1)) is trl_rejects
