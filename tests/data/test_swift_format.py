"""ms-swift's dataset format: detected from the columns, <image> tags placed, named errors."""

from __future__ import annotations

import json

import pytest
from data_fixtures import local_cfg, png_bytes

from mmr1.data import build_datasets
from mmr1.data.swift_format import swift_prompt

LIMITS = {"min_pixels": 3136, "max_pixels": 50176}


def swift_row(i: int, tags: str = "<image>", images: list | None = None, **extra) -> dict:
    return {
        "messages": [{"role": "user", "content": f"{tags}How many items are there? ({i})"},
                     {"role": "assistant", "content": f"<answer> {i} </answer>"}],
        "images": images if images is not None else [f"imgs/{i}.png"],
        "solution": f"<answer> {i} </answer>",
        **extra,
    }


def write_jsonl(tmp_path, rows: list[dict], n_images: int = 4):
    (tmp_path / "imgs").mkdir(exist_ok=True)
    for i in range(n_images):
        (tmp_path / "imgs" / f"{i}.png").write_bytes(png_bytes((56 + 28 * i, 84)))
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def build(path, **overrides):
    cfg = local_cfg("synthetic_count", path, shuffle=False, query_suffix="", **overrides)
    return build_datasets(cfg, seed=0, **LIMITS)


def kinds(content: list[dict]) -> list[str]:
    return [p["text"] if p["type"] == "text" else "<IMG>" for p in content]


def test_jsonl_is_detected_and_the_assistant_turn_is_dropped(tmp_path):
    bundle = build(write_jsonl(tmp_path, [swift_row(i) for i in range(3)]))
    assert bundle.stats["format"] == "ms-swift" and bundle.stats["rows"] == 3
    row = bundle.train[1]
    roles = [m["role"] for m in row["prompt"]]
    assert roles == ["system", "user"]  # no assistant: the reference answer is not in the prompt
    assert row["prompt"][0]["content"][0]["text"] == bundle.system_prompt  # no system turn: the task's
    assert kinds(row["prompt"][1]["content"]) == ["<IMG>", "How many items are there? (1)"]
    assert row["image"].size == (84, 84) and row["image_size_before"] == [84, 84]  # imgs/1.png, relative
    assert row["solution"] == "<answer> 1 </answer>" and "messages" not in bundle.train.column_names


def test_tags_become_image_parts_at_their_positions(tmp_path):
    # `{bytes, path}` cells with only a path, as ms-swift's _cast_images makes of path strings.
    rows = [swift_row(0, tags="", images=[{"bytes": None, "path": f"imgs/{i}.png"} for i in (0, 1)])]
    rows[0]["messages"][0]["content"] = "Left <image> and right <image>: how many in all?"
    bundle = build(write_jsonl(tmp_path, rows), eval_size=0)
    content = bundle.train[0]["prompt"][1]["content"]
    assert kinds(content) == ["Left ", "<IMG>", " and right ", "<IMG>", ": how many in all?"]
    # Images in tag order: the first tag takes images[0] (56x84), the second images[1] (84x84).
    assert [list(im.size) for im in bundle.train[0]["images"]] == [[56, 84], [84, 84]]


def test_a_row_without_tags_gets_its_images_first_as_in_ms_swift():
    _, turns, images, _ = swift_prompt({"messages": [{"role": "user", "content": "Count."}],
                                        "images": ["a.png", "b.png"]})
    assert kinds(turns[0]["content"]) == ["<IMG>", "<IMG>", "Count."] and images == ["a.png", "b.png"]


def test_the_rows_system_turn_replaces_the_tasks(tmp_path):
    own = swift_row(0)
    own["messages"].insert(0, {"role": "system", "content": "Answer with a number."})
    bundle = build(write_jsonl(tmp_path, [own, swift_row(1)]), eval_size=0)
    systems = [r["prompt"][0]["content"][0]["text"] for r in bundle.train]
    assert systems == ["Answer with a number.", bundle.system_prompt]


def test_history_turns_stay_and_the_suffix_goes_to_the_last_user_turn():
    row = {"messages": [{"role": "user", "content": "<image>What is it?"},
                        {"role": "assistant", "content": "A cube."},
                        {"role": "user", "content": "How many?"},
                        {"role": "assistant", "content": "<answer>1</answer>"}],
           "images": "a.png"}  # one path alone, as ms-swift accepts
    _, turns, images, _ = swift_prompt(row, " Answer in tags.")
    assert [t["role"] for t in turns] == ["user", "assistant", "user"] and images == ["a.png"]
    assert kinds(turns[-1]["content"]) == ["How many? Answer in tags."]


def test_tag_count_mismatch_names_file_row_and_column(tmp_path):
    rows = [swift_row(0), swift_row(1, tags="<image><image>"), swift_row(2)]
    path = write_jsonl(tmp_path, rows)
    with pytest.raises(ValueError, match=r"row 1 column 'images': 2 <image> tag\(s\) .* but 1 image\(s\).*"
                                         rf"file {path}"):
        build(path, eval_size=0)
    bundle = build(path, eval_size=0, on_bad_row="skip")
    assert bundle.stats["skipped_indices"] == [1] and len(bundle.train) == 2


@pytest.mark.parametrize(("row", "column", "reason"), [
    ({**swift_row(0), "solution": None}, "solution", "missing or empty"),
    ({**swift_row(0), "messages": [{"role": "assistant", "content": "x"}]}, "messages", "no user turn"),
    ({**swift_row(0), "images": ["imgs/gone.png"]}, "images", "cannot read image file .*gone.png"),
])
def test_bad_rows_get_the_usual_named_errors(tmp_path, row, column, reason):
    path = write_jsonl(tmp_path, [swift_row(1), row])
    with pytest.raises(ValueError, match=rf"dataset 'synthetic_count' row 1 column '{column}': {reason}"):
        build(path, eval_size=0)


def test_parquet_with_bytes_and_path_images(tmp_path):
    import datasets

    rows = [{"messages": [{"role": "user", "content": "<image><image>How many?"}],
             "images": [{"bytes": png_bytes((84, 84)), "path": "a.png"}, {"bytes": png_bytes((112, 84)), "path": None}],
             "solution": "<answer> 2 </answer>"}] * 2
    features = datasets.Features({
        "messages": datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")}),
        "images": datasets.List(datasets.Image()), "solution": datasets.Value("string")})
    path = tmp_path / "train.parquet"
    datasets.Dataset.from_list(rows, features=features).to_parquet(str(path))
    bundle = build(path, eval_size=0)
    assert bundle.stats["format"] == "ms-swift"
    assert [list(im.size) for im in bundle.train[0]["images"]] == [[84, 84], [112, 84]]
    assert bundle.stats["unique_images"] == bundle.stats["resizes"] == 2  # two rows, two unique images


@pytest.mark.slow
def test_trains_two_steps_on_an_ms_swift_jsonl(tmp_path):
    from testkit import TINY, run_cli

    rows = [swift_row(i % 4, images=[f"imgs/{i % 4}.png"]) for i in range(12)]
    path = write_jsonl(tmp_path, rows)
    run_dir = tmp_path / "run"
    run_cli(["dataset=synthetic_count", "dataset.source=local", f"dataset.path={path}", "dataset.eval_size=2",
             *TINY, "trainer.max_steps=2", f"hydra.run.dir={run_dir}"], timeout=600)
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["steps"] == 2
