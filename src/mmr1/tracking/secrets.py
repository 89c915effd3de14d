"""Keep secrets out of everything a run writes (config.yaml, grpo_args.json, wandb config, reports)."""

from __future__ import annotations

import os
import re
from typing import Any

REDACTED = "***REDACTED***"
SECRET_ENV_VARS = ("WANDB_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "MODELSCOPE_API_TOKEN")
# Keys that look like secrets: *_key, *token*, password, secret (but not e.g. "max_tokens" counts).
_SECRET_KEY = re.compile(r"(^|_)(api_?key|key|secret|password|passwd)$|token(?!s?_?(id|ids|count|s)$)", re.I)
_NOT_SECRET = {"max_completion_length", "num_completions_to_print"}


def is_secret_key(key: str) -> bool:
    return key not in _NOT_SECRET and bool(_SECRET_KEY.search(key))


def secret_values() -> list[str]:
    """Secret values present in the environment (so they can be scrubbed wherever they appear)."""
    return [v for k in SECRET_ENV_VARS if len(v := os.environ.get(k, "")) >= 4]


def redact(obj: Any) -> Any:
    """A copy of ``obj`` (dicts/lists/str) with secret-looking keys and known secret values masked."""
    values = secret_values()

    def walk(x: Any, key: str = "") -> Any:
        if isinstance(x, dict):
            return {k: (REDACTED if is_secret_key(str(k)) and v not in (None, "") else walk(v, str(k)))
                    for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [walk(v) for v in x]
        if isinstance(x, str):
            for v in values:
                x = x.replace(v, REDACTED)
        return x

    return walk(obj)
