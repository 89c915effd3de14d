"""Secrets: planted in the environment and the config, then searched for in every byte a run writes."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from harness import cli, with_overrides

from mmr1.tracking.secrets import (
    REDACTED,
    SecretError,
    check_training_args,
    is_secret_key,
    redact,
    secret_overrides,
)
from testkit import run_cli

ENV_SECRETS = {"WANDB_API_KEY": "wandbPLANTED0123456789abcdef0123456789abcd", "HF_TOKEN": "hf_PLANTEDhftoken42",
               "MODELSCOPE_API_TOKEN": "msPLANTEDmodelscope77"}
CONFIG_SECRET = "cfgPLANTEDsecret99"


def leaks(run_dir: Path, secrets: list[str]) -> list[str]:
    found = []
    for p in run_dir.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            found += [f"{p.relative_to(run_dir)}: {s[:6]}..." for s in secrets if s.encode() in data]
    return found


@pytest.mark.parametrize("key", ["hub_token", "trainer.extra.hub_token", "WANDB_API_KEY", "api_key", "password",
                                 "client_secret", "auth_token_value", "deepspeed.extra.api_key"])
def test_secret_looking_keys(key):
    assert is_secret_key(key)


@pytest.mark.parametrize("key", ["pad_token_id", "max_tokens", "tokenizer", "num_tokens", "token_file",
                                 "max_completion_length", "reward_keys", "num_completions_to_print"])
def test_ordinary_keys(key):
    assert not is_secret_key(key)


def test_redact_masks_keys_values_and_assignments(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", ENV_SECRETS["HF_TOKEN"])
    out = redact({"a": {"api_key": "x1", "url": f"https://u:{ENV_SECRETS['HF_TOKEN']}@hub", "token_id": 5},
                  "overrides": ["trainer.extra.hub_token=abc", "trainer.beta=0.1"]})
    assert out == {"a": {"api_key": REDACTED, "url": f"https://u:{REDACTED}@hub", "token_id": 5},
                   "overrides": [f"trainer.extra.hub_token={REDACTED}", "trainer.beta=0.1"]}


def test_secret_overrides_and_training_args_are_refused(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", ENV_SECRETS["HF_TOKEN"])
    assert secret_overrides(["+trainer.extra.hub_token=abc", "trainer.beta=0", "x.hub_token=null",
                             f"model.name_or_path=https://u:{ENV_SECRETS['HF_TOKEN']}@hub/m"]) == [
        "+trainer.extra.hub_token", "model.name_or_path"]
    with pytest.raises(SecretError, match="hub_token"):
        check_training_args(SimpleNamespace(hub_token="abc", seed=1))
    check_training_args(SimpleNamespace(hub_token=None, seed=1, push_to_hub=False))


def test_a_secret_on_the_command_line_is_refused_and_scrubbed_from_hydra_files(tmp_path):
    run = tmp_path / "run"
    proc = run_cli(["dry_run=true", f"+trainer.extra.hub_token={CONFIG_SECRET}", f"hydra.run.dir={run}"],
                   check=False)
    assert proc.returncode != 0 and "refusing secret-looking command-line override" in proc.stderr
    assert (run / ".hydra" / "overrides.yaml").exists()
    assert leaks(run, [CONFIG_SECRET]) == []
    assert CONFIG_SECRET not in proc.stdout + proc.stderr


@pytest.mark.slow
def test_planted_secrets_appear_nowhere_in_the_run_directory(tmp_path):
    """Env secrets + a secret-looking config key, a 2-step run with checkpoints and wandb (offline):
    config.yaml, .hydra/, train.log, checkpoints (training_args.bin), wandb files: grep every byte."""
    confdir = tmp_path / "conf" / "experiment"
    confdir.mkdir(parents=True)
    (confdir / "planted.yaml").write_text(f"# @package _global_\ndeepspeed:\n  extra:\n    api_key: {CONFIG_SECRET}\n")
    run = tmp_path / "run"
    overrides = with_overrides("trainer.max_steps=2", "trainer.save_steps=1", "logger=wandb")
    cli([*overrides, f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "+experiment=planted"], run,
        env={**ENV_SECRETS, "WANDB_MODE": "offline"})
    assert (run / "checkpoint-2" / "training_args.bin").exists() and list((run / "wandb").glob("offline-run-*"))
    assert REDACTED in (run / "config.yaml").read_text()
    assert leaks(run, [*ENV_SECRETS.values(), CONFIG_SECRET]) == []


def test_log_records_are_redacted(monkeypatch):
    import io
    import logging

    from mmr1.tracking.secrets import install_log_redaction

    monkeypatch.setenv("HF_TOKEN", ENV_SECRETS["HF_TOKEN"])
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        install_log_redaction()
        logging.getLogger("some.library").warning("url https://u:%s@hub, %s", ENV_SECRETS["HF_TOKEN"], "api_key=xyz")
    finally:
        root.removeHandler(handler)
    assert ENV_SECRETS["HF_TOKEN"] not in stream.getvalue() and "xyz" not in stream.getvalue()
    assert REDACTED in stream.getvalue()
