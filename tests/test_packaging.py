"""A wheel built from the repo runs on its own: configs inside the package, console scripts.

The editable install hides packaging mistakes (it reads `src/` in place): this builds the wheel, installs it
into a fresh target directory, and runs it from a directory outside the repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile

import pytest
import tomllib

from testkit import REPO

# One xdist worker: the wheel (module fixture) is built once.
pytestmark = pytest.mark.xdist_group("wheel")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    # Built from a copy of what the wheel is made of: setuptools writes build/ and *.egg-info beside the sources,
    # which must not land in (or be read from) the checkout under test.
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(source)], check=True, capture_output=True, timeout=600)
    (whl,) = out.glob("mmr1-*.whl")
    return whl


def test_wheel_holds_every_config_and_prompt(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {n.removeprefix("mmr1/conf/") for n in names if n.startswith("mmr1/conf/") and n.endswith(".yaml")}
    in_repo = {str(p.relative_to(REPO / "src/mmr1/conf")) for p in (REPO / "src/mmr1/conf").rglob("*.yaml")}
    assert shipped == in_repo and "train.yaml" in shipped and "experiment/geoqa.yaml" in shipped
    assert "mmr1/data/prompts/r1v_system.txt" in names


@pytest.mark.slow  # builds and installs a wheel: 17 s of the inner loop
def test_installed_wheel_dry_runs_outside_the_repo(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=600)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target), "WANDB_MODE": "disabled"}
    code = "import mmr1, sys; print(mmr1.__file__)"
    where = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True,
                           check=True).stdout.strip()
    assert where.startswith(str(target)), where  # the installed copy, not the repo's src/
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "mmr1.train", "+experiment=geoqa", "dry_run=true",
                           f"hydra.run.dir={run_dir}"], cwd=elsewhere, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run_dir / "grpo_args.json").exists() and "mmr1 dry run" in proc.stdout
    # The console script of the wheel runs the same app.
    script = target / "bin" / "mmr1-train"
    assert script.exists()
    proc = subprocess.run([sys.executable, str(script), "dry_run=true", f"hydra.run.dir={tmp_path / 'run2'}"],
                          cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_console_scripts_point_at_real_entry_points():
    import importlib

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"mmr1-train", "mmr1-evaluate", "mmr1-report", "mmr1-data", "mmr1-guard"} <= set(scripts)
    for target in scripts.values():
        module, _, func = target.partition(":")
        assert callable(getattr(importlib.import_module(module), func)), target


def _floors() -> dict[str, str]:
    """Each direct dependency's lower bound, from pyproject.toml."""
    from packaging.requirements import Requirement

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    out = {}
    for dep in deps:
        req = Requirement(dep)
        lows = [s.version for s in req.specifier if s.operator == ">="]
        assert len(lows) == 1, f"{dep}: every direct dependency declares one lower bound"
        out[req.name.lower()] = lows[0]
    return out


def _pins() -> dict[str, str]:
    lines = (REPO / "scripts" / "vllm_cpu_constraints.txt").read_text().splitlines()
    pairs = [ln.split("#")[0].strip().split("==") for ln in lines if "==" in ln.split("#")[0]]
    return {name.strip().lower(): version.strip() for name, version in pairs}


def test_every_floor_is_the_version_the_floor_environment_installs():
    # The vLLM-on-CPU environment (scripts/vllm_cpu_env.sh) pins each direct dependency at its floor and runs the
    # fast suite: a floor lowered (or raised) without its pin would be a version no test ran.
    from packaging.version import Version

    floors, pins = _floors(), _pins()
    assert set(floors) <= set(pins), f"floors with no pin in the floor environment: {sorted(set(floors) - set(pins))}"
    wrong = {n: (f, pins[n]) for n, f in floors.items() if Version(f) != Version(pins[n])}
    assert not wrong, f"pyproject floor != floor-environment pin: {wrong}"


def test_the_installed_versions_are_within_the_declared_bounds():
    # Here, the default install (the newest allowed) or the floor environment (each pin exactly).
    import importlib.metadata

    from packaging.requirements import Requirement
    from packaging.version import Version

    in_floor_env = _has_distribution("vllm-cpu")
    pins = _pins()
    for dep in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]:
        req = Requirement(dep)
        installed = Version(importlib.metadata.version(req.name))
        assert req.specifier.contains(installed, prereleases=True), f"{req.name} {installed} outside {dep}"
        if in_floor_env:
            # (torch's local build tag aside: the floor environment runs the plain 2.13.0, tagged +cu130)
            floor = Version(pins[req.name.lower()])
            assert Version(installed.public) == floor, f"{req.name} {installed}: the floor is {floor}"


def _has_distribution(name: str) -> bool:
    import importlib.metadata

    try:
        importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True
