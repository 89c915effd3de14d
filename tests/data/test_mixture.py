"""Task mixtures: weighted shares, a seed-fixed order, each row its own task's prompt."""

from __future__ import annotations

from collections import Counter

import pytest
from data_fixtures import task_cfg

from mmr1.data import build_datasets
from mmr1.data.datasets import load_system_prompt
from mmr1.data.mixture import task_counts
from mmr1.data.preflight import preflight

LIMITS = {"min_pixels": 3136, "max_pixels": 50176}
SMALL = {"num_samples": 6, "eval_size": 2}


def mix_cfg(tmp_path=None, **overrides) -> dict:
    cfg = task_cfg("synthetic_mix", **overrides)
    for task in cfg["tasks"].values():
        task.update(SMALL)
    return cfg


def _texts(row) -> tuple[str, str]:
    return row["prompt"][0]["content"][0]["text"], row["prompt"][1]["content"][-1]["text"]


@pytest.fixture(scope="module")
def mix():
    return build_datasets(mix_cfg(), seed=0, **LIMITS)


def test_every_row_keeps_its_own_tasks_prompt_and_is_tagged(mix):
    alone = {name: build_datasets(task_cfg(name, **SMALL), seed=0, **LIMITS)
             for name in ("synthetic_count", "synthetic_geoqa", "synthetic_chart")}
    suffix = task_cfg("synthetic_count")["query_suffix"]
    assert suffix  # ClevrCount's suffix; GeoQA's and Open R1's problems are used as they are
    for split in ("train", "eval"):
        ds = getattr(mix, split)
        seen = Counter(ds["task"])
        assert set(seen) == set(alone)
        for name, bundle in alone.items():
            own = {(r["solution"], _texts(r)) for r in getattr(bundle, split)}
            mine = [(r["solution"], _texts(r)) for r in ds if r["task"] == name]
            assert set(mine) <= own  # the row exactly as its task builds it alone
            assert all(text.endswith(suffix) == (name == "synthetic_count") for _, (_, text) in mine)
    assert {_texts(r)[0] for r in mix.train} == {load_system_prompt(None)}
    # Each task's own held-out rows, all of them.
    assert Counter(mix.eval["task"]) == {name: 2 for name in alone}
    assert mix.stats["mixture"]["synthetic_geoqa"]["eval_rows"] == 2


def test_a_tasks_own_system_prompt_stays_with_its_rows(tmp_path):
    own = tmp_path / "geo.txt"
    own.write_text("You solve geometry.")
    cfg = mix_cfg()
    cfg["tasks"]["synthetic_geoqa"]["system_prompt"] = str(own)
    ds = build_datasets(cfg, seed=0, **LIMITS).train
    systems = {r["task"]: _texts(r)[0] for r in ds}
    assert systems["synthetic_geoqa"] == "You solve geometry."
    assert systems["synthetic_count"] == systems["synthetic_chart"] == load_system_prompt(None)


def test_weights_set_each_tasks_share():
    cfg = mix_cfg(limit=12)
    cfg["tasks"]["synthetic_chart"]["weight"] = 2.0
    bundle = build_datasets(cfg, seed=0, **LIMITS)
    assert Counter(bundle.train["task"]) == {"synthetic_count": 3, "synthetic_geoqa": 3, "synthetic_chart": 6}
    # Without dataset.limit the mixed set is as long as the tasks together (6 rows each); the weighted-up task
    # repeats its rows, the others are subsampled.
    cfg["limit"] = None
    full = build_datasets(cfg, seed=0, **LIMITS)
    # 18 x 1/4 = 4.5 each for the first two: the tie goes to the task listed first.
    assert Counter(full.train["task"]) == {"synthetic_count": 5, "synthetic_geoqa": 4, "synthetic_chart": 9}
    chart = [r["solution"] for r in full.train if r["task"] == "synthetic_chart"]
    assert len(set(chart)) <= 6 < len(chart)
    assert task_counts({"a": 1, "b": 1, "c": 1}, 10) == {"a": 4, "b": 3, "c": 3}
    assert sum(task_counts({"a": 0.3, "b": 0.7}, 7).values()) == 7


def test_same_seed_same_order_another_seed_another(mix):
    def order(seed):
        ds = build_datasets(mix_cfg(), seed=seed, **LIMITS).train
        return [(r["task"], r["solution"], r["image_id"]) for r in ds.with_format(None)]

    first = order(0)
    assert first == [(r["task"], r["solution"], r["image_id"]) for r in mix.train.with_format(None)]
    assert order(0) == first
    assert order(1) != first


def test_bad_mixtures_name_the_culprit():
    cfg = mix_cfg()
    cfg["tasks"]["synthetic_geoqa"]["weight"] = 0
    with pytest.raises(ValueError, match=r"dataset\.tasks\.synthetic_geoqa\.weight must be > 0"):
        build_datasets(cfg, seed=0, **LIMITS)
    cfg = mix_cfg()
    cfg["tasks"]["synthetic_count"]["generator"] = "no_such_generator"
    with pytest.raises(KeyError, match="no_such_generator"):
        build_datasets(cfg, seed=0, **LIMITS)
    from hydra.errors import MissingConfigException

    from testkit import compose_cfg

    with pytest.raises(MissingConfigException, match="no_such_task"):
        compose_cfg(["dataset=synthetic_mix", "+dataset@dataset.tasks.no_such_task=no_such_task"])


def test_a_two_image_task_mixes_with_one_image_tasks():
    cfg = mix_cfg()
    cfg["tasks"]["synthetic_pair_count"] = {**task_cfg("synthetic_pair_count"), **SMALL}
    bundle = build_datasets(cfg, seed=0, **LIMITS)
    assert "image" not in bundle.train.column_names  # one column type: lists of images for every row
    n_images = {r["task"]: len(r["images"]) for r in bundle.train}
    assert n_images["synthetic_pair_count"] == 2 and n_images["synthetic_count"] == 1


def test_preflight_checks_every_task_and_names_the_task(mix, tiny_processor):
    report = preflight(tiny_processor, mix, max_length=8192, context=None, max_completion_length=16)
    assert report.longest_prompt > 0
    with pytest.raises(ValueError, match=r"dataset 'synthetic_mix/synthetic_\w+' train row"):
        preflight(tiny_processor, mix, max_length=20, context=None, max_completion_length=16)


def test_warm_start_and_dry_run_see_every_task():
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from mmr1.config.checks import _dataset_problems
    from mmr1.models.warmstart import warmstart_data_cfg
    from testkit import compose_cfg

    hub = compose_cfg(["dataset=r1v_mix"]).dataset
    # The warm-start's SFT rows and gate come from each hub task's stand-in, by weight.
    ws = SimpleNamespace(num_samples=6, gate_samples=3, seed=0)
    bundle = build_datasets(warmstart_data_cfg(hub, ws), seed=0, **LIMITS)
    assert Counter(bundle.train["task"]) == {"clevr_count": 2, "geoqa": 2, "openr1_mm": 2}
    assert Counter(bundle.eval["task"]) == {"clevr_count": 1, "geoqa": 1, "openr1_mm": 1}
    # The dry run checks each task as its build would: a task's missing local copy is named.
    local = OmegaConf.merge(hub, {"tasks": {"geoqa": {"source": "local", "path": "/nonexistent/geoqa.parquet"}}})
    (problem,) = _dataset_problems(local)
    assert "'geoqa'" in str(problem) and "/nonexistent/geoqa.parquet" in str(problem)
