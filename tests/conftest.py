"""Fixtures shared by every test directory; the helpers themselves live in tests/testkit.py."""

from __future__ import annotations

import pytest

from testkit import EXPERIMENTS, REPO, TINY, compose_cfg, run_cli  # noqa: F401  (re-exported for old imports)


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
collect_ignore = ["rewards/fault_plugin.py", "reliability/plugins.py"]
