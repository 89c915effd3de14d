"""Progress-bar postfix and wandb run setup (offline without a key, said once; grouped per sweep)."""

from __future__ import annotations

import logging

import pytest

from mmr1.tracking import wandb_run
from mmr1.tracking.progress import reward_postfix
from testkit import compose_cfg


def test_postfix_shows_reward_accuracy_format_kl_length():
    logs = {"reward": 1.25, "rewards/external_r1v_acc/mean": 0.25, "rewards/format/mean": 1.0, "kl": 0.0012,
            "completions/mean_length": 12.5, "loss": 0.1}
    assert reward_postfix(logs) == {"reward": "1.25", "acc": "0.25", "format": "1", "kl": "0.0012", "len": "12.5"}
    assert reward_postfix({"eval_reward": 0.5, "eval_rewards/format/mean": 1.0}, prefix="eval_") == {
        "reward": "0.5", "format": "1"}


@pytest.fixture
def no_wandb_env(monkeypatch, tmp_path):
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_PROJECT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setattr(wandb_run, "_announced_offline", False)


def test_mode_offline_without_key_said_once(no_wandb_env, monkeypatch, caplog):
    with caplog.at_level(logging.WARNING, logger="mmr1.tracking.wandb_run"):
        assert wandb_run.resolve_mode("auto") == "offline"
        assert wandb_run.resolve_mode("auto") == "offline"
    assert sum("logging offline" in r.getMessage() for r in caplog.records) == 1
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_run.resolve_mode("auto") == "online"
    assert wandb_run.resolve_mode("offline") == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_run.resolve_mode("online") == "disabled"


def test_init_kwargs_outside_a_sweep(no_wandb_env, tmp_path):
    cfg = compose_cfg(["logger=wandb", "logger.tags=[a]"], run_dir=tmp_path / "myrun")
    (tmp_path / "myrun").mkdir()
    kw = wandb_run.init_kwargs(cfg, tmp_path / "myrun")
    assert kw["group"] is None and kw["name"] == "myrun" and kw["project"] == "mmr1" and kw["tags"] == ["a"]
    assert kw["mode"] == "offline" and kw["resume"] == "allow" and "id" not in kw
    (tmp_path / "myrun" / wandb_run.RUN_ID_FILE).write_text("abc123\n")
    assert wandb_run.init_kwargs(cfg, tmp_path / "myrun")["id"] == "abc123"  # a resumed run continues its wandb run


@pytest.mark.slow
def test_setup_wandb_offline_run(no_wandb_env, tmp_path):
    wandb = pytest.importorskip("wandb")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    cfg = compose_cfg(["logger=wandb"], run_dir=run_dir)
    run = wandb_run.setup_wandb(cfg, run_dir)
    try:
        assert run is not None and run.settings.mode == "offline"
        assert (run_dir / wandb_run.RUN_ID_FILE).read_text() == run.id
        assert list((run_dir / "wandb").glob("offline-run-*"))
    finally:
        wandb.finish()
