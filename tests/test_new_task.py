"""A new task is one YAML file: no code edit.

A dataset YAML found through `hydra.searchpath` (a folder of the user's, outside the package) names the
task, its offline stand-in and its prompt suffix; it previews and trains like the built-in ones.
"""

from __future__ import annotations

import json

import pytest

from testkit import TINY, run_cli

TASK = """\
# A user's own counting task: the stand-in generator, its own prompt suffix.
name: my_count
source: synthetic
generator: synthetic_count
query_suffix: " Reply with <answer> N </answer>."
eval_size: 2
num_samples: 16
"""


@pytest.fixture
def searchpath(tmp_path):
    (tmp_path / "conf" / "dataset").mkdir(parents=True)
    (tmp_path / "conf" / "dataset" / "my_count.yaml").write_text(TASK)
    return f"hydra.searchpath=[file://{tmp_path / 'conf'}]"


def test_a_dataset_yaml_on_the_searchpath_previews(searchpath, tmp_path):
    proc = run_cli(["dataset=my_count", searchpath, "dataset.limit=2", f"hydra.run.dir={tmp_path / 'preview'}"],
                   module="mmr1.data")
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == 2
    assert all(r["messages"][1]["content"].endswith("in the image? Reply with <answer> N </answer>.") for r in rows)


@pytest.mark.slow
def test_a_dataset_yaml_on_the_searchpath_trains(searchpath, tmp_path):
    run_dir = tmp_path / "run"
    run_cli(["dataset=my_count", searchpath, *TINY, "trainer.max_steps=1", f"hydra.run.dir={run_dir}"], timeout=900)
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["steps"] == 1
    assert "Reply with <answer> N </answer>." in (run_dir / "config.yaml").read_text()
