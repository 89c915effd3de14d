"""Typed schema of the ``dataset`` config node.

Stored in Hydra's ConfigStore by the spine, so every key of ``conf/dataset/*.yaml`` must be a field
here (a typo then fails at compose time, not at step 900). Only OmegaConf-friendly types: str, int,
bool, Optional, Enum. Defaults are those of ``conf/dataset/synthetic_count.yaml``, the CPU default.
"""

from __future__ import annotations

from dataclasses import dataclass
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
class DatasetConfig:
    # Task name: a key of mmr1.data.TASKS (clevr_count, geoqa, openr1_mm, synthetic_count, ...).
    name: str = "synthetic_count"
    source: Source = Source.synthetic
    # Hub ids; None for tasks that only exist procedurally.
    hf_id: str | None = None
    modelscope_id: str | None = None
    subset: str | None = None
    # source=local: a parquet file or directory, a .jsonl/.json file, or a save_to_disk directory.
    path: str | None = None
    # Where relative image paths in a jsonl/parquet resolve; None = the data file's directory.
    image_dir: str | None = None
    split: str = "train"
    # Training rows kept after shuffling (eval_size more are read for eval); None = all.
    limit: int | None = None
    shuffle: bool = True
    # Shuffle/generation seed; None = the run's top-level seed.
    seed: int | None = None
    # Held-out rows taken first from the (shuffled) data for eval; 0 = no eval set (bundle.eval None).
    eval_size: int = 100
    on_bad_row: OnBadRow = OnBadRow.error
    # A prompt over trainer.max_length or the rollout context (mmr1.data.preflight): error names the row,
    # skip drops and counts it. Never cut: cutting a prompt would cut its image tokens.
    on_long_prompt: OnBadRow = OnBadRow.error
    # System prompt file; None = the seed's R1-V prompt shipped in mmr1/prompts/r1v_system.txt.
    system_prompt: str | None = None
    # Appended to the problem text verbatim; None = the task's own (clevr_count/synthetic_count: the
    # seed ClevrPreprocessor's suffix, TASKS[name].query_suffix; the others: nothing). A default in
    # code, not here, so a config naming another task never inherits the counting suffix.
    query_suffix: str | None = None
    # source=synthetic: how many training rows to generate (plus eval_size), and the side of generated images (None = the
    # generator's own: 84 for counting, i.e. a 3x3 grid of 28-px cells = 9 image tokens).
    num_samples: int = 2000
    image_size: int | None = None
    # Decoded images kept in memory per process so the num_generations copies of a prompt (and
    # later epochs) reuse one decode; bounded so an 8k-image set does not fill host RAM.
    image_cache_mb: int = 1024
