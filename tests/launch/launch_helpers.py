"""Helpers for the launch tests: plans for machines that are not this one (a clean env, a stated GPU
count), and a look for processes a run left behind."""

from __future__ import annotations

from pathlib import Path

import psutil

from mmr1.launch import write_launch_plan
from testkit import EXPERIMENTS, REPO, TINY, compose_cfg, free_port, run_cli  # noqa: F401  (re-exported)


def plan_for(tmp_path: Path, overrides: list[str], *, gpus: int = 0, env: dict | None = None):
    """(launch.json as a dict, Layout) for ``overrides`` on a machine with ``gpus`` GPUs and env ``env``."""
    cfg = compose_cfg(overrides, run_dir=tmp_path / "run")
    return write_launch_plan(cfg, tmp_path, overrides=list(overrides), env=env or {}, gpus=gpus)


def by_role(plan: dict, role: str) -> list[dict]:
    return [p for p in plan["processes"] if p["role"] == role]


def arg(cmd: list[str], flag: str) -> str:
    """The value after ``flag`` in a command line."""
    return cmd[cmd.index(flag) + 1]



def processes_mentioning(text: str) -> list[psutil.Process]:
    """Live processes whose command line contains ``text`` (a run directory unique to one test)."""
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            if p.info["status"] != psutil.STATUS_ZOMBIE and any(text in a for a in p.info["cmdline"] or []):
                found.append(p)
        except psutil.Error:
            continue
    return found
