"""Fixtures for the data layer tests (helpers live in data_fixtures.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from data_fixtures import write_hub_parquet


@pytest.fixture
def hub_parquet(tmp_path):
    """Write a hub-schema parquet under tmp_path, laid out like a hub snapshot (data/train-*.parquet)."""

    def make(task: str, **kwargs) -> Path:
        return write_hub_parquet(tmp_path / task / "data" / "train-00000-of-00001.parquet", task, **kwargs)

    return make
