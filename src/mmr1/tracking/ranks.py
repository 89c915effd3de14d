"""Which process this is: the global rank a launcher (torchrun, accelerate, DeepSpeed) gives every process in
``RANK``; no ``RANK`` is a single-process run. Read from the environment, not torch.distributed, so that it
answers before any process group exists (the launching process, the run directory, the first log lines)."""

from __future__ import annotations

import os
from collections.abc import Mapping


def global_rank(env: Mapping[str, str] | None = None) -> int:
    """The global rank (0 without a launcher).

    >>> global_rank({"RANK": "3"}), global_rank({})
    (3, 0)
    """
    source = os.environ if env is None else env
    return int(source.get("RANK", "0") or 0)


def is_main_process(env: Mapping[str, str] | None = None) -> bool:
    """Global rank 0 (or no distributed run): the one process that writes the run directory's files."""
    return global_rank(env) == 0
