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
