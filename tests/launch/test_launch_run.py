"""launch(): trains in this process when the plan says so, refuses GPU work on a CPU machine, and runs a
rollout server's whole lifetime around the trainers (a stand-in server: vLLM needs a GPU)."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
from launch_helpers import compose_cfg, free_port, processes_mentioning

import mmr1.launch.plan as plan_mod
import mmr1.launch.run as run_mod
from mmr1.launch import LaunchError, LayoutError, launch

FAKE_SERVER = textwrap.dedent("""
    import http.server, sys
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404); self.end_headers()
        def log_message(self, *a): pass
    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
""")
FAKE_TRAINERS = textwrap.dedent("""
    import os, sys, urllib.request
    ok = urllib.request.urlopen(sys.argv[1] + "/health").status == 200
    open(sys.argv[2], "w").write(os.environ.get("CUDA_VISIBLE_DEVICES", "?") if ok else "unhealthy")
    sys.exit(int(sys.argv[3]))
""")


@pytest.fixture(autouse=True)
def _plain_env(monkeypatch):
    for key in ("NPROC_PER_NODE", "NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "CUDA_VISIBLE_DEVICES",
                "LOCAL_RANK", "RANK", "MMR1_LAUNCHED", "SUBMITIT_EXECUTOR"):
        monkeypatch.delenv(key, raising=False)
    # These tests are about a CPU machine: on a GPU box (or --simulate-gpu) detection would plan a relaunch.
    import mmr1.launch.layout as layout_mod

    monkeypatch.setattr(layout_mod, "detect_gpus", lambda: 0)


def test_one_process_trains_here(tmp_path):
    cfg = compose_cfg([], run_dir=tmp_path)
    assert launch(cfg, lambda c: {"reward": 0.5}) == {"reward": 0.5}
    plan = json.loads((tmp_path / "launch.json").read_text())
    assert plan["relaunch"] is False and plan["processes"][0]["in_process"] is True


def test_gpu_work_on_a_cpu_machine_is_refused_before_anything_starts(tmp_path, monkeypatch):
    real_find_spec = run_mod.importlib.util.find_spec
    monkeypatch.setattr(run_mod.importlib.util, "find_spec",
                        lambda name, *a: None if name == "deepspeed" else real_find_spec(name, *a))
    cfg = compose_cfg(["+experiment=geoqa"], run_dir=tmp_path)
    with pytest.raises(LayoutError) as err:
        launch(cfg, lambda c: pytest.fail("must not train"))
    # Training against a vLLM server needs GPUs (NCCL weight sync); DeepSpeed does not (its CPU accelerator), it
    # only has to be installed.
    assert "rollout=vllm_server needs GPUs" in str(err.value) and "NCCL" in str(err.value)
    assert "DeepSpeed" not in str(err.value).split("\n")[1]
    assert "deepspeed is not installed" in str(err.value)


@pytest.mark.parametrize(("build", "refused"), [(None, "vllm is not installed"), ("gpu", "not vLLM's CPU build"),
                                                ("cpu", None)])
def test_colocate_on_a_cpu_machine_needs_vllms_cpu_build(build, refused, tmp_path, monkeypatch):
    monkeypatch.setattr(run_mod, "vllm_build", lambda: build)
    cfg = compose_cfg(["rollout=vllm_colocate"], run_dir=tmp_path)
    if refused is None:  # the CPU build: colocate trains here, in this process
        assert launch(cfg, lambda c: {"reward": 1.0}) == {"reward": 1.0}
        return
    with pytest.raises(LayoutError, match=refused):
        launch(cfg, lambda c: pytest.fail("must not train"))


@pytest.mark.parametrize("trainer_rc", [0, 3])
def test_server_lifetime_around_the_trainers(trainer_rc, tmp_path, monkeypatch):
    port = free_port()
    (tmp_path / "server.py").write_text(FAKE_SERVER)
    (tmp_path / "trainers.py").write_text(FAKE_TRAINERS)
    seen = tmp_path / "trainers_saw"
    monkeypatch.setattr(plan_mod, "server_command", lambda cfg, model_path=None: [
        sys.executable, str(tmp_path / "server.py"), str(port)])
    monkeypatch.setattr(run_mod, "accelerate_command", lambda *a: [
        sys.executable, str(tmp_path / "trainers.py"), f"http://127.0.0.1:{port}", str(seen), str(trainer_rc)])
    monkeypatch.setattr(run_mod, "_check_can_run", lambda cfg, plan: None)  # no vLLM / GPU here
    monkeypatch.setattr(run_mod, "_prepare_model", lambda cfg: None)
    cfg = compose_cfg(["rollout=vllm_server", f"rollout.server_port={port}", "rollout.server_gpus=1",
                       "rollout.data_parallel_size=1", "launcher.gpus_per_node=2", "rollout.server_timeout_s=30",
                       f"launcher.master_port={free_port()}"], run_dir=tmp_path / "run")
    if trainer_rc:
        with pytest.raises(LaunchError, match=f"exited with code {trainer_rc}"):
            launch(cfg, lambda c: pytest.fail("must relaunch"))
    else:
        launch(cfg, lambda c: pytest.fail("must relaunch"))
    assert seen.read_text() == "0"  # the trainers ran after /health answered, on GPU 0 (the server on 1)
    plan = json.loads((tmp_path / "run" / "launch.json").read_text())
    assert [p["role"] for p in plan["processes"]] == ["launcher", "trainer", "rollout_server"]
    assert plan["processes"][-1]["env"] == {"CUDA_VISIBLE_DEVICES": "1", "VLLM_SERVER_DEV_MODE": "1"}
    assert not processes_mentioning(str(tmp_path / "server.py"))  # the server was stopped
