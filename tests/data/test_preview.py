"""The preview (`python -m mmr1.data ...`) through the training config: keys and pixel bounds."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmr1.data.__main__ import CONF_DIR, preview
from testkit import REPO

KEYS = {"messages", "image_size_before", "image_size_after", "image_tokens", "solution"}


@pytest.fixture
def compose_cfg():
    # The real spine (datasets are deltas over the typed schema), with the processor's default pixel bounds.
    from testkit import compose_cfg as compose_train

    def make(*overrides):
        return compose_train(["model.max_pixels=null", "model.min_pixels=null", *overrides])

    return make


def test_preview_rows(compose_cfg):
    rows, stats = preview(compose_cfg("dataset=clevr_count", "dataset.source=synthetic", "dataset.limit=3"))
    assert len(rows) == 3 and all(set(r) == KEYS for r in rows)
    system, user = rows[0]["messages"]
    assert system["role"] == "system" and isinstance(system["content"], str)
    assert user["content"].endswith("in <answer> </answer> tags.")
    # The ClevrCount stand-in has the hub's 480x320 images: 17 x 11 blocks of 28 px at the default limits.
    assert rows[0]["image_size_before"] == [480, 320] and rows[0]["image_tokens"] == 17 * 11
    assert stats["skipped"] == 0


@pytest.mark.parametrize("env,override,bound", [("262144", None, 262144), ("262144", 100000, 100000)])
def test_max_pixels_env_and_config(compose_cfg, monkeypatch, env, override, bound):
    monkeypatch.setenv("MAX_PIXELS", env)
    overrides = ["dataset=geoqa", "dataset.source=synthetic", "dataset.limit=3", "dataset.image_size=600"]
    if override is not None:
        overrides.append(f"model.max_pixels={override}")
    rows, _ = preview(compose_cfg(*overrides))
    for r in rows:
        w, h = r["image_size_after"]
        assert r["image_size_before"] == [600, 600] and w * h <= bound and w % 28 == h % 28 == 0


def test_conf_dir_is_inside_the_package_and_the_repo_conf_links_to_it():
    import mmr1

    assert Path(CONF_DIR) == Path(mmr1.__file__).resolve().parent / "conf"
    assert (REPO / "conf").resolve() == Path(CONF_DIR).resolve()


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra,bound,size",
    [
        ([], 262144, [168, 168]),  # the acceptance command, literally
        (["dataset.image_size=600", "model.max_pixels=100000"], 100000, [600, 600]),
        # +experiment=geoqa sets model.max_pixels=401408 (the seed's GeoQA value): config beats env.
        (["dataset.image_size=600"], 401408, [600, 600]),
    ],
)
def test_cli_geoqa_synthetic(extra, bound, size, tmp_path):
    import json
    import os
    import subprocess
    import sys

    repo = REPO
    env = {**os.environ, "MAX_PIXELS": "262144", "PYTHONPATH": str(repo / "src")}
    # hydra.run.dir: the preview's Hydra run would otherwise write outputs/<date>/ into the repository.
    args = ["+experiment=geoqa", "dataset.source=synthetic", "dataset.limit=5", *extra, f"hydra.run.dir={tmp_path}"]
    proc = subprocess.run([sys.executable, "-m", "mmr1.data", *args], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=300, check=True)
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == 5 and all(set(r) == KEYS for r in rows)
    assert all(r["image_size_before"] == size for r in rows)
    assert all(r["image_size_after"][0] * r["image_size_after"][1] <= bound for r in rows)
    assert "using the config value" in proc.stderr  # the experiment's max_pixels met MAX_PIXELS
