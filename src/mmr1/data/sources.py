"""Where raw rows come from: the hub (HF or ModelScope), a local copy, or a procedural generator.

A source is ``fn(cfg, seed) -> (rows, base_dir)``: ``rows`` a ``datasets.Dataset`` or a list of
dicts with the hub datasets' columns (image, problem, solution, extras), ``base_dir`` where relative
image paths resolve. A task's YAML (``dataset.generator``) names the generator that stands in for it offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmr1.data.catalog import Registry
from mmr1.data.config import DatasetConfig
from mmr1.data.synthetic import GENERATORS

SOURCES: Registry = Registry("dataset source")


@SOURCES.register("synthetic")
def load_synthetic(cfg: DatasetConfig, seed: int) -> tuple[list[dict], None]:
    if cfg.generator is None:
        raise ValueError(f"dataset {cfg.name!r}: source=synthetic needs dataset.generator, the offline stand-in "
                         f"(one of {GENERATORS.names()})")
    n = cfg.eval_size + (cfg.num_samples if cfg.limit is None else min(cfg.num_samples, cfg.limit))
    return GENERATORS.get(cfg.generator)(n, seed, cfg.image_size), None


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
    ``save_to_disk`` directory, with the hub's columns or ms-swift's (``messages``, ``images``, ``solution``)."""
    import datasets

    if not cfg.path:
        raise ValueError(f"dataset {cfg.name!r}: source=local needs dataset.path")
    path = Path(cfg.path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"dataset {cfg.name!r}: dataset.path {path} does not exist")
    if cfg.image_dir and not Path(cfg.image_dir).expanduser().is_dir():  # the dry run checks this too
        raise FileNotFoundError(f"dataset {cfg.name!r}: dataset.image_dir {Path(cfg.image_dir).expanduser()} "
                                "is not a directory")
    base = Path(cfg.image_dir).expanduser() if cfg.image_dir else (path if path.is_dir() else path.parent)
    if path.is_dir() and ((path / "state.json").exists() or (path / "dataset_dict.json").exists()):
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            if cfg.split not in ds:
                raise ValueError(f"dataset {cfg.name!r}: split {cfg.split!r} not in {path} ({list(ds)})")
            ds = ds[cfg.split]
        return ds, base
    if path.is_dir():
        for ext, kind in (("parquet", "parquet"), ("jsonl", "json"), ("json", "json")):
            files = sorted(path.rglob(f"*.{ext}"))
            if files:
                files, builder = _pick_split_files(files, cfg.split), kind
                break
        else:
            raise FileNotFoundError(f"dataset {cfg.name!r}: no parquet/jsonl/save_to_disk data under {path}")
    else:
        suffix = path.suffix.lower()
        found = {".parquet": "parquet", ".jsonl": "json", ".json": "json"}.get(suffix)
        if found is None:
            raise ValueError(f"dataset {cfg.name!r}: cannot read {path} (want .parquet, .jsonl or .json)")
        files, builder = [path], found
    ds = datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train")
    return ds, base
