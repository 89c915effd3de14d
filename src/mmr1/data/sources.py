"""Where raw rows come from: the hub (HF or ModelScope), a local copy, or a procedural generator.

A source is ``fn(cfg, seed) -> (rows, base_dir)``: ``rows`` a ``datasets.Dataset`` or a list of
dicts with the hub datasets' columns (image, problem, solution, extras), ``base_dir`` where relative
image paths resolve. Tasks (clevr_count, geoqa, ...) say which generator stands in for them offline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmr1.data.config import DatasetConfig
from mmr1.data.registry import Registry
from mmr1.data.synthetic import GENERATORS

# The seed's ClevrPreprocessor appends this to the problem, byte for byte: a space, the text, a newline
# and a space ("... and\n final answer ..."), exactly as its triple-quoted f-string produces.
CLEVR_SUFFIX = " Output the thinking process in <think> </think> and\n final answer (number) in <answer> </answer> tags."


@dataclass(frozen=True)
class TaskSpec:
    """What mmr1 knows about a task beyond its yaml: the generator used for ``source=synthetic`` and
    the text the seed appends to every problem (``dataset.query_suffix=null`` means this one)."""

    generator: str
    query_suffix: str = ""


TASKS: Registry[TaskSpec] = Registry("task")
SOURCES: Registry = Registry("dataset source")

# The seed's three datasets, each with its offline stand-in; the stand-ins are tasks of their own too.
# Only ClevrCount had a preprocessor; GeoQA and Open R1 feed the problem text as is.
# clevr_count's stand-in has the hub's shape (480x320 RGBA CLEVR PNGs); synthetic_count is the learnable one.
TASKS.register("clevr_count")(TaskSpec(generator="clevr_scene", query_suffix=CLEVR_SUFFIX))
TASKS.register("geoqa")(TaskSpec(generator="synthetic_geoqa"))
TASKS.register("openr1_mm")(TaskSpec(generator="synthetic_chart"))
TASKS.register("synthetic_count")(TaskSpec(generator="synthetic_count", query_suffix=CLEVR_SUFFIX))
TASKS.register("synthetic_geoqa")(TaskSpec(generator="synthetic_geoqa"))
TASKS.register("synthetic_chart")(TaskSpec(generator="synthetic_chart"))


@SOURCES.register("synthetic")
def load_synthetic(cfg: DatasetConfig, seed: int) -> tuple[list[dict], None]:
    n = cfg.eval_size + (cfg.num_samples if cfg.limit is None else min(cfg.num_samples, cfg.limit))
    return GENERATORS.get(TASKS.get(cfg.name).generator)(n, seed, cfg.image_size), None


@SOURCES.register("hf")
def load_hf(cfg: DatasetConfig, seed: int) -> tuple[Any, None]:
    import datasets

    if not cfg.hf_id:
        raise ValueError(f"dataset {cfg.name!r}: source=hf needs dataset.hf_id")
    return datasets.load_dataset(cfg.hf_id, cfg.subset, split=cfg.split), None


@SOURCES.register("modelscope")
def load_modelscope(cfg: DatasetConfig, seed: int) -> tuple[Any, None]:
    if not cfg.modelscope_id:
        raise ValueError(f"dataset {cfg.name!r}: source=modelscope needs dataset.modelscope_id")
    try:
        from modelscope.msdatasets import MsDataset  # optional extra: pip install 'mmr1[modelscope]'
    except ImportError as exc:
        raise ImportError(
            "dataset.source=modelscope needs the modelscope package: pip install 'mmr1[modelscope]' "
            "(or use dataset.source=hf with the HF mirror)"
        ) from exc
    ms = MsDataset.load(cfg.modelscope_id, subset_name=cfg.subset or "default", split=cfg.split)
    return (ms.to_hf_dataset() if hasattr(ms, "to_hf_dataset") else ms), None


def _pick_split_files(files: list[Path], split: str) -> list[Path]:
    # A hub snapshot keeps splits side by side (data/train-00000-of-00001.parquet, data/test-...).
    chosen = [f for f in files if f.name.startswith(f"{split}-") or f.stem == split or f.parent.name == split]
    return chosen or files


@SOURCES.register("local")
def load_local(cfg: DatasetConfig, seed: int) -> tuple[Any, Path]:
    """A parquet file/dir, a jsonl/json file (image paths relative to it or ``image_dir``), or a
    ``save_to_disk`` directory, all with the hub's columns."""
    import datasets

    if not cfg.path:
        raise ValueError(f"dataset {cfg.name!r}: source=local needs dataset.path")
    path = Path(cfg.path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"dataset {cfg.name!r}: dataset.path {path} does not exist")
    base = Path(cfg.image_dir) if cfg.image_dir else (path if path.is_dir() else path.parent)
    if path.is_dir() and ((path / "state.json").exists() or (path / "dataset_dict.json").exists()):
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            if cfg.split not in ds:
                raise ValueError(f"dataset {cfg.name!r}: split {cfg.split!r} not in {path} ({list(ds)})")
            ds = ds[cfg.split]
        return ds, base
    if path.is_dir():
        for ext, builder in (("parquet", "parquet"), ("jsonl", "json"), ("json", "json")):
            files = sorted(path.rglob(f"*.{ext}"))
            if files:
                files = _pick_split_files(files, cfg.split)
                break
        else:
            raise FileNotFoundError(f"dataset {cfg.name!r}: no parquet/jsonl/save_to_disk data under {path}")
    else:
        suffix = path.suffix.lower()
        builder = {".parquet": "parquet", ".jsonl": "json", ".json": "json"}.get(suffix)
        if builder is None:
            raise ValueError(f"dataset {cfg.name!r}: cannot read {path} (want .parquet, .jsonl or .json)")
        files = [path]
    ds = datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train")
    return ds, base
