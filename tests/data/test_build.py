"""build_datasets on local copies with the hub schemas, on the generators, and on bad rows."""

from __future__ import annotations

import json

import pytest
from data_fixtures import SUFFIX, TASK_ROWS, local_cfg, png_bytes, png_header_only, task_cfg

from mmr1.data import GENERATORS, build_datasets, load_system_prompt
from mmr1.data.catalog import Registry

LIMITS = {"min_pixels": 3136, "max_pixels": 12000}  # small cap: the fixtures' images get resized
SYSTEM = load_system_prompt(None)


def build(cfg, **kw):
    return build_datasets(cfg, **{**LIMITS, "seed": 0, **kw})


def check_rows(ds, max_pixels):
    for row in ds:
        system, user = row["prompt"]
        assert system["role"] == "system" and system["content"][0]["text"] == SYSTEM
        assert user["role"] == "user" and user["content"][0]["type"] == "image"
        assert user["content"][1]["text"].startswith(row["problem"])
        w, h = row["image"].size
        assert row["image"].mode == "RGB" and w % 28 == 0 and h % 28 == 0 and 3136 <= w * h <= max_pixels


@pytest.mark.parametrize("task", ["clevr_count", "geoqa", "openr1_mm"])
def test_local_hub_schema(task, hub_parquet):
    path = hub_parquet(task)
    bundle = build(local_cfg(task, path.parent.parent))  # a hub snapshot dir: data/train-*.parquet
    assert len(bundle.train) == 6 and bundle.eval is None and bundle.stats["skipped"] == 0
    check_rows(bundle.train, LIMITS["max_pixels"])
    texts = [r["prompt"][1]["content"][1]["text"] for r in bundle.train]
    if task == "clevr_count":
        assert all(t == "How many items are there in the image?" + SUFFIX for t in texts)
    else:
        assert all(t == r["problem"] for t, r in zip(texts, bundle.train))
    if task == "openr1_mm":
        assert bundle.train[0]["original_question"].startswith("orig q")
    expected = {TASK_ROWS[task](i)["solution"] for i in range(6)}
    assert {r["solution"] for r in bundle.train} == expected


def test_solution_untouched_and_seed_suffix_bytes(hub_parquet):
    bundle = build(local_cfg("clevr_count", hub_parquet("clevr_count")))
    assert {r["solution"] for r in bundle.train} <= {f"<answer> {i} </answer>" for i in range(3, 8)}
    text = bundle.train[0]["prompt"][1]["content"][1]["text"]
    assert text.endswith(" Output the thinking process in <think> </think> and\n final answer (number) in "
                         "<answer> </answer> tags.")


def test_jsonl_with_image_folder_and_modes(tmp_path):
    imgs = tmp_path / "images"
    imgs.mkdir()
    rows = []
    for i, mode in enumerate(("RGB", "L", "P", "RGBA")):
        (imgs / f"{i}.png").write_bytes(png_bytes((300, 200), mode=mode))
        rows.append({"image": f"images/{i}.png", "problem": f"q{i}", "solution": f"<answer>{i}</answer>"})
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    bundle = build(local_cfg("geoqa", tmp_path / "train.jsonl"))
    assert len(bundle.train) == 4
    check_rows(bundle.train, LIMITS["max_pixels"])
    assert bundle.train[0]["image_size_before"] == [300, 200]


def test_save_to_disk_dir(tmp_path, hub_parquet):
    import datasets

    datasets.load_dataset("parquet", data_files=str(hub_parquet("geoqa")), split="train").save_to_disk(
        str(tmp_path / "disk")
    )
    assert len(build(local_cfg("geoqa", tmp_path / "disk")).train) == 6


BAD = {
    2: png_bytes((64, 64))[:50],  # corrupt bytes
    3: png_header_only(20000, 20000),  # decompression bomb
    4: png_bytes((1, 1)),  # degenerate
}


def test_bad_image_errors_naming_row(hub_parquet):
    path = hub_parquet("geoqa", images={2: BAD[2]})
    with pytest.raises(ValueError, match=r"dataset 'geoqa' row 2 column 'image': corrupt"):
        build(local_cfg("geoqa", path, shuffle=False))
    with pytest.raises(ValueError, match=r"row 2 column 'image'"):  # same source index when shuffled
        build(local_cfg("geoqa", path, shuffle=True))


def test_bad_rows_skipped_and_counted(hub_parquet, caplog):
    path = hub_parquet("openr1_mm", n=8, images=BAD, drop={5: "solution", 6: "problem"})
    with caplog.at_level("WARNING"):
        bundle = build(local_cfg("openr1_mm", path, on_bad_row="skip"))
    assert len(bundle.train) == 3
    assert bundle.stats["skipped"] == 5 and sorted(bundle.stats["skipped_indices"]) == [2, 3, 4, 5, 6]
    assert "skipped 5 bad rows" in caplog.text


def test_missing_column_errors_by_default(hub_parquet):
    path = hub_parquet("clevr_count", drop={1: "solution"})
    with pytest.raises(ValueError, match=r"dataset 'clevr_count' row 1 column 'solution': missing"):
        build(local_cfg("clevr_count", path, shuffle=False))


def test_empty_after_filtering_is_an_error(hub_parquet):
    path = hub_parquet("geoqa", n=2, images={0: BAD[2], 1: BAD[4]})
    with pytest.raises(ValueError, match="no usable rows"):
        build(local_cfg("geoqa", path, on_bad_row="skip"))


def test_missing_image_file_names_path(tmp_path):
    (tmp_path / "train.jsonl").write_text(json.dumps({"image": "gone.png", "problem": "q", "solution": "s"}))
    with pytest.raises(ValueError, match=r"row 0 column 'image': cannot read image file .*gone.png"):
        build(local_cfg("geoqa", tmp_path / "train.jsonl"))


@pytest.mark.parametrize("task", ["synthetic_count", "geoqa", "openr1_mm", "clevr_count"])
def test_synthetic_deterministic_with_eval(task):
    cfg = task_cfg(task, source="synthetic", num_samples=12, eval_size=4)
    a, b = build(cfg, seed=3), build(cfg, seed=3)
    assert (len(a.train), len(a.eval)) == (12, 4)
    assert a.train["solution"] == b.train["solution"] and a.train["image_id"] == b.train["image_id"]
    assert build(cfg, seed=4).train["image_id"] != a.train["image_id"]
    check_rows(a.train, LIMITS["max_pixels"])


def test_suffix_is_the_tasks_own_unless_set():
    one = {"source": "synthetic", "num_samples": 1, "eval_size": 0}
    geo = build(task_cfg("geoqa", **one))
    assert geo.train[0]["prompt"][1]["content"][1]["text"] == geo.train[0]["problem"]
    count = build(task_cfg("clevr_count", **one))
    assert count.train[0]["prompt"][1]["content"][1]["text"].endswith(SUFFIX)
    own = build(task_cfg("synthetic_count", **one, query_suffix=" Q"))
    assert own.train[0]["prompt"][1]["content"][1]["text"].endswith("image? Q")
    with pytest.raises(ValueError, match="needs dataset.generator"):
        build({"name": "mine", "source": "synthetic"})


def test_limit_counts_training_rows_and_dedups_images():
    bundle = build(task_cfg("synthetic_count", num_samples=50, eval_size=5, limit=10), min_pixels=None, max_pixels=None)
    assert (len(bundle.train), len(bundle.eval)) == (10, 5)
    assert bundle.train[0]["image"].size == (84, 84)  # the counting grid is never resized
    assert bundle.stats["resizes"] == bundle.stats["unique_images"] <= 15


def test_registry_refuses_duplicates():
    reg = Registry("thing")
    reg.register("a")(1)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(2)
    with pytest.raises(KeyError, match="unknown synthetic generator 'nope'"):
        GENERATORS.get("nope")


def test_unknown_source_needs_path():
    with pytest.raises(ValueError, match="needs dataset.path"):
        build({"name": "geoqa", "source": "local"})


def test_hf_source_reads_a_hub_layout(hub_parquet):
    # datasets.load_dataset(hf_id) accepts a local snapshot dir: the same code path as a hub download.
    path = hub_parquet("openr1_mm")
    cfg = {**local_cfg("openr1_mm", path), "source": "hf", "hf_id": str(path.parent.parent), "path": None}
    bundle = build(cfg)
    assert len(bundle.train) == 6 and bundle.train[0]["original_answer"].startswith("orig a")


def test_modelscope_is_optional():
    try:
        import modelscope  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"mmr1\[modelscope\]"):
            build({"name": "geoqa", "source": "modelscope", "modelscope_id": "AI-ModelScope/GEOQA_R1V_Train_8K"})
    else:
        pytest.skip("modelscope installed; would need the network")


def test_unchanged_rgb_keeps_source_bytes(hub_parquet):
    import io

    from PIL import Image

    raw = png_bytes((112, 84))
    bundle = build(local_cfg("geoqa", hub_parquet("geoqa", n=1, images={0: raw})), max_pixels=401408)
    stored = bundle.train.with_format(None)[0]["image"]["bytes"]
    assert stored == raw and Image.open(io.BytesIO(stored)).size == (112, 84)
