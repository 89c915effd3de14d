"""The suite's own environment (tests/conftest.py): the model cache is the session's, never the user's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mmr1.models.tiny import cache_root


def test_the_model_cache_is_this_sessions_not_the_users():
    session = Path(os.environ["MMR1_CACHE"])
    assert cache_root() == session and Path.home() / ".cache" / "mmr1" not in (session, *session.parents)
    # Subprocesses (the CLI tests) inherit it.
    out = subprocess.run([sys.executable, "-c", "from mmr1.models.tiny import cache_root; print(cache_root())"],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    assert Path(out.strip().splitlines()[-1]) == session


def test_the_tiny_model_is_built_once_into_it(tiny_processor):
    from mmr1.models.tiny import tiny_qwen2_5_vl_path

    path = tiny_qwen2_5_vl_path()
    assert path.parent == cache_root() and (path / "mmr1_recipe.json").exists()
    assert tiny_qwen2_5_vl_path() == path  # cached: the second call finds it


def test_xdist_groups_keep_their_tests_on_one_worker(tmp_path):
    """The suite runs on pytest-xdist with --dist loadgroup (pyproject addopts): tests sharing a run (a session
    fixture) carry one xdist_group so that the run happens once. pytest 9.2 broke that silently (xdist's grouping
    renames item._nodeid, which 9.2 no longer reads): two grouped tests in two files must land on one worker."""
    (tmp_path / "conftest.py").write_text(
        "import os, pytest\n\n@pytest.fixture(scope='session')\ndef shared():\n"
        "    return os.environ['PYTEST_XDIST_WORKER']\n")
    for name in ("a", "b"):
        (tmp_path / f"test_{name}.py").write_text(
            "import pytest\n\n@pytest.mark.xdist_group('g')\n"
            f"def test_{name}(shared):\n    print('WORKER', shared)\n\n"
            + "".join(f"def test_{name}{i}():\n    pass\n\n" for i in range(4)))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v", "-p",
                           "no:cacheprovider", "-o", "addopts=", str(tmp_path)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]
    workers = {line.split()[0] for line in proc.stdout.splitlines() if "PASSED" in line and "@g" in line}
    assert len(workers) == 1 and len([ln for ln in proc.stdout.splitlines() if "@g" in ln and "PASSED" in ln]) == 2
