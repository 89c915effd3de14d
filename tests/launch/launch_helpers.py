"""Helpers for the launch tests: plans for machines that are not this one (a clean env, a stated GPU
count), and a look for processes a run left behind."""

from __future__ import annotations

import importlib.util
import socket
import sys
from pathlib import Path

import psutil

from mmr1.launch import write_launch_plan


def _spine_conftest():
    """tests/conftest.py, loaded by path: in a whole-suite run `import conftest` can resolve to another
    directory's conftest.py (pytest registers each under the same module name)."""
    name = "_mmr1_tests_conftest"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "conftest.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_spine = _spine_conftest()
EXPERIMENTS, REPO, TINY = _spine.EXPERIMENTS, _spine.REPO, _spine.TINY
compose_cfg, run_cli = _spine.compose_cfg, _spine.run_cli


def plan_for(tmp_path: Path, overrides: list[str], *, gpus: int = 0, env: dict | None = None):
    """(launch.json as a dict, Layout) for ``overrides`` on a machine with ``gpus`` GPUs and env ``env``."""
    cfg = compose_cfg(overrides, run_dir=tmp_path / "run")
    return write_launch_plan(cfg, tmp_path, overrides=list(overrides), env=env or {}, gpus=gpus)


def by_role(plan: dict, role: str) -> list[dict]:
    return [p for p in plan["processes"] if p["role"] == role]


def arg(cmd: list[str], flag: str) -> str:
    """The value after ``flag`` in a command line."""
    return cmd[cmd.index(flag) + 1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
