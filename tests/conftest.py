"""Fixtures shared by every test directory; the helpers themselves live in tests/testkit.py."""

from __future__ import annotations

import pytest

from testkit import EXPERIMENTS, REPO, TINY, compose_cfg, run_cli  # noqa: F401  (re-exported for old imports)


@pytest.fixture
def tiny_overrides() -> list[str]:
    return list(TINY)
