"""Helpers for the data layer tests: small parquet files with the hub datasets' schemas, written by the tests.

Schemas (as published, not verifiable offline here): ``image`` an HF Image feature (struct of
``bytes``/``path``), ``problem`` and ``solution`` strings; Open R1 also has extra string columns.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

from PIL import Image

SUFFIX = " Output the thinking process in <think> </think> and\n final answer (number) in <answer> </answer> tags."

# Each task's real columns and solution format (mmr1.data.synthetic cites the sources): ClevrCount's
# "<answer> 3 </answer>" with spaces, GeoQA-R1V's "<answer> 70° </answer>" with the unit, Open R1's
# reasoning solution plus the source question/answer columns.
TASK_ROWS = {
    "clevr_count": lambda i: {"problem": "How many items are there in the image?",
                              "solution": f"<answer> {3 + i % 5} </answer>"},
    "geoqa": lambda i: {"problem": f"As shown in the figure, angle A is {30 + i}°. Find angle B.",
                        "solution": f"<answer> {60 - i}° </answer>"},
    "openr1_mm": lambda i: {
        "problem": f"Based on the chart, what is the value of bar {i}?",
        "solution": f"<think>The chart shows bar {i} reaching {i}.</think>\n\n<answer>{i}</answer>",
        "original_question": f"orig q {i}", "original_answer": f"orig a {i}\nAnswer: {i}",
    },
}
# The hub's images: CLEVR's are 480x320 RGBA PNGs named CLEVR_trainA_<n>.png; the others vary in size.
TASK_IMAGES = {
    "clevr_count": lambda i: (png_bytes((480, 320), mode="RGBA", colour=(126, 126, 128, 255)),
                              f"CLEVR_trainA_{i:06d}.png"),
}


def png_bytes(size=(96, 64), mode="RGB", colour=None, fmt="PNG") -> bytes:
    img = Image.new(mode, size, colour if colour is not None else (0 if mode in ("L", "P") else (10, 200, 30)))
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but holds no pixel data: lets a test present a
    20000x20000 image (or a 0-wide one) without allocating it."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def write_hub_parquet(path: Path, task: str, n: int = 6, images: dict[int, bytes] | None = None,
                      drop: dict[int, str] | None = None) -> Path:
    """``n`` rows of ``task`` with the hub's columns; ``images`` overrides row images (e.g. corrupt
    bytes), ``drop`` sets a row's column to None (a row without solution/problem)."""
    import datasets

    rows = []
    for i in range(n):
        default, name = TASK_IMAGES.get(task, lambda i: (png_bytes((96 + 8 * i, 64)), f"img_{i}.png"))(i)
        row = {"image": {"bytes": (images or {}).get(i) or default, "path": name}}
        row.update(TASK_ROWS[task](i))
        if drop and i in drop:
            row[drop[i]] = None
        rows.append(row)
    features = datasets.Features({
        "image": datasets.Image(),
        **{k: datasets.Value("string") for k in rows[0] if k != "image"},
    })
    path.parent.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_list(rows, features=features).to_parquet(str(path))
    return path


def task_cfg(task: str, **overrides) -> dict:
    """The task's dataset config (conf/dataset/<task>.yaml over the schema's defaults), as training composes it."""
    from omegaconf import OmegaConf

    from testkit import compose_cfg

    cfg = OmegaConf.to_container(compose_cfg([f"dataset={task}"]).dataset, enum_to_str=True)
    cfg.update(overrides)
    return cfg


def local_cfg(task: str, path: Path, **overrides) -> dict:
    """The task's yaml switched to a local copy, as a user would."""
    return task_cfg(task, **{"source": "local", "path": str(path), "eval_size": 0, **overrides})
