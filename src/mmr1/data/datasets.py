"""Raw rows -> the rows TRL's GRPOTrainer wants: a conversational ``prompt``, its resized image(s),
``solution`` untouched for the rewards, extra columns kept.

Raw rows come in two shapes, told apart by their columns: the hub's (``image`` or an ``images`` list,
``problem``, ``solution``) and ms-swift's (``messages`` with ``<image>`` tags, ``images``, ``solution``;
mmr1.data.swift_format). TRL 1.16 reads ``prompt`` and ``image`` (as ``[row["image"]]``) or ``images`` (a
list) and fills the prompt's ``{"type": "image"}`` placeholders in order (``prepare_multimodal_messages``).
A dataset whose every row has one image keeps the ``image`` column (``image_id``, ``image_size_before``);
as soon as one row has several, every row gets ``images`` (``image_ids``, ``image_sizes_before``), since a
column has one type. Arrow cannot mix string and list ``content`` in one column, so the system turn is a
list with one text part too; TRL and Qwen's chat template render both shapes identically.
"""

from __future__ import annotations

import importlib.resources
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmr1.config.typed import typed_config
from mmr1.data.config import DatasetConfig, OnBadRow, VideoConfig
from mmr1.data.images import (
    BadImage,
    DecodedImageCache,
    ImageResizer,
    PixelLimits,
    image_tokens,
    resolve_pixel_limits,
    source_bytes,
)
from mmr1.data.sources import SOURCES
from mmr1.data.swift_format import SwiftRowError, image_cells, is_swift_format, swift_prompt, video_cells
from mmr1.data.videos import BadVideo, ClipStore

log = logging.getLogger(__name__)

REQUIRED = ("problem", "solution")
# Columns mmr1 writes (a source column of the same name is dropped).
ADDED = ("prompt", "image", "image_id", "image_size_before", "images", "image_ids", "image_sizes_before",
         "image_tokens", "source_row", "videos", "video_ids", "video", "source_images")
MAX_REPORTED = 10  # skipped indices/reasons kept in stats and logs


@dataclass
class DataBundle:
    train: Any  # datasets.Dataset with a decode-on-access image transform
    eval: Any | None
    stats: dict[str, Any]
    limits: PixelLimits
    system_prompt: str
    resizer: ImageResizer = field(repr=False)
    image_cache: DecodedImageCache = field(repr=False)


def load_system_prompt(path: str | None) -> str:
    """The file's text byte for byte (no strip: the seed passes prompt.txt verbatim)."""
    if path is None:
        return (importlib.resources.files("mmr1.data.prompts") / "r1v_system.txt").read_text(encoding="utf-8")
    prompt = Path(path).expanduser()
    if not prompt.is_file():  # the dry run (mmr1.config.checks) gives this message too
        raise FileNotFoundError(
            f"dataset.system_prompt {prompt} does not exist (a text file, or null for the seed's R1-V prompt)")
    return prompt.read_text(encoding="utf-8")


def to_config(dataset_cfg: Any) -> DatasetConfig:
    """Accept a DatasetConfig, an OmegaConf node or a plain dict; validate against the schema (mmr1.config.typed)."""
    return typed_config(DatasetConfig, dataset_cfg, key="dataset")


def build_messages(system_prompt: str, text: str, n_images: int = 1, n_videos: int = 0) -> list[dict]:
    """The hub rows' prompt: the system turn, then the user turn with its videos and images before the problem
    (videos first, where ms-swift puts untagged ones: mmr1.data.swift_format)."""
    media = [*({"type": "video"} for _ in range(n_videos)), *({"type": "image"} for _ in range(n_images))]
    return [
        {"role": "system", "content": [{"type": "text", "text": system_prompt}]},
        {"role": "user", "content": [*media, {"type": "text", "text": text}]},
    ]


def _prompt_and_images(row: dict, swift: bool, system_prompt: str, suffix: str) -> tuple[list[dict], list, str]:
    """(prompt messages, image cells, the images' column) of one raw row; SwiftRowError names a bad column. Its
    clips are ``video_cells(row)``."""
    videos = video_cells(row)
    if swift:
        own_system, turns, cells, column = swift_prompt(row, suffix)
        if not isinstance(row.get("solution"), str) or not row["solution"].strip():
            raise SwiftRowError("solution", "missing or empty" if row.get("solution") is None
                                else f"not usable: {row['solution']!r}")
        # The row's own system turn replaces the task's, as in ms-swift (mmr1.data.swift_format).
        system = own_system if own_system is not None else system_prompt
        messages = [{"role": "system", "content": [{"type": "text", "text": system}]}, *turns]
    else:
        missing = next((c for c in REQUIRED if not isinstance(row.get(c), str) or not row[c].strip()), None)
        if missing is not None:
            raise SwiftRowError(missing, "missing or empty" if row.get(missing) is None
                                else f"not usable: {row[missing]!r}")
        column = "images" if row.get("images") is not None else "image"
        cells = image_cells(row, "images") if column == "images" else [row.get("image")]
        cells = [] if cells == [None] and videos else cells
        messages = build_messages(system_prompt, row["problem"] + suffix, len(cells), len(videos))
    if not cells and not videos:
        raise SwiftRowError(column, "no image or video (mmr1 trains prompts with at least one)")
    return messages, cells, column


class _BadRows:
    def __init__(self, dataset: str, policy: OnBadRow, where: str | None = None) -> None:
        self.dataset, self.policy, self.where = dataset, policy, where
        self.indices: list[int] = []
        self.reasons: list[str] = []

    def __call__(self, index: int, column: str, reason: str) -> None:
        msg = f"dataset {self.dataset!r} row {index} column {column!r}: {reason}"
        if self.where:
            msg += f" (file {self.where})"
        if self.policy == OnBadRow.error:
            raise ValueError(msg + " (set dataset.on_bad_row=skip to drop such rows)")
        self.indices.append(index)
        if len(self.reasons) < MAX_REPORTED:
            self.reasons.append(msg)


def _iter_source(rows: Any, order: list[int]):
    """Yield (source index, row) for the chosen indices without decoding images twice."""
    if isinstance(rows, list):
        for i in order:
            yield i, rows[i]
        return
    import datasets

    ds = rows
    if "image" in ds.features and isinstance(ds.features["image"], datasets.Image):
        ds = ds.cast_column("image", datasets.Image(decode=False))  # we decode (and catch) ourselves
    if isinstance(getattr(ds.features.get("images"), "feature", None), datasets.Image):
        ds = ds.cast_column("images", datasets.List(datasets.Image(decode=False)))
    ds = ds.select(order) if order != list(range(len(ds))) else ds
    yield from zip(order, ds, strict=True)


def _prepared_row(index: int, row: dict, swift: bool, system_prompt: str, suffix: str,
                  resizer: ImageResizer, base_dir: Any, cache: DecodedImageCache, bad: _BadRows,
                  clips: ClipStore, keep_sources: bool = False) -> dict | None:
    """One source row as training sees it (prompt messages, resized images, their token cost), or None when
    ``bad`` recorded it (a malformed ms-swift row, an unreadable image)."""
    try:
        messages, cells, column = _prompt_and_images(row, swift, system_prompt, suffix)
    except SwiftRowError as exc:
        bad(index, exc.column, str(exc))
        return None
    imgs = []
    try:
        # The resizer dedups by content: an image shared by rows (or twice in one row) is resized once.
        for cell in cells:
            imgs.append(resizer(cell, base_dir))
    except BadImage as exc:
        bad(index, column, ("" if len(cells) == 1 else f"image {len(imgs)}: ") + str(exc))
        return None
    try:  # each unique clip decoded, sampled and resized once (its frames then stored, like a resized image)
        videos = [clips.load(cell, base_dir) for cell in video_cells(row)]
    except BadVideo as exc:
        bad(index, "videos", str(exc))
        return None
    for img in imgs:
        if img["pil"] is not None:
            cache.put(img["id"], img["pil"])  # first access during training then costs no decode
    extras = {k: v for k, v in row.items() if k not in ADDED and k not in ("images", "messages")}
    return {
        **extras,
        "prompt": messages,
        "images": [{"bytes": img["bytes"], "path": None} for img in imgs],
        "image_ids": [img["id"] for img in imgs],
        **({"source_images": [source_bytes(cell, base_dir) if img["size_before"] != img["size_after"] else None
                              for cell, img in zip(cells, imgs, strict=True)]} if keep_sources else {}),
        "image_sizes_before": [list(img["size_before"]) for img in imgs],
        **({"videos": [v["cell"] for v in videos], "video_ids": [v["id"] for v in videos]} if videos else {}),
        # What the pre-flight measures: this row's own images' and clips' cost (all of them), and the row to name.
        "image_tokens": sum(image_tokens(*img["size_after"]) for img in imgs) + sum(v["tokens"] for v in videos),
        "source_row": index,
    }


def _refuse_mixed_media(name: str, rows: list[dict]) -> None:
    """TRL 1.16 takes a batch's images from one column and has no video path of its own (trl#4144); mmr1 keeps a
    dataset's prompts to one kind rather than let a batch mix them."""
    with_video = [r["source_row"] for r in rows if r.get("videos")]
    with_image = [r["source_row"] for r in rows if r["images"]]
    if with_video and with_image:
        raise ValueError(f"dataset {name!r}: rows with videos (first: row {with_video[0]}) and rows with images "
                         f"(first: row {with_image[0]}) in one dataset; keep clips and images in separate datasets")


def _single_image_columns(rows: list[dict]) -> None:
    """One image in every row: the `image` column (in place), as TRL's single-image path reads it."""
    if all(len(r["images"]) == 1 for r in rows):
        for r in rows:
            r["image"], r["image_id"], r["image_size_before"] = (
                r.pop("images")[0], r.pop("image_ids")[0], r.pop("image_sizes_before")[0])


def build_datasets(
    dataset_cfg: Any, *, min_pixels: int | None, max_pixels: int | None, seed: int, video: Any = None
) -> DataBundle:
    """Load, check, resize and split one task's data. ``min/max_pixels`` None -> env/processor defaults
    (see ``resolve_pixel_limits``); pass the resolved values so processor and data agree."""
    import datasets

    cfg = to_config(dataset_cfg)
    if cfg.tasks:  # a mixture: each task built by this function, then mixed (mmr1.data.mixture)
        from mmr1.data.mixture import build_mixture  # mixture builds each task with this module

        return build_mixture(cfg, min_pixels=min_pixels, max_pixels=max_pixels, seed=seed, video=video)
    name = cfg.name
    suffix = cfg.query_suffix
    if min_pixels is not None and max_pixels is not None:
        limits = PixelLimits(int(min_pixels), int(max_pixels))
    else:
        limits = resolve_pixel_limits(max_pixels, min_pixels)
    shuffle_seed = seed if cfg.seed is None else cfg.seed
    system_prompt = load_system_prompt(cfg.system_prompt)

    raw, base_dir = SOURCES.get(cfg.source.value)(cfg, shuffle_seed)
    n = len(raw)
    order = (np.random.default_rng(shuffle_seed).permutation(n) if cfg.shuffle else np.arange(n)).tolist()
    if cfg.limit is not None:
        order = order[: cfg.eval_size + cfg.limit]  # limit counts training rows; eval is held out on top

    columns = raw.column_names if hasattr(raw, "column_names") else (list(raw[0]) if len(raw) else [])
    swift = is_swift_format(columns)
    bad = _BadRows(name, cfg.on_bad_row, where=cfg.path if cfg.source.value == "local" else None)
    resizer = ImageResizer(limits)
    video_cfg = typed_config(VideoConfig, video, key="model.video")
    clips = ClipStore(video_cfg)
    cache = DecodedImageCache(cfg.image_cache_mb * 2**20, clips=clips)
    out: list[dict] = []
    for index, row in _iter_source(raw, order):
        prepared = _prepared_row(index, row, swift, system_prompt, suffix, resizer, base_dir, cache, bad, clips,
                                 keep_sources=cfg.keep_source_images)
        if prepared is not None:
            out.append(prepared)
    _refuse_mixed_media(name, out)
    tokens = [r["image_tokens"] for r in out]
    resizer.release()
    clips.release()
    _single_image_columns(out)

    if bad.indices:
        log.warning(
            "dataset %r: skipped %d bad rows of %d (first indices %s); first reason: %s",
            name, len(bad.indices), len(order), bad.indices[:MAX_REPORTED], bad.reasons[0],
        )
    if not out:
        raise ValueError(
            f"dataset {name!r} ({cfg.source.value}): no usable rows after filtering "
            f"({len(order)} read, {len(bad.indices)} skipped; first: {bad.reasons[:3]})"
        )
    if cfg.eval_size and cfg.eval_size >= len(out):
        raise ValueError(f"dataset {name!r}: eval_size={cfg.eval_size} leaves no training rows (of {len(out)})")

    def to_ds(rows: list[dict]):
        ds = datasets.Dataset.from_list(rows)
        if "image" in ds.column_names:
            ds = ds.cast_column("image", datasets.Image(decode=False))
        elif any(r["images"] for r in rows):
            ds = ds.cast_column("images", datasets.List(datasets.Image(decode=False)))
        else:  # clips only: no image in any row (TRL then takes the batch as image-free)
            ds = ds.remove_columns(["images", "image_ids", "image_sizes_before"])
        return ds.with_transform(cache)

    # The held-out rows come first in the shuffled order, so eval stays fixed when limit grows.
    eval_ds = to_ds(out[: cfg.eval_size]) if cfg.eval_size else None
    train_ds = to_ds(out[cfg.eval_size:])
    stats = {
        "dataset": name, "source": cfg.source.value, "rows_read": len(order), "rows": len(train_ds),
        "eval_rows": 0 if eval_ds is None else len(eval_ds), "skipped": len(bad.indices),
        "skipped_indices": bad.indices, "skipped_reasons": bad.reasons,
        "unique_images": len(resizer.counts), "resizes": sum(resizer.counts.values()),
        "min_pixels": limits.min_pixels, "max_pixels": limits.max_pixels,
        "max_image_tokens": max(tokens), "mean_image_tokens": float(np.mean(tokens)),
        "format": "ms-swift" if swift else "hub", "max_images_per_row": max(len(r.get("images", [None])) for r in out),
        "videos": sum(len(r.get("videos") or []) for r in out), "unique_videos": len(clips.tokens),
    }
    return DataBundle(train_ds, eval_ds, stats, limits, system_prompt, resizer, cache)

