"""Preview a dataset through the training config: ``python -m mmr1.data +experiment=geoqa dataset.limit=3``.

One JSON line per row: ``messages`` (system + user, each content as the plain string of its text parts;
the image is described by the size keys), ``image_size_before`` / ``image_size_after`` ([width, height];
``image_sizes_before`` / ``image_sizes_after``, one per image, for rows with several), ``image_tokens`` (what
the row's images cost the model) and ``solution``. Then one ``# stats`` line on stderr.
The eval split is not built (``eval_size`` is set to 0): ``dataset.limit=N`` prints N rows.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import hydra
from omegaconf import DictConfig

from mmr1.config import CONF_DIR
from mmr1.config.schema import register_configs
from mmr1.config.typed import container
from mmr1.data import build_datasets, resolve_pixel_limits
from mmr1.data.images import image_tokens

register_configs()  # conf/train.yaml extends the typed schema (`schema: train`), as for training


def preview_rows(bundle, limit: int | None = None):
    for split in (bundle.train, bundle.eval):
        if split is None:
            continue
        for i in range(len(split) if limit is None else min(limit, len(split))):
            row = split[i]
            messages = [{"role": m["role"], "content": "".join(p["text"] for p in m["content"] if p.get("text"))}
                        for m in row["prompt"]]
            sizes: dict[str, Any]
            if "videos" in row:  # clips: frames x size after sampling, and their tokens
                sizes = {"video_frames": [list(c.frames.shape[:3]) for c in row["videos"]],
                         "video_fps": [c.fps for c in row["videos"]], "video_tokens": [c.tokens for c in row["videos"]]}
            elif "images" in row:  # several images per row: one size per image, in prompt order
                after = [list(img.size) for img in row["images"]]
                sizes = {"image_sizes_before": [list(s) for s in row["image_sizes_before"]],
                         "image_sizes_after": after, "image_tokens": sum(image_tokens(w, h) for w, h in after)}
            else:
                w, h = row["image"].size
                sizes = {"image_size_before": list(row["image_size_before"]), "image_size_after": [w, h],
                         "image_tokens": image_tokens(w, h)}
            yield {"messages": messages, **sizes, "solution": row["solution"]}


def preview(cfg: DictConfig) -> tuple[list[dict], dict]:
    """Build the configured dataset as training would (same pixel limits, seed) and describe its rows."""
    model = cfg.get("model") or {}
    limits = resolve_pixel_limits(model.get("max_pixels"), model.get("min_pixels"))
    seed = (cfg.get("trainer") or {}).get("seed", cfg.get("seed", 0))
    # A preview shows training rows: `dataset.limit=3` prints 3 rows without building the eval set.
    dataset_cfg = {**container(cfg.dataset, resolve=False), "eval_size": 0}
    bundle = build_datasets(dataset_cfg, min_pixels=limits.min_pixels, max_pixels=limits.max_pixels, seed=seed,
                            video=model.get("video"))
    return list(preview_rows(bundle)), bundle.stats


@hydra.main(config_path=CONF_DIR, config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    rows, stats = preview(cfg)
    for row in rows:
        print(json.dumps(row, ensure_ascii=False), flush=True)
    print("# stats " + json.dumps(stats), file=sys.stderr)


if __name__ == "__main__":
    main()
