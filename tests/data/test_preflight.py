"""Pre-flight: every prompt, measured with its own image's tokens, against trainer.max_length and the context."""

from __future__ import annotations

import pytest
from data_fixtures import local_cfg, png_bytes, task_cfg, write_hub_parquet

from mmr1.data import build_datasets
from mmr1.data.images import QWEN_MAX_PIXELS, QWEN_MIN_PIXELS
from mmr1.data.preflight import preflight


class WordTokenizer:
    """One token per whitespace-separated word; no chat template (the bare-tokenizer path)."""

    chat_template = None

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": text.split()}


@pytest.fixture(scope="module")
def clevr(tmp_path_factory):
    """ClevrCount as the hub has it (480x320 RGBA PNGs), at the seed's settings: max_pixels null -> Qwen's."""
    path = write_hub_parquet(tmp_path_factory.mktemp("clevr") / "train.parquet", "clevr_count", n=6)
    return build_datasets(local_cfg("clevr_count", path, eval_size=2), min_pixels=QWEN_MIN_PIXELS,
                          max_pixels=QWEN_MAX_PIXELS, seed=0)


def test_accepts_480x320_clevr_at_the_seeds_settings(clevr, tiny_processor):
    # The failure: 16384 image tokens assumed at max_pixels=12845056. A 480x320 image resizes to
    # 476x336 = 17 x 12 = 204 tokens, measured from the data.
    report = preflight(tiny_processor, clevr, max_length=8192, context=1024, max_completion_length=1024)
    assert report.longest_image == 187
    assert report.longest_text > 50  # the system prompt and the ClevrPreprocessor suffix
    assert report.longest_prompt == report.longest_text + 187 < 1024
    # The context leaves the longest prompt fewer than max_completion_length tokens: completions stop there.
    assert report.completion_cap == 1024 - report.longest_prompt


def test_rejects_a_prompt_that_cannot_fit_naming_the_row(tmp_path, tiny_processor):
    # Row 3 carries a 2000x1500 image: at max_pixels 12845056 it keeps ~3800 image tokens > 1023.
    path = write_hub_parquet(tmp_path / "t.parquet", "clevr_count", n=5, images={3: png_bytes((2000, 1500))})
    bundle = build_datasets(local_cfg("clevr_count", path, shuffle=False), min_pixels=QWEN_MIN_PIXELS,
                            max_pixels=QWEN_MAX_PIXELS, seed=0)
    with pytest.raises(ValueError, match=r"dataset 'clevr_count' train row 3: its prompt is \d+ tokens .*"
                                         r"exceeds rollout.max_model_len .*1 of 5 train rows"):
        preflight(tiny_processor, bundle, max_length=8192, context=1024, max_completion_length=1024)
    # max_length bounds the prompt alone (the seed's --max_length), so 8192 holds it.
    report = preflight(tiny_processor, bundle, max_length=8192, context=None, max_completion_length=1024)
    assert report.longest_image > 3000


def test_skip_drops_and_counts_the_long_rows(tmp_path, tiny_processor):
    path = write_hub_parquet(tmp_path / "t.parquet", "clevr_count", n=5, images={1: png_bytes((2000, 1500))})
    bundle = build_datasets(local_cfg("clevr_count", path, shuffle=False), min_pixels=QWEN_MIN_PIXELS,
                            max_pixels=QWEN_MAX_PIXELS, seed=0)
    report = preflight(tiny_processor, bundle, max_length=8192, context=1024, max_completion_length=1024, skip=True)
    assert report.skipped == {"train": [1]}
    assert len(bundle.train) == 4 and 1 not in bundle.train["source_row"]
    assert bundle.stats["long_prompts_skipped"] == {"train": 1}


def test_max_length_counts_text_and_the_rows_own_image(tiny_processor):
    from mmr1.models.generation import row_images

    cfg = task_cfg("geoqa", source="synthetic", num_samples=6, eval_size=2)
    bundle = build_datasets(cfg, min_pixels=3136, max_pixels=401408, seed=0)
    report = preflight(tiny_processor, bundle, max_length=None, context=None, max_completion_length=1024)
    # The stand-in's 168x168 figures are 6 x 6 blocks: 36 tokens, not 401408 // 784 = 512.
    assert report.longest_image == 36
    # Against an independent count: the ids the processor itself gives each rendered prompt with its image
    # (the image placeholder expanded to its tokens), as the trainer will see them.
    lengths = []
    for split in (bundle.train, bundle.eval):
        for row in split:
            text = tiny_processor.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False)
            lengths.append(len(tiny_processor(text=[text], images=row_images(row))["input_ids"][0]))
    assert report.longest_prompt == max(lengths) == report.longest_text + report.longest_image
    limit = report.longest_prompt - 1
    with pytest.raises(ValueError, match=f"exceeds trainer.max_length \\(at most {limit} prompt tokens"):
        preflight(tiny_processor, bundle, max_length=limit, context=None, max_completion_length=1024)


def test_a_bare_tokenizer_counts_words_plus_the_image():
    """The path without a chat template (a plain tokenizer as processing class) still counts the image."""
    cfg = task_cfg("geoqa", source="synthetic", num_samples=6, eval_size=2)
    bundle = build_datasets(cfg, min_pixels=3136, max_pixels=401408, seed=0)
    report = preflight(WordTokenizer(), bundle, max_length=None, context=None, max_completion_length=1024)
    assert report.longest_image == 36 and report.longest_text > len(bundle.system_prompt.split())
