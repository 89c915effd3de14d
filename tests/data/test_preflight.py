"""Pre-flight: the worst-case prompt (text + image tokens at max_pixels) + completion vs the max length."""

from __future__ import annotations

import pytest

from mmr1.data import build_datasets
from mmr1.data.preflight import preflight


class WordTokenizer:
    """One token per whitespace-separated word; no chat template (the bare-tokenizer path)."""

    chat_template = None

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": text.split()}


@pytest.fixture(scope="module")
def bundle():
    cfg = {"name": "geoqa", "source": "synthetic", "num_samples": 6, "eval_size": 2}
    return build_datasets(cfg, min_pixels=3136, max_pixels=401408, seed=0)


def test_reports_worst_case(bundle):
    report = preflight(WordTokenizer(), bundle, max_pixels=401408, max_completion_length=1024, max_length=8192)
    assert report["image_tokens"] == 401408 // 784 == 512
    assert report["text_tokens"] > len(bundle.system_prompt.split())
    assert report["total"] == report["text_tokens"] + 512 + 1024


def test_fails_clearly_when_it_cannot_fit(bundle):
    with pytest.raises(ValueError, match=r"exceeds rollout.max_model_len=1024.*Lower model.max_pixels"):
        preflight(WordTokenizer(), bundle, max_pixels=401408, max_completion_length=1024, max_length=1024,
                  what="rollout.max_model_len")


def test_accepts_plain_prompts():
    prompts = [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "a b c"}]}]]
    report = preflight(WordTokenizer(), prompts, max_pixels=784 * 9, max_completion_length=5, max_length=None)
    assert report == {"text_tokens": 3, "image_tokens": 9, "max_completion_length": 5, "total": 17}


def test_non_strict_warns(bundle, caplog):
    with caplog.at_level("WARNING"):
        report = preflight(WordTokenizer(), bundle, max_pixels=401408, max_completion_length=1024, max_length=1024,
                           strict=False)
    assert report["total"] > 1024 and "Completions may be cut short" in caplog.text
