"""Runs shared by the reliability tests (train once, assert many)."""

from __future__ import annotations

import pytest
from harness import cli, with_overrides


@pytest.fixture(scope="session")
def straight_run(tmp_path_factory):
    """The harness recipe run uninterrupted: 4 steps, checkpoints at 2 and 4, 2 epochs of 2 steps. The reference
    of the resume tests (test_resume.py) and the checkpoint a corruption test copies (test_checkpoint_content.py);
    read-only: a test that changes it works on a copy. Its users share the xdist group "straight_run"."""
    run = tmp_path_factory.mktemp("straight") / "run"
    cli(with_overrides(), run)
    return run
