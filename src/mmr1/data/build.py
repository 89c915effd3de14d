"""Raw rows -> the rows TRL's GRPOTrainer wants: a conversational ``prompt``, one resized ``image``,
``solution`` untouched for the rewards, extra columns kept.

TRL 1.16 reads ``prompt`` and ``image`` (``[row["image"]]``) and fills the ``{"type": "image"}``
placeholder of the user turn (``prepare_multimodal_messages``). Arrow cannot mix string and list
``content`` in one column, so the system turn is a list with one text part too; TRL and Qwen's chat
template render both shapes identically.
"""

from __future__ import annotations

import importlib.resources
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmr1.data.config import DatasetConfig, OnBadRow
from mmr1.data.images import (
    BadImage,
    DecodedImageCache,
    ImageResizer,
    PixelLimits,
    image_tokens,
    resolve_pixel_limits,
)
from mmr1.data.sources import SOURCES
from mmr1.typed import typed_config

log = logging.getLogger(__name__)

REQUIRED = ("problem", "solution")
# Columns mmr1 writes (a source column of the same name is dropped).
ADDED = ("prompt", "image", "image_id", "image_size_before", "image_tokens", "source_row")
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
        return (importlib.resources.files("mmr1") / "prompts" / "r1v_system.txt").read_text(encoding="utf-8")
    prompt = Path(path).expanduser()
    if not prompt.is_file():  # the dry run (mmr1.checks) gives this message too
        raise FileNotFoundError(
            f"dataset.system_prompt {prompt} does not exist (a text file, or null for the seed's R1-V prompt)")
    return prompt.read_text(encoding="utf-8")


def to_config(dataset_cfg: Any) -> DatasetConfig:
    """Accept a DatasetConfig, an OmegaConf node or a plain dict; validate against the schema (mmr1.typed)."""
    return typed_config(DatasetConfig, dataset_cfg, key="dataset")


def build_messages(system_prompt: str, text: str) -> list[dict]:
    return [
        {"role": "system", "content": [{"type": "text", "text": system_prompt}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]},
    ]


class _BadRows:
    def __init__(self, dataset: str, policy: OnBadRow) -> None:
        self.dataset, self.policy = dataset, policy
        self.indices: list[int] = []
        self.reasons: list[str] = []

    def __call__(self, index: int, column: str, reason: str) -> None:
        msg = f"dataset {self.dataset!r} row {index} column {column!r}: {reason}"
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
    ds = ds.select(order) if order != list(range(len(ds))) else ds
    yield from zip(order, ds, strict=True)


def build_datasets(
    dataset_cfg: Any, *, min_pixels: int | None, max_pixels: int | None, seed: int
) -> DataBundle:
    """Load, check, resize and split one task's data. ``min/max_pixels`` None -> env/processor defaults
    (see ``resolve_pixel_limits``); pass the resolved values so processor and data agree."""
    import datasets

    cfg = to_config(dataset_cfg)
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

    bad = _BadRows(name, cfg.on_bad_row)
    resizer = ImageResizer(limits)
    cache = DecodedImageCache(cfg.image_cache_mb * 2**20)
    out: list[dict] = []
    tokens: list[int] = []
    for index, row in _iter_source(raw, order):
        missing = next((c for c in REQUIRED if not isinstance(row.get(c), str) or not row[c].strip()), None)
        if missing is not None:
            bad(index, missing, "missing or empty" if row.get(missing) is None else f"not usable: {row[missing]!r}")
            continue
        try:
            img = resizer(row.get("image"), base_dir)
        except BadImage as exc:
            bad(index, "image", str(exc))
            continue
        if img["pil"] is not None:
            cache.put(img["id"], img["pil"])  # first access during training then costs no decode
        extras = {k: v for k, v in row.items() if k not in ADDED and k != "images"}
        out.append({
            **extras,
            "prompt": build_messages(system_prompt, row["problem"] + suffix),
            "image": {"bytes": img["bytes"], "path": None},
            "image_id": img["id"],
            "image_size_before": list(img["size_before"]),
            # What the pre-flight measures: this row's own image cost, and the row to name in an error.
            "image_tokens": image_tokens(*img["size_after"]),
            "source_row": index,
        })
        tokens.append(out[-1]["image_tokens"])
    resizer.release()

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
        ds = datasets.Dataset.from_list(rows).cast_column("image", datasets.Image(decode=False))
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
    }
    return DataBundle(train_ds, eval_ds, stats, limits, system_prompt, resizer, cache)

