"""Fixtures shared by every test directory; the helpers themselves live in tests/testkit.py."""

from __future__ import annotations

import importlib.machinery
import os
import shutil
import sys
import tempfile
import types

import pytest

from testkit import EXPERIMENTS, REPO, TINY, clean_environ, compose_cfg, run_cli  # noqa: F401  (re-exported)

# The machine's own settings must not steer the tests: NPROC_PER_NODE, MAX_PIXELS, SLURM_*, wandb keys
# (testkit.STEERING_ENV) are dropped from this session's environment, so from every run it starts too.
for _name in set(os.environ) - set(clean_environ(dict(os.environ))):
    del os.environ[_name]
# One model cache per test session ($MMR1_CACHE, read by mmr1.models.tiny.cache_root): the user's
# ~/.cache/mmr1 is never read or written, and the tiny model and each warm-start are built once per session, then
# shared by every test, every subprocess and every pytest-xdist worker (the workers inherit the controller's
# environment: _SESSION_CACHE names the controller's folder; mmr1.models.tiny.build_lock makes one worker build
# an entry while the others wait for it).
_SESSION_CACHE = "_MMR1_TEST_SESSION_CACHE"
_WORKER = "PYTEST_XDIST_WORKER" in os.environ
if _WORKER and os.path.isdir(os.environ.get(_SESSION_CACHE, "")):
    _CACHE = os.environ[_SESSION_CACHE]
else:
    _CACHE = tempfile.mkdtemp(prefix="mmr1-test-cache-")
    os.environ[_SESSION_CACHE] = _CACHE
os.environ["MMR1_CACHE"] = _CACHE
if _WORKER:  # two workers share the cores: one thread each for what a test runs in its own process
    import torch

    torch.set_num_threads(1)
# The fake accelerator modules --simulate-gpu makes importable (what `pip install .[gpu]` brings).
_GPU_EXTRA = ("vllm", "deepspeed")


def pytest_addoption(parser):
    parser.addoption("--simulate-gpu", action="store_true",
                     help="run as on a GPU box with .[gpu] installed: torch sees 8 CUDA devices, vllm and "
                          "deepspeed import (fakes); tests that plan or launch must not depend on the machine")


def _has_vllm() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


# The longest runs of the suite (minutes each: the warm-started default job, the rehearsals), then every other test
# that trains, then the rest: under xdist the long ones start at once on both workers and the short ones fill the
# gaps at the end (longest first), instead of a rehearsal starting last on one worker while the other sits idle.
LONGEST_FIRST = ("tests/test_train.py::test_default_job", "tests/test_rehearsal.py::test_seed_experiment",
                 "tests/test_rehearsal.py::test_clevr_count_rehearses_with_vllm")


def _run_order(item) -> int:
    for rank, prefix in enumerate(LONGEST_FIRST):
        if item.nodeid.startswith(prefix):
            return rank
    return len(LONGEST_FIRST) + (0 if item.get_closest_marker("slow") or item.get_closest_marker("vllm") else 1)


@pytest.hookimpl(tryfirst=True)  # before xdist's loadgroup reads the groups
def pytest_collection_modifyitems(config, items):
    """Tests marked ``vllm`` run real vLLM: where it is not installed they are deselected (and counted in the
    header line below), never skipped one by one; CI runs them in its vLLM stage (.ci/run, scripts/vllm_cpu_env.sh).
    Where they run, they run one after another on one xdist worker (each starts an engine that takes the cores).
    Every run: the longest tests first (LONGEST_FIRST; a stable sort, so files keep their own order)."""
    items.sort(key=_run_order)
    if _has_vllm():
        for item in items:
            if item.get_closest_marker("vllm"):
                item.add_marker(pytest.mark.xdist_group("vllm"))
        return
    keep = [i for i in items if not i.get_closest_marker("vllm")]
    dropped = [i for i in items if i.get_closest_marker("vllm")]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
        config._mmr1_vllm_deselected = len(dropped)


def pytest_terminal_summary(terminalreporter, config):
    n = getattr(config, "_mmr1_vllm_deselected", 0)
    if n:
        terminalreporter.write_line(f"mmr1: {n} tests marked vllm deselected (no vLLM here); they run in the vLLM "
                                    "environment: bash scripts/vllm_cpu_env.sh DIR && DIR/bin/python -m pytest -m vllm")


def pytest_unconfigure(config):
    if not _WORKER:  # the controller (or a run without xdist) owns the shared cache
        shutil.rmtree(_CACHE, ignore_errors=True)


def _fake_module(name: str) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__spec__ = importlib.machinery.ModuleSpec(name, loader=None)
    mod.__version__ = "0.0.0+mmr1-test-fake"
    return mod


@pytest.fixture(autouse=True)
def _simulated_gpu_machine(request, monkeypatch):
    """With --simulate-gpu: what a GPU machine with the [gpu] extra looks like to in-process code."""
    if not request.config.getoption("--simulate-gpu"):
        yield
        return
    import importlib.util

    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        if name in _GPU_EXTRA and real_find_spec(name, *args, **kwargs) is None:
            return importlib.machinery.ModuleSpec(name, loader=None)
        return real_find_spec(name, *args, **kwargs)

    if request.node.get_closest_marker("imports_trl_vllm"):
        yield  # TRL imports vllm.utils & co. once it believes vllm is installed: a bare fake module cannot serve
        return
    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    for name in _GPU_EXTRA:
        if name not in sys.modules and real_find_spec(name) is None:
            monkeypatch.setitem(sys.modules, name, _fake_module(name))
    yield


def _outputs_listing() -> set[str]:
    out = REPO / "outputs"
    return {str(p.relative_to(out)) for p in out.rglob("*")} if out.is_dir() else set()


@pytest.fixture(scope="session", autouse=True)
def _no_test_writes_into_the_repos_outputs():
    """Every test runs in tmp dirs: a CLI call without hydra.run.dir would write outputs/<date>/ here."""
    before = _outputs_listing()
    yield
    added = sorted(_outputs_listing() - before)
    # (In a shared checkout a hand-run command from the repository root during the session counts too.)
    assert not added, f"tests wrote into {REPO / 'outputs'}: {added[:5]}"


# --- runs shared by several test files (train once, assert many): each user carries the fixture's xdist group,
# so that under pytest-xdist the run happens once, on one worker. Read-only: a test that changes one copies it.

@pytest.fixture(scope="session")
def default_job(tmp_path_factory):
    """(run directory, CompletedProcess) of the README's main job shortened to 3 steps through the CLI: the cached
    warm-start of the tiny model (built here on a cold cache), real rewards. Users: tests/test_train.py,
    tests/tracking/test_summary.py (xdist group "default_job")."""
    run_dir = tmp_path_factory.mktemp("default_job") / "d"
    proc = run_cli(["trainer.max_steps=3", f"hydra.run.dir={run_dir}"], timeout=3000)  # a cold warm-start: minutes
    return run_dir, proc


@pytest.fixture(scope="session")
def two_rank_run(tmp_path_factory):
    """(run directory, CompletedProcess) of a 2-step run on 2 CPU ranks (gloo), TINY's recipe. Users:
    tests/launch/test_multiprocess.py, tests/tracking/test_summary.py (xdist group "two_rank_run")."""
    from testkit import free_port

    run_dir = tmp_path_factory.mktemp("two_rank") / "run"
    env = {"NPROC_PER_NODE": "2", "MASTER_PORT": str(free_port())}
    return run_dir, run_cli(["trainer.max_steps=2", *TINY, f"hydra.run.dir={run_dir}"], env=env)


@pytest.fixture
def tiny_overrides() -> list[str]:
    return list(TINY)


@pytest.fixture(scope="session")
def tiny_processor():
    """The embedded tiny Qwen2.5-VL's processor (real Qwen2.5-VL classes, its own tokenizer), built once."""
    from mmr1.models import load_processor
    from mmr1.models.tiny import tiny_qwen2_5_vl_path

    return load_processor(str(tiny_qwen2_5_vl_path()), min_pixels=None, max_pixels=None)

# Reward plugin files are loaded by path by the tests (as users' plugins are): importing them here too, for
# the doctest collection (--doctest-modules), would register their rewards twice.
collect_ignore = ["rewards/fault_plugin.py", "reliability/plugins.py", "rollout/id_recorder.py",
                  "rollout/tool_plugins.py", "rollout/tool_vllm_check.py", "rollout/train_without_sync.py"]
