"""Typed schema of the ``dataset`` config node.

Stored in Hydra's ConfigStore by the spine, so every key of ``conf/dataset/*.yaml`` must be a field
here (a typo then fails at compose time, not at step 900). Only OmegaConf-friendly types: str, int,
bool, Optional, Enum. Every default is here; the YAML files set what differs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Source(str, Enum):
    """Where the raw rows come from."""

    hf = "hf"  # datasets.load_dataset(hf_id)
    modelscope = "modelscope"  # MsDataset.load(modelscope_id); optional extra, imported lazily
    local = "local"  # dataset.path: parquet file/dir, jsonl (+ image folder) or save_to_disk dir
    synthetic = "synthetic"  # procedural generator of the task (offline, CPU-sized)


class OnBadRow(str, Enum):
    """What a corrupt image or a row without problem/solution does."""

    error = "error"  # stop at build time, naming dataset, row and column
    skip = "skip"  # drop the row, log how many and which, record them in DataBundle.stats


@dataclass
class VideoConfig:
    """``model.video``: how a clip becomes frames, Qwen2.5-VL's reference rule (qwen-vl-utils 0.0.10,
    ``qwen_vl_utils/vision_process.py`` in QwenLM/Qwen2.5-VL@f0af2996, lines 25-41, 143-180, 277-331; ms-swift
    v3.2.1 loads Qwen video through the same ``fetch_video``, swift/llm/template/template/qwen.py:213-215, and
    lets its env vars FPS, FPS_MAX_FRAMES, VIDEO_MIN_PIXELS, VIDEO_MAX_PIXELS override these constants)."""

    fps: float = 2.0                        # FPS: frames sampled per second of clip
    min_frames: int = 4                     # FPS_MIN_FRAMES
    max_frames: int = 768                   # FPS_MAX_FRAMES (ms-swift's video example sets 12)
    min_pixels: int = 128 * 28 * 28         # VIDEO_MIN_PIXELS, per frame
    max_pixels: int = 768 * 28 * 28         # VIDEO_MAX_PIXELS, per frame
    # VIDEO_TOTAL_PIXELS (128000 * 28 * 28 * 0.9): the clip's budget, shared by its frames (each frame gets at most
    # total / nframes * 2, the temporal patch holding two frames).
    total_pixels: int = 90316800
    # Decoded clips kept in memory per process (their frames, after sampling and resizing).
    cache_mb: int = 1024


@dataclass
class DatasetConfig:
    """One task's data. Every default lives here; ``conf/dataset/*.yaml`` set only what differs, so a new
    task is one YAML file (its name, where the rows come from, its prompt suffix and its offline stand-in)."""

    # The task's name: in logs, metrics and the warm-start cache key.
    name: str = "synthetic_count"
    source: Source = Source.synthetic
    # Hub ids; None for tasks that only exist procedurally.
    hf_id: str | None = None
    modelscope_id: str | None = None
    subset: str | None = None
    # source=local: a parquet file or directory, a .jsonl/.json file, or a save_to_disk directory, with the
    # hub's columns (image or images, problem, solution, extras) or ms-swift's (messages, images, solution),
    # told apart by the columns (mmr1.data.swift_format).
    path: str | None = None
    # Where relative image paths in a jsonl/parquet resolve; None = the data file's directory.
    image_dir: str | None = None
    split: str = "train"
    # Training rows kept after shuffling (eval_size more are read for eval); None = all. dataset.limit=3 previews.
    limit: int | None = None
    shuffle: bool = True
    # Shuffle/generation seed; None = the run's top-level seed.
    seed: int | None = None
    # Held-out rows taken first from the (shuffled) data for eval; 0 = no eval set (bundle.eval None).
    # Enough generated figures to read an accuracy without costing CPU minutes.
    eval_size: int = 100
    # Real data carries odd rows (a corrupt image, no solution): stop and name the row rather than train on a
    # silently smaller set; skip drops them, logs how many and which, and the run records the count.
    on_bad_row: OnBadRow = OnBadRow.error
    # A prompt over trainer.max_length or the rollout context (mmr1.data.preflight): error names the row,
    # skip drops and counts it. Never cut: cutting a prompt would cut its image tokens.
    on_long_prompt: OnBadRow = OnBadRow.error
    # System prompt file; None = the seed's --system prompt.txt, shipped as mmr1/data/prompts/r1v_system.txt.
    system_prompt: str | None = None
    # Appended to every problem verbatim (the seed's ClevrPreprocessor suffix for counting; nothing for
    # GeoQA and Open R1, whose problems the seed used as they are).
    query_suffix: str = ""
    # source=synthetic: the procedural generator standing in for the task offline (mmr1.data.synthetic:
    # synthetic_count, clevr_scene, synthetic_geoqa, synthetic_chart), how many training rows it makes
    # (plus eval_size), and the side of its images (None = the generator's own).
    generator: str | None = None
    num_samples: int = 2000
    image_size: int | None = None
    # The generator the supervised warm-start (model.warmstart) trains on; None = ``generator``. A video task names
    # its image twin (TRL's SFTTrainer has no video path): the answer format and the counting are learnt on
    # images, and GRPO carries them to clips (conf/dataset/synthetic_video_count.yaml).
    warmstart_generator: str | None = None
    # Decoded images kept in memory per process so the num_generations copies of a prompt (and later epochs)
    # reuse one decode; bounded because 8k images at MAX_PIXELS would not fit many ranks' host RAM.
    image_cache_mb: int = 1024
    # Keep each resized image's source (encoded, in `source_images`) for tools that look closer than the prompt's
    # resolution (rollout.tools=[crop]); a row whose image was not resized keeps none (its image is the source).
    keep_source_images: bool = False
    # A task mixture (mmr1.data.mixture; conf/dataset/synthetic_mix.yaml): the tasks, each a dataset node of
    # its own composed from its YAML (`defaults: [clevr_count@tasks.clevr_count, ...]`), so every row keeps its
    # task's source, prompt suffix, system prompt and solution format. Empty = this node is one task.
    tasks: dict[str, DatasetConfig] = field(default_factory=dict)
    # This task's share of a mixture's training rows (relative to the other tasks' weights); unused alone.
    weight: float = 1.0
