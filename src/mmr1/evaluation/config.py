"""Typed schema of ``eval.benchmark`` (conf/eval/benchmark/*.yaml): a fixed test set evaluated under its authors'
protocol, with their published numbers beside the run's.

A protocol is four things, each cited in the benchmark's file to the authors' evaluation code: the rows (a test
file at a pinned revision), the prompt (their template, their system turn or none), the decoding (greedy, their
token budget, their image limits) and the scorer (their answer extraction and comparison, failure cases
included: mmr1.evaluation.scorers). Every default is here; the YAML files set what differs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Rows(str, Enum):
    """Where a benchmark's rows come from."""

    none = "none"          # no benchmark: the training task's held-out split under the training protocol
    jsonl = "jsonl"        # a test file of records {image_path, question, ground_truth} (R1-V's src/eval/prompts/)
    held_out = "held_out"  # the training task's own held-out rows (a task whose hub data has no test split)


class Prompt(str, Enum):
    benchmark = "benchmark"  # the authors' template and system turn: the protocol the baselines were measured with
    training = "training"    # the training task's system prompt and query suffix on the benchmark's question


@dataclass
class Baseline:
    """One published number: accuracy in [0, 1] before and after training, and where it is printed."""

    model: str = ""
    before: float | None = None
    after: float | None = None
    training: str = ""  # what "after" trained on, and for how long
    source: str = ""    # repo, file, line and commit (or paper, table)


@dataclass
class BenchmarkConfig:
    name: str = "none"
    description: str = ""
    rows: Rows = Rows.none
    # The test file's canonical copy (a raw URL at a pinned commit) and that commit: fetched once into
    # $MMR1_CACHE/benchmarks/<name>/ when `path` is null. `path`: a local copy of the file (offline).
    url: str | None = None
    revision: str | None = None
    path: str | None = None
    # Where the file's relative `image_path`s resolve; null = the file's directory. `images` says where the
    # authors' images come from, for the error that names a missing one.
    image_dir: str | None = None
    images: str = ""
    size: int | None = None  # the file's row count at `revision`; another count is refused (a partial download)
    prompt: Prompt = Prompt.benchmark
    # The authors' user-turn text; {Question} is the row's question (R1-V's QUESTION_TEMPLATE.format(Question=...)).
    template: str = "{Question}"
    # Their system turn; null = none (the chat template's own default applies, as in the authors' run).
    system_prompt: str | None = None
    # Their answer extraction and comparison (mmr1.evaluation.scorers.SCORERS); `reward` = the training accuracy
    # reward (reward.funcs), for a task evaluated the way it was trained.
    scorer: str = "reward"
    # Their decoding: greedy, this many new tokens (null: eval.max_new_tokens, else trainer.max_completion_length).
    max_new_tokens: int | None = None
    # Their image limits (null: the model's, model.min_pixels/max_pixels).
    min_pixels: int | None = None
    max_pixels: int | None = None
    # Where the prompt, decoding and scoring are taken from.
    protocol_source: str = ""
    baselines: list[Baseline] = field(default_factory=list)
