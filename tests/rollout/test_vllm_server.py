"""vLLM's own server on a CPU, started from the command line mmr1's launch plan gives it (TRL's `vllm serve` line),
and `mmr1.evaluate` generating through it: the same greedy completions as generating in-process.

Training against a server stays GPU-only (TRL's weight sync to a server is NCCL only); generating does not."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from mmr1.launch.vllm_server import server_command, server_env, wait_healthy
from mmr1.models.tiny import tiny_qwen2_5_vl_path
from testkit import compose_cfg, free_port, run_cli

pytestmark = [pytest.mark.vllm, pytest.mark.slow]
EVAL = ["model.warmstart.enabled=false", "dataset.num_samples=16", "dataset.eval_size=6", "eval.batch_size=3",
        "trainer.max_completion_length=12"]


def test_evaluate_generates_through_a_vllm_server_on_a_cpu(tmp_path):
    port = free_port()
    cfg = compose_cfg(["rollout=vllm_server", f"rollout.server_port={port}", "rollout.server_host=127.0.0.1",
                       "rollout.data_parallel_size=1", "rollout.enforce_eager=true", "rollout.max_model_len=1024",
                       "rollout.server_extra_args=[--kv-cache-memory-bytes,1073741824]"])
    cmd = server_command(cfg, str(tiny_qwen2_5_vl_path()))
    log = tmp_path / "server.log"
    with open(log, "w") as out:
        server = subprocess.Popen(cmd, env={**os.environ, **server_env([])}, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", 600, proc=server, log_path=log)
        run_cli([*EVAL, f"eval.output={tmp_path / 'served.json'}", f"eval.server_url=http://127.0.0.1:{port}",
                 f"hydra.run.dir={tmp_path / 'served'}"], module="mmr1.evaluate")
    finally:
        server.terminate()
        server.wait(60)
    # In-process transformers (eval.backend=auto would pick vLLM here: it is installed).
    run_cli([*EVAL, f"eval.output={tmp_path / 'local.json'}", "eval.backend=hf", f"hydra.run.dir={tmp_path / 'local'}"],
            module="mmr1.evaluate")
    served, local = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("served", "local"))
    assert served["rows"] == local["rows"] == 6
    # Greedy in float32 on the same weights: the same completions, token for token (the text decoded from them).
    assert [r["greedy"]["text"] for r in served["records"]] == [r["greedy"]["text"] for r in local["records"]]
    assert [r["greedy"]["length"] for r in served["records"]] == [r["greedy"]["length"] for r in local["records"]]
    assert all(r["greedy"]["text"] for r in served["records"])
