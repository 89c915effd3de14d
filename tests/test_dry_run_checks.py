"""The dry run checks what it cheaply can, with the errors the real run gives, naming the key."""

from __future__ import annotations

import os

import pytest

from mmr1.config.checks import RunnableCheckError, check_runnable
from mmr1.tracking.run_dir import RunDirError
from testkit import compose_cfg, run_cli

LOCAL = ["dataset=geoqa", "dataset.source=local"]


def _check(tmp_path, overrides):
    check_runnable(compose_cfg(overrides, run_dir=tmp_path / "run"))


def test_the_default_and_a_good_local_dataset_pass(tmp_path):
    _check(tmp_path, [])
    data = tmp_path / "train.jsonl"
    data.write_text("{}\n")
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("You are a helpful assistant.")
    _check(tmp_path, [*LOCAL, f"dataset.path={data}", f"dataset.image_dir={tmp_path}",
                      f"dataset.system_prompt={prompt}"])


def test_local_source_needs_an_existing_path(tmp_path):
    with pytest.raises(ValueError, match=r"source=local needs dataset\.path"):
        _check(tmp_path, LOCAL)
    with pytest.raises(FileNotFoundError, match=r"dataset\.path /nonexistent does not exist"):
        _check(tmp_path, [*LOCAL, "dataset.path=/nonexistent"])


def test_missing_image_dir_and_system_prompt_are_named(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text("{}\n")
    with pytest.raises(FileNotFoundError, match=r"dataset\.image_dir /nonexistent/images is not a directory"):
        _check(tmp_path, [*LOCAL, f"dataset.path={data}", "dataset.image_dir=/nonexistent/images"])
    with pytest.raises(FileNotFoundError, match=r"dataset\.system_prompt /nonexistent\.txt does not exist"):
        _check(tmp_path, ["dataset.system_prompt=/nonexistent.txt"])
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match=r"dataset\.system_prompt .* is not UTF-8"):
        _check(tmp_path, [f"dataset.system_prompt={bad}"])


def test_hub_sources_need_their_id(tmp_path):
    with pytest.raises(ValueError, match=r"source=hf needs dataset\.hf_id"):
        _check(tmp_path, ["dataset=geoqa", "dataset.hf_id=null"])


def test_several_problems_are_listed_together(tmp_path):
    with pytest.raises(RunnableCheckError) as err:
        _check(tmp_path, [*LOCAL, "dataset.path=/nonexistent", "dataset.system_prompt=/nonexistent.txt"])
    assert "dataset.path /nonexistent" in str(err.value) and "dataset.system_prompt /nonexistent.txt" in str(err.value)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc (a path no user can create files in)")
def test_an_unwritable_run_directory_is_the_run_dir_error(tmp_path):
    cfg = compose_cfg([], run_dir="/proc/self/mmr1-run")
    with pytest.raises(RunDirError, match="is not writable"):
        check_runnable(cfg)


# The real run's own loaders give the same messages (the dry run must not invent its own).
def test_same_message_as_the_real_loader_for_dataset_path(tmp_path):
    from mmr1.data.datasets import to_config
    from mmr1.data.sources import load_local

    for overrides in (LOCAL, [*LOCAL, "dataset.path=/nonexistent"]):
        cfg = compose_cfg(overrides, run_dir=tmp_path / "run")
        with pytest.raises(Exception) as real:
            load_local(to_config(cfg.dataset), 0)
        with pytest.raises(Exception) as dry:
            check_runnable(cfg)
        assert (type(dry.value), str(dry.value)) == (type(real.value), str(real.value))


def test_same_message_as_the_real_loader_for_system_prompt(tmp_path):
    from mmr1.data.datasets import load_system_prompt

    with pytest.raises(FileNotFoundError) as real:
        load_system_prompt("/nonexistent.txt")
    with pytest.raises(FileNotFoundError) as dry:
        _check(tmp_path, ["dataset.system_prompt=/nonexistent.txt"])
    assert str(dry.value) == str(real.value)


def test_same_message_as_the_real_loader_for_image_dir(tmp_path):
    from mmr1.data.datasets import to_config
    from mmr1.data.sources import load_local

    data = tmp_path / "train.jsonl"
    data.write_text('{"problem": "p", "solution": "s", "image": "a.png"}\n')
    cfg = compose_cfg([*LOCAL, f"dataset.path={data}", "dataset.image_dir=/nonexistent/images"], run_dir=tmp_path)
    with pytest.raises(FileNotFoundError) as real:
        load_local(to_config(cfg.dataset), 0)
    with pytest.raises(FileNotFoundError) as dry:
        check_runnable(cfg)
    assert str(dry.value) == str(real.value)


# Through the command line, as a user runs it (needs train()'s dry-run branch to call check_runnable).
@pytest.mark.parametrize(("overrides", "key"), [
    ([*LOCAL, "dataset.path=/nonexistent"], "dataset.path"),
    (["dataset.system_prompt=/nonexistent.txt"], "dataset.system_prompt"),
])
def test_dry_run_fails_naming_the_key(tmp_path, overrides, key):
    proc = run_cli([*overrides, "dry_run=true", f"hydra.run.dir={tmp_path / 'run'}"], check=False)
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert key in proc.stderr, proc.stderr[-4000:]
    assert "Run directory:" not in proc.stdout


def test_a_good_dry_run_still_passes(tmp_path):
    proc = run_cli(["dry_run=true", f"hydra.run.dir={tmp_path / 'run'}"])
    assert proc.stdout.strip().splitlines()[-1] == f"Run directory: {(tmp_path / 'run').resolve()}"
