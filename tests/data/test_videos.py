"""Clips: frames sampled and sized as Qwen's reference does, token counts equal to the processor's own, clips in hub
and ms-swift rows, a corrupt clip named, the pre-flight's count of a video prompt equal to the processor's."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest
from PIL import Image

from mmr1.data import build_datasets
from mmr1.data.config import VideoConfig
from mmr1.data.preflight import preflight
from mmr1.data.swift_format import SwiftRowError, swift_prompt
from mmr1.data.videos import BadVideo, load_clip, processor_video_kwargs, sample_count


def write_clip(path, frames: int, height: int, width: int, fps: int) -> None:
    """An MPEG-4 clip whose frame i is a flat grey level (i * 7) % 255."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((height, width, 3), (i * 7) % 255, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def processor():
    from transformers import AutoProcessor

    from mmr1.models.tiny import tiny_qwen2_5_vl_path

    return AutoProcessor.from_pretrained(str(tiny_qwen2_5_vl_path()))


def test_frame_counts_follow_qwen_vl_utils():
    """smart_nframes (qwen_vl_utils/vision_process.py:143-180): fps=2 within [4, 768] frames, even, at most the
    clip's own frames."""
    cfg = VideoConfig()
    assert sample_count(90, 30.0, cfg) == 6          # 3 s at 2 fps
    assert sample_count(300, 10.0, cfg) == 60        # 30 s
    assert sample_count(31, 30.0, cfg) == 4          # ~1 s: 2 frames, raised to min_frames
    assert sample_count(3, 30.0, cfg) == 2           # fewer frames than min_frames: all, floored to even
    assert sample_count(100000, 30.0, VideoConfig(max_frames=12)) == 12
    with pytest.raises(BadVideo, match="at least 2"):
        sample_count(1, 30.0, cfg)


CLIPS = [("file", 90, 240, 320, 30), ("file", 31, 100, 60, 10), ("file", 45, 57, 300, 25),
         ("frames", 5, 56, 84, None), ("frames", 4, 200, 120, None)]


@pytest.mark.parametrize(("kind", "n", "height", "width", "fps"), CLIPS)
def test_clip_tokens_equal_the_processors(tmp_path, processor, kind, n, height, width, fps):
    """For files (PyAV) and frame lists, at Qwen's budgets and the tiny model's: the processor keeps mmr1's frames
    (its grid is mmr1's frames / 2 x height / 14 x width / 14), counts mmr1's tokens, and times them at 2 / fps."""
    if kind == "file":
        cell = str(tmp_path / "clip.mp4")
        write_clip(cell, n, height, width, fps)
    else:
        cell = [Image.new("RGB", (width, height), (10 * i, 0, 0)) for i in range(n)]
    for cfg in (VideoConfig(), VideoConfig(min_pixels=3136, max_pixels=12544)):
        clip = load_clip(cell, cfg)
        t, h, w = clip.frames.shape[:3]
        assert t % 2 == 0 and h % 28 == 0 and w % 28 == 0 and cfg.min_pixels <= h * w
        out = processor(text=["<|vision_start|><|video_pad|><|vision_end|>"], videos=[clip.frames],
                        videos_kwargs=processor_video_kwargs([clip], cfg), return_tensors="pt")
        assert out["video_grid_thw"].tolist() == [[t // 2, h // 14, w // 14]]
        assert int((out["input_ids"] == processor.video_token_id).sum()) == clip.tokens
        assert out["second_per_grid_ts"].tolist() == pytest.approx([2.0 / clip.fps])
        if kind == "file":
            assert clip.fps == pytest.approx(t / n * fps)  # the sampled frames' rate, as qwen-vl-utils reports it


def _local_dataset(tmp_path, rows: list[dict]) -> dict:
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return {"name": "clips", "source": "local", "path": str(data), "eval_size": 0, "shuffle": False}


def test_a_corrupt_clip_is_named_with_its_file_and_row(tmp_path):
    write_clip(tmp_path / "good.mp4", 20, 56, 56, 10)
    (tmp_path / "bad.mp4").write_bytes(b"\x00not a video" * 64)
    rows = [{"videos": ["good.mp4"], "problem": "How many?", "solution": "<answer> 1 </answer>"},
            {"videos": ["bad.mp4"], "problem": "How many?", "solution": "<answer> 2 </answer>"}]
    cfg = _local_dataset(tmp_path, rows)
    with pytest.raises(ValueError, match=r"row 1 column 'videos': .*bad.mp4: unreadable.*train.jsonl"):
        build_datasets(cfg, min_pixels=3136, max_pixels=50176, seed=0)
    bundle = build_datasets({**cfg, "on_bad_row": "skip"}, min_pixels=3136, max_pixels=50176, seed=0)
    assert len(bundle.train) == 1 and bundle.stats["skipped_indices"] == [1]
    row = bundle.train[0]
    assert row["prompt"][1]["content"][0]["type"] == "video" and row["videos"][0].frames.shape[0] == 4


def test_swift_rows_place_video_tags_as_ms_swift_does():
    """Tagged: at the tag. Untagged: prepended to the first turn, videos before images (_add_default_tags adds
    image tags, then video tags, each in front)."""
    _, turns, images, _ = swift_prompt({"messages": [{"role": "user", "content": "Watch <video> then say."}],
                                        "videos": ["a.mp4"]})
    assert [p.get("text", p["type"]) for p in turns[0]["content"]] == ["Watch ", "video", " then say."]
    _, turns, images, _ = swift_prompt({"messages": [{"role": "user", "content": "Compare."}],
                                        "videos": ["a.mp4"], "images": ["b.png"]})
    assert [p.get("text", p["type"]) for p in turns[0]["content"]] == ["video", "image", "Compare."]
    with pytest.raises(SwiftRowError, match=r"2 <video> tag\(s\) .* but 1 video\(s\) in 'videos'"):
        swift_prompt({"messages": [{"role": "user", "content": "<video><video>?"}], "videos": ["a.mp4"]})


def test_preflight_counts_a_video_prompt_as_the_processor_does(processor):
    from mmr1.models.generation import media_inputs

    cfg = VideoConfig(min_pixels=3136, max_pixels=12544)
    bundle = build_datasets({"name": "synthetic_video_count", "generator": "synthetic_video_count",
                             "num_samples": 6, "eval_size": 2}, min_pixels=3136, max_pixels=50176, seed=0, video=cfg)
    rows = [bundle.train[i] for i in range(len(bundle.train))]
    lengths = []
    for row in rows:
        text = processor.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False)
        lengths.append(len(processor(text=[text], **media_inputs([row], cfg))["input_ids"][0]))
    report = preflight(processor, bundle, max_length=None, context=None, max_completion_length=8)
    assert report.longest_prompt == max(lengths) and report.longest_image == rows[0]["videos"][0].tokens == 8
    with pytest.raises(ValueError, match=r"row \d+: its prompt is \d+ tokens .* trainer.max_length"):
        preflight(processor, bundle, max_length=max(lengths) - 1, context=None, max_completion_length=8)


def test_clips_and_images_do_not_share_a_dataset(tmp_path):
    write_clip(tmp_path / "a.mp4", 20, 56, 56, 10)
    Image.new("RGB", (56, 56)).save(tmp_path / "b.png")
    rows = [{"videos": ["a.mp4"], "problem": "q", "solution": "s"}, {"image": "b.png", "problem": "q", "solution": "s"}]
    with pytest.raises(ValueError, match=r"rows with videos \(first: row 0\) and rows with images \(first: row 1\)"):
        build_datasets(_local_dataset(tmp_path, rows), min_pixels=3136, max_pixels=50176, seed=0)


def test_the_memory_estimate_counts_clips():
    """Unmeasured: each clip at its budget's bound (model.video); measured: the pre-flight's tokens, clips in."""
    from mmr1.launch.memory import estimate_memory
    from testkit import compose_cfg

    cfg = compose_cfg(["dataset=synthetic_video_count", "model.video.max_frames=8", "model.video.max_pixels=12544"])
    plain = estimate_memory(cfg)["plan"]
    clip = estimate_memory(cfg, videos_per_prompt=1)["plan"]
    assert clip["image_tokens"] - plain["image_tokens"] == 8 * 12544 // 2 // 784  # 8 frames of 16 tokens / 2
    measured = estimate_memory(cfg, prompt_tokens=300, image_tokens=8)["plan"]
    assert measured["image_tokens"] == 8 and measured["text_tokens"] == 292
