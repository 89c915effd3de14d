"""Several images per prompt: resized once each, max_pixels per image, every image counted."""

from __future__ import annotations

import json

import pytest
from data_fixtures import local_cfg, png_bytes, task_cfg

from mmr1.data import build_datasets, image_tokens
from mmr1.data.preflight import preflight

LIMITS = {"min_pixels": 3136, "max_pixels": 50176}


@pytest.fixture(scope="module")
def pairs():
    cfg = task_cfg("synthetic_pair_count", num_samples=6, eval_size=2)
    return build_datasets(cfg, seed=0, **LIMITS)


def write_jsonl(tmp_path, rows):
    for name, size in (("big.png", (1000, 800)), ("small.png", (84, 84))):
        (tmp_path / name).write_bytes(png_bytes(size))
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_pair_count_rows_hold_two_images_and_their_total(pairs):
    assert pairs.train.column_names.count("images") == 1 and "image" not in pairs.train.column_names
    for split in (pairs.train, pairs.eval):
        for row in split:
            user = row["prompt"][1]["content"]
            assert [p["type"] for p in user] == ["image", "image", "text"]
            assert user[2]["text"].startswith("How many items are there in the two images together?")
            assert [im.size for im in row["images"]] == [(84, 84), (84, 84)]
            assert row["image_tokens"] == 2 * image_tokens(84, 84)
    assert pairs.stats["max_images_per_row"] == 2


def test_preview_describes_every_image(pairs):
    from mmr1.data.__main__ import preview_rows

    row = next(preview_rows(pairs))
    assert row["image_sizes_before"] == row["image_sizes_after"] == [[84, 84], [84, 84]]
    assert row["image_tokens"] == pairs.train[0]["image_tokens"] == 18


def test_each_unique_image_is_resized_once_and_bounded_alone(tmp_path):
    # Three rows share big.png (twice in row 0); max_pixels bounds each image, not the row's sum.
    rows = [{"images": ["big.png", "big.png"], "problem": "q0", "solution": "<answer> 0 </answer>"},
            {"images": ["small.png", "big.png"], "problem": "q1", "solution": "<answer> 1 </answer>"},
            {"images": ["big.png"], "problem": "q2", "solution": "<answer> 2 </answer>"}]
    bundle = build_datasets(local_cfg("synthetic_count", write_jsonl(tmp_path, rows), shuffle=False),
                            seed=0, **LIMITS)
    assert bundle.stats["resizes"] == bundle.stats["unique_images"] == 2
    big = bundle.train[2]["images"][0].size  # a one-image row among several-image rows: still `images`
    assert big[0] * big[1] <= LIMITS["max_pixels"] and big[0] * big[1] > LIMITS["max_pixels"] // 2
    assert [im.size for im in bundle.train[1]["images"]] == [(84, 84), big]
    assert bundle.train["image_tokens"] == [2 * image_tokens(*big), image_tokens(84, 84) + image_tokens(*big),
                                            image_tokens(*big)]
    assert bundle.train[0]["image_sizes_before"] == [[1000, 800], [1000, 800]]


def test_a_bad_second_image_names_its_position(tmp_path):
    rows = [{"images": ["small.png", "gone.png"], "problem": "q", "solution": "s"}]
    with pytest.raises(ValueError, match=r"row 0 column 'images': image 1: cannot read image file .*gone.png"):
        build_datasets(local_cfg("synthetic_count", write_jsonl(tmp_path, rows)), seed=0, **LIMITS)


def test_trl_fills_both_placeholders_in_order(pairs):
    from trl.data_utils import prepare_multimodal_messages

    row = pairs.train[0]
    # What GRPOTrainer._generate_and_score_completions does with an `images` column (trl 1.16).
    user = prepare_multimodal_messages(row["prompt"], images=row["images"])[1]
    assert [p["image"] for p in user["content"][:2]] == row["images"]


def test_preflight_counts_every_images_tokens(pairs, tiny_processor):
    from trl.data_utils import apply_chat_template, prepare_multimodal_messages

    report = preflight(tiny_processor, pairs, max_length=4096, context=None, max_completion_length=8)
    assert report.longest_image == 2 * image_tokens(84, 84)
    # The exact prompt the processor builds: its image pads are the row's image_tokens, all images together.
    row = pairs.train[0]
    text = apply_chat_template({"prompt": prepare_multimodal_messages(row["prompt"], images=row["images"])},
                               tiny_processor)["prompt"]
    ids = tiny_processor(images=row["images"], text=[text], return_tensors="pt")["input_ids"][0].tolist()
    assert ids.count(tiny_processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")) == row["image_tokens"]
    assert report.longest_prompt == len(ids)  # text + every image's tokens, measured exactly
    # A bound one image would fit and the pair does not: the error counts both images.
    with pytest.raises(ValueError, match=rf"\({report.longest_text} text \+ {2 * image_tokens(84, 84)} image"):
        preflight(tiny_processor, pairs, max_length=report.longest_prompt - 1, context=None, max_completion_length=8)


def test_generation_reads_every_image_of_a_row(pairs, tiny_processor):
    """The evaluate / warm-start gate path (mmr1.models.generation) on two-image rows."""
    import torch
    from transformers import AutoModelForImageTextToText

    from mmr1.models.generation import generate, row_images
    from mmr1.models.tiny import tiny_qwen2_5_vl_path

    rows = [pairs.eval[i] for i in range(2)]
    assert [len(row_images(r)) for r in rows] == [2, 2]
    model = AutoModelForImageTextToText.from_pretrained(str(tiny_qwen2_5_vl_path()), dtype=torch.float32)
    out = generate(model, tiny_processor, rows, n=1, do_sample=False, max_new_tokens=2)
    assert [len(o) for o in out] == [1, 1] and all(1 <= o[0]["length"] <= 2 for o in out)


@pytest.mark.slow
def test_pair_count_trains_two_steps_then_evaluates(tmp_path):
    from testkit import TINY, run_cli

    run = tmp_path / "run"
    common = ["dataset=synthetic_pair_count", "dataset.eval_size=4"]
    run_cli([*common, *TINY, "trainer.max_steps=2", f"hydra.run.dir={run}"], timeout=600)
    assert json.loads((run / "run_info.json").read_text())["steps"] == 2
    run_cli([*common, "model.warmstart.enabled=false", "dataset.num_samples=16", "trainer.max_completion_length=8",
             f"eval.checkpoint={run}", "eval.batch_size=4", f"hydra.run.dir={tmp_path / 'eval'}"],
            module="mmr1.evaluate", timeout=300)
    result = json.loads((run / "eval.json").read_text())
    assert result["rows"] == 4 and all(len(r["image_id"]) == 2 for r in result["records"])


@pytest.mark.slow
def test_the_warm_start_trains_and_gates_on_two_image_rows(tmp_path):
    """The tiny model's default run starts with the SFT warm-start: its rows and gate carry `images` too."""
    from mmr1.data import resolve_pixel_limits
    from mmr1.models import load_processor
    from mmr1.models.tiny import tiny_qwen2_5_vl_path
    from mmr1.models.warmstart import run_warmstart
    from testkit import compose_cfg

    ws = {"max_steps": 2, "num_samples": 8, "gate_samples": 4, "batch_size": 4, "gate_start": 1, "gate_every": 1,
          "warmup_steps": 0}
    cfg = compose_cfg(["dataset=synthetic_pair_count", *(f"model.warmstart.{k}={v}" for k, v in ws.items())])
    limits = resolve_pixel_limits(cfg.model.max_pixels, cfg.model.min_pixels)
    base = str(tiny_qwen2_5_vl_path())
    processor = load_processor(base, min_pixels=limits.min_pixels, max_pixels=limits.max_pixels)
    report = run_warmstart(cfg, base, processor, limits, tmp_path / "warmstart-pairs")
    assert report["steps"] == 2 and [s for s, _ in report["gate_history"]] == [1, 2]  # the gate generated twice
    assert (tmp_path / "warmstart-pairs" / "mmr1_warmstart.json").exists()
