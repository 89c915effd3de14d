"""The rows are what TRL 1.16's GRPOTrainer consumes, and Qwen's processor does not resize them again."""

from __future__ import annotations

import pytest
from data_fixtures import task_cfg

from mmr1.data import build_datasets, image_tokens


@pytest.fixture(scope="module")
def bundle():
    cfg = task_cfg("openr1_mm", source="synthetic", num_samples=4, eval_size=0, image_size=500)
    return build_datasets(cfg, min_pixels=3136, max_pixels=100000, seed=0)


def test_trl_reads_prompt_and_image(bundle):
    from trl.data_utils import is_conversational, prepare_multimodal_messages

    row = bundle.train[0]
    assert is_conversational(row)
    # What GRPOTrainer._generate_and_score_completions does with an `image` column.
    messages = prepare_multimodal_messages(row["prompt"], images=[row["image"]])
    system, user = messages
    assert system["content"] == [{"type": "text", "text": bundle.system_prompt}]
    assert user["content"][0]["type"] == "image" and user["content"][0]["image"] is row["image"]
    assert user["content"][1]["text"] == row["problem"]


def test_qwen_image_processor_keeps_our_size(bundle):
    from transformers import Qwen2VLImageProcessor

    proc = Qwen2VLImageProcessor(min_pixels=3136, max_pixels=100000)
    for row in bundle.train:
        w, h = row["image"].size
        assert (w, h) != (500, 500)  # we resized it...
        _, gh, gw = proc(images=[row["image"]], return_tensors="pt")["image_grid_thw"][0].tolist()
        assert (gh * 14, gw * 14) == (h, w)  # ...and the processor keeps exactly those pixels
        assert gh * gw // 4 == image_tokens(w, h)


@pytest.mark.slow
def test_tiny_processor_renders_one_pad_per_image_token(bundle):
    from trl.data_utils import apply_chat_template, prepare_multimodal_messages

    from mmr1.models import load_processor
    from mmr1.models.tiny import tiny_qwen2_5_vl_path

    processor = load_processor(str(tiny_qwen2_5_vl_path()), min_pixels=3136, max_pixels=100000)
    row = bundle.train[0]
    prompt = prepare_multimodal_messages(row["prompt"], images=[row["image"]])
    text = apply_chat_template({"prompt": prompt}, processor)["prompt"]
    ids = processor(images=[row["image"]], text=[text], return_tensors="pt")["input_ids"][0].tolist()
    pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert ids.count(pad) == image_tokens(*row["image"].size)
    assert text.count(bundle.system_prompt) == 1
