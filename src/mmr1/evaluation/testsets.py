"""A benchmark's rows: its test file (a local copy, or fetched once at its pinned revision), each row's image found
and opened, and the prompt its protocol asks for.

A row here is what mmr1.models.generation and the rewards read (``prompt``, ``image``, ``solution``) plus the
benchmark's own ``question``, ``ground_truth`` and ``image_path``. A malformed line, a missing or unreadable image
and a file of the wrong size stop the evaluation with the file, the line and the path named: a benchmark scored on
fewer rows than its baselines is not the benchmark.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from pathlib import Path
from typing import Any

from mmr1.evaluation.config import BenchmarkConfig, Prompt
from mmr1.models.tiny import cache_root

log = logging.getLogger("mmr1.evaluate")
FIELDS = ("image_path", "question", "ground_truth")


def test_file(bench: BenchmarkConfig) -> Path:
    """``eval.benchmark.path``, else the cached copy of ``url`` (downloaded on first use)."""
    if bench.path:
        path = Path(bench.path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"eval.benchmark.path {path} does not exist (benchmark {bench.name!r})")
        return path
    if not bench.url:
        raise ValueError(f"benchmark {bench.name!r}: set eval.benchmark.path to its test file (no url to fetch)")
    dst = cache_root() / "benchmarks" / bench.name / (bench.revision or "latest") / Path(bench.url).name
    if not dst.is_file():
        dst.parent.mkdir(parents=True, exist_ok=True)
        log.info("fetching %s's test file %s", bench.name, bench.url)
        tmp = dst.with_suffix(dst.suffix + ".part")
        try:
            with urllib.request.urlopen(bench.url, timeout=60) as resp:  # noqa: S310 (a pinned https URL)
                tmp.write_bytes(resp.read())
        except OSError as exc:
            raise OSError(f"benchmark {bench.name!r}: could not fetch {bench.url} ({exc}); download it and pass "
                          f"eval.benchmark.path=<file>") from exc
        tmp.replace(dst)  # never a half file under the final name
    return dst


def jsonl_records(text: str, path: Path, what: str) -> list[tuple[str, Any]]:
    """Every non-blank line of a jsonl text as ``(where, record)``; a line that is not JSON stops, naming ``what``,
    the file and the line."""
    out = []
    for line_no, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                out.append((f"{path} line {line_no}", json.loads(line)))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{what}: {path} line {line_no} is not JSON ({exc.msg})") from None
    return out


def solution_of(ground_truth: Any) -> str:
    """A ground truth in R1-V's training solution form (``<answer> 140° </answer>``), so the training rewards can
    score the row too; one already in that form stays as it is."""
    if isinstance(ground_truth, str) and "<answer>" in ground_truth:
        return ground_truth
    return f"<answer> {ground_truth} </answer>"


def read_records(path: Path, size: int | None, name: str) -> list[dict]:
    """The file's records (jsonl, or a json list), each checked for the fields the protocol reads."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        items = [(f"{path} item {i}", rec) for i, rec in enumerate(json.loads(text))]
    else:
        items = jsonl_records(text, path, f"benchmark {name!r}")
    records = [rec for _, rec in items]
    for at, rec in items:
        missing = [k for k in FIELDS if not isinstance(rec, dict) or rec.get(k) in (None, "")]
        if missing:
            raise ValueError(f"benchmark {name!r}: {at} has no {missing} (want {list(FIELDS)})")
    if size is not None and len(records) != size:
        raise ValueError(f"benchmark {name!r}: {path} has {len(records)} rows, the authors' file {size} (a partial "
                         "or different copy: its baselines would not compare)")
    return records


def resolve_image(image_path: str, base: Path) -> Path | None:
    """The authors' paths are relative to their script's folder (``./Geo170K/images/test/0.png``) or absolute on
    their machine (their logs): try the path under ``base``, then with leading folders dropped one at a time."""
    parts = Path(image_path).parts
    parts = parts[1:] if parts and parts[0] in ("/", ".") else parts
    for i in range(len(parts)):
        candidate = base.joinpath(*parts[i:])
        if candidate.is_file():
            return candidate
    return None


def load_rows(bench: BenchmarkConfig, *, system_prompt: str, query_suffix: str, limit: int | None) -> list[dict]:
    """The benchmark's rows in file order (the first ``limit``), prompts built as ``bench.prompt`` says."""
    from PIL import Image, UnidentifiedImageError

    path = test_file(bench)
    records = read_records(path, None if limit else bench.size, bench.name)[:limit]
    base = Path(bench.image_dir).expanduser() if bench.image_dir else path.parent
    rows = []
    for i, rec in enumerate(records):
        image = resolve_image(str(rec["image_path"]), base)
        if image is None:
            raise FileNotFoundError(
                f"benchmark {bench.name!r} row {i} ({path}): image {rec['image_path']!r} not found under {base} "
                f"(eval.benchmark.image_dir; the images: {bench.images or 'see the benchmark file'})")
        try:
            with Image.open(image) as im:
                im.verify()  # a truncated or non-image file fails here, not in the middle of a batch
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            raise ValueError(f"benchmark {bench.name!r} row {i} ({path}): image {image} is unreadable "
                             f"({exc})") from None
        question = str(rec["question"])
        rows.append({"index": i, "question": question, "ground_truth": rec["ground_truth"],
                     "image_path": str(image), "image": {"path": str(image), "bytes": None},
                     "prompt": prompt_messages(bench, question, system_prompt, query_suffix),
                     "solution": solution_of(rec["ground_truth"])})
    return rows


def prompt_messages(bench: BenchmarkConfig, question: str, system_prompt: str, query_suffix: str) -> list[dict]:
    """The authors' messages (R1-V: one user turn, the image then the templated question, no system turn), or with
    ``eval.benchmark.prompt=training`` the training task's system prompt and suffix on the same question."""
    system: str | None
    if bench.prompt == Prompt.training:
        system, text = system_prompt, question + query_suffix
    else:
        # str.replace, not str.format: a question with braces (LaTeX) must not be read as a format field.
        system, text = bench.system_prompt, bench.template.replace("{Question}", question)
    user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}
    return [{"role": "system", "content": [{"type": "text", "text": system}]}, user] if system is not None else [user]
