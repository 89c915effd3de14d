"""Keep secrets out of everything a run writes: config.yaml, grpo_args.json, .hydra/, logs, wandb
config, checkpoints (training_args.bin is a plain pickle of the args), the sweep report.

Secrets belong in the environment (WANDB_API_KEY, HF_TOKEN, MODELSCOPE_API_TOKEN: their clients read
them from there). A secret-looking command-line override is refused, because Hydra has already written
it verbatim to ``.hydra/overrides.yaml`` and ``hydra.yaml`` before mmr1 runs: we scrub those files,
then stop, so the next attempt passes it the right way.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

REDACTED = "***REDACTED***"
SECRET_ENV_VARS = ("WANDB_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "MODELSCOPE_API_TOKEN")
# Last word of a key that marks a secret (`hub_token`, `wandb_api_key`, `client_secret`, `password`).
_SECRET_LAST = {"key", "apikey", "secret", "password", "passwd", "credential", "credentials", "token"}
# A word anywhere in the key that does (`token_file` is not, but `auth_token_value` is).
_SECRET_WORD = {"token", "secret", "password", "passwd", "apikey"}
# ... unless the key names a count or an id of tokens (`pad_token_id`, `max_tokens` never match).
_NOT_SECRET_LAST = {"id", "ids", "count", "len", "length", "file", "path", "env", "var"}
_ASSIGNMENT = re.compile(r"(?P<key>[A-Za-z_][\w.\-/+~]*)=(?P<val>[^,\s]*)")


class SecretError(ValueError):
    """A secret would be written where it must not be (training args, hence every checkpoint)."""


class SecretOverrideError(SystemExit):
    """A secret on the command line. A SystemExit, not an Exception: Hydra reports a failed job with
    "Error executing job with overrides: [...]", which would print the secret once more."""


def is_secret_key(key: str) -> bool:
    """Does this config key (or dotted path: only its last part counts) name a secret?

    >>> [is_secret_key(k) for k in ("hub_token", "trainer.extra.hub_token", "WANDB_API_KEY", "password")]
    [True, True, True, True]
    >>> [is_secret_key(k) for k in ("pad_token_id", "max_tokens", "tokenizer", "num_tokens", "token_file")]
    [False, False, False, False, False]
    """
    words = [w for w in re.split(r"[^a-z0-9]+", str(key).rsplit(".", 1)[-1].lower()) if w]
    if not words or words[-1] in _NOT_SECRET_LAST:
        return False
    return words[-1] in _SECRET_LAST or any(w in _SECRET_WORD for w in words) or "".join(words[-2:]) == "apikey"


def secret_values() -> list[str]:
    """Secret values present in the environment (so they can be scrubbed wherever they appear)."""
    return [v for k in SECRET_ENV_VARS if len(v := os.environ.get(k, "")) >= 4]


def redact_text(text: str, values: list[str] | None = None) -> str:
    """Known secret values and ``secret_key=value`` assignments (overrides, URLs) masked in a string."""
    for v in secret_values() if values is None else values:
        text = text.replace(v, REDACTED)
    return _ASSIGNMENT.sub(lambda m: f"{m['key']}={REDACTED}" if is_secret_key(m["key"].lstrip("+~")) and m["val"]
                           else m[0], text)


def redact_override(override: str) -> str:
    return redact_text(override)


def redact(obj: Any) -> Any:
    """A copy of ``obj`` (dicts/lists/str) with secret-looking keys and known secret values masked."""
    values = secret_values()

    def walk(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: (REDACTED if is_secret_key(str(k)) and v not in (None, "") else walk(v)) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [walk(v) for v in x]
        if isinstance(x, str):
            return redact_text(x, values)
        return x

    return walk(obj)


def secret_overrides(overrides: list[str]) -> list[str]:
    """The keys of overrides that carry a secret (a secret-looking key with a value, or a known value)."""
    values = secret_values()
    bad = []
    for o in overrides:
        key, _, val = o.partition("=")
        if (is_secret_key(key.lstrip("+~")) and val not in ("", "null")) or any(v in o for v in values):
            bad.append(key)
    return bad


def scrub_hydra_dir(run_dir: str | Path) -> list[Path]:
    """Redact ``.hydra/*.yaml`` in place (Hydra writes overrides and the composed config verbatim)."""
    import yaml

    changed = []
    for p in sorted((Path(run_dir) / ".hydra").glob("*.yaml")):
        try:
            data = yaml.safe_load(p.read_text())
        except (OSError, yaml.YAMLError):
            continue
        clean = redact(data)
        if clean != data:
            p.write_text(yaml.safe_dump(clean, sort_keys=False))
            changed.append(p)
    return changed


def protect_run_dir(run_dir: str | Path, *, scrub: bool = True) -> None:
    """Before anything else is written: scrub ``.hydra/`` (``scrub``: rank 0 only), refuse secret
    overrides (every rank, so that all stop), redact log output."""
    install_log_redaction()
    if scrub:
        scrub_hydra_dir(run_dir)
    try:
        from hydra.core.hydra_config import HydraConfig

        overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    except Exception:  # noqa: BLE001 - hydra absent or not running: nothing came from a command line
        overrides = []
    bad = secret_overrides(overrides)
    if bad:
        raise SecretOverrideError(
            f"mmr1: refusing secret-looking command-line override(s) {bad}: Hydra records overrides verbatim "
            f"(.hydra/ in the run directory, now scrubbed). Pass secrets as environment variables "
            f"({', '.join(SECRET_ENV_VARS)}); their clients read them from there.")


def check_training_args(args: Any) -> None:
    """``training_args.bin`` (pickled into every checkpoint) must hold no secret: refuse before training."""
    values = secret_values()
    for name, value in vars(args).items():
        if value in (None, "") or isinstance(value, bool):
            continue
        if is_secret_key(name) or (isinstance(value, str) and any(v in value for v in values)):
            raise SecretError(
                f"training argument {name!r} holds a secret, and every checkpoint's training_args.bin stores "
                "the arguments in plain text: remove it from the config and set the environment variable "
                "instead (HF_TOKEN for the hub).")


class _RedactFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if secret_values() or "=" in str(record.msg):
            msg = record.getMessage()
            clean = redact_text(msg)
            if clean != msg:
                record.msg, record.args = clean, ()
        return True


_FILTER = _RedactFilter()


def install_log_redaction() -> None:
    """Attach the redacting filter to every handler of the root logger (Hydra's console and file)."""
    for h in logging.getLogger().handlers:
        if _FILTER not in h.filters:
            h.addFilter(_FILTER)
