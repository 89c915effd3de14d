"""No completion holds a vision token, under every backend: the ids are read from the model, each backend bans
them at sampling time, and a model that wants nothing but vision tokens trains without one in its completions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmr1.rollout.vision_tokens import ban_kwargs, vision_token_ids
from testkit import TINY, run_cli

RECORDER = Path(__file__).with_name("id_recorder.py")

# One xdist worker: its model (module fixture) is built once.
pytestmark = pytest.mark.xdist_group("vision_lover")


def _tiny_config():
    from transformers import AutoConfig

    from mmr1.models.tiny import tiny_qwen2_5_vl_path

    return AutoConfig.from_pretrained(tiny_qwen2_5_vl_path())


def test_vision_tokens_are_read_from_the_config_and_the_processor(tiny_processor):
    config = _tiny_config()
    tokens = vision_token_ids(config, tiny_processor)
    # Every vision id of the config, and <|vision_pad|>, which only the tokenizer names.
    for key in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"):
        assert getattr(config, key) in tokens.values(), key
    assert set(tokens) == {"<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>"}
    assert tokens["<|image_pad|>"] == config.image_token_id
    # Text the model may write (boxes, object refs, the R1 tags) is not banned.
    tok = tiny_processor.tokenizer
    assert not {tok.convert_tokens_to_ids(t) for t in ("<|box_start|>", "<answer>", "<|im_end|>")} & set(
        tokens.values())


def test_each_backend_bans_them_with_its_own_setting(tiny_processor):
    tokens = vision_token_ids(_tiny_config(), tiny_processor)
    assert ban_kwargs("hf", tokens) == {"suppress_tokens": sorted(tokens.values())}
    # vLLM's bad_words are strings it encodes itself: each must encode to exactly its own id.
    vllm = ban_kwargs("vllm", tokens, tiny_processor.tokenizer)
    assert [tiny_processor.tokenizer.encode(w, add_special_tokens=False) for w in vllm["bad_words"]] == [
        [i] for i in sorted(tokens.values())]
    with pytest.raises(ValueError, match="encodes to"):
        ban_kwargs("vllm", {"<|image_pad|>": tokens["<|image_pad|>"] + 1}, tiny_processor.tokenizer)


@pytest.fixture(scope="module")
def vision_lover(tmp_path_factory) -> Path:
    from vision_lover import make_vision_lover

    return make_vision_lover(tmp_path_factory.mktemp("vision-lover") / "model")


def _train_vision_lover(model: Path, run_dir: Path, rollout: list[str]) -> tuple[list[list[int]], list[dict]]:
    """2 GRPO steps of the vision-loving model; the completion ids the trainer trained on, and metrics.jsonl."""
    ids_file = run_dir.parent / f"{run_dir.name}-ids.jsonl"
    run_cli([*TINY, f"model.name_or_path={model}", "trainer.max_steps=2", *rollout,
             f"reward.plugins=[{RECORDER}]", "reward.funcs=[external_r1v_acc,format,record_completion_ids]",
             "reward.all_zero_patience=0", f"hydra.run.dir={run_dir}"],
            env={"MMR1_TEST_COMPLETION_IDS": str(ids_file)}, timeout=900)
    ids = [json.loads(line) for line in ids_file.read_text().splitlines()]
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return ids, metrics


@pytest.mark.slow
@pytest.mark.parametrize("rollout", [
    pytest.param(["rollout=hf"], id="hf"),
    pytest.param(["rollout=vllm_colocate", "rollout.enforce_eager=true", "rollout.kv_cache_gib=1"],
                 id="vllm_colocate", marks=pytest.mark.vllm),
])
def test_a_model_that_prefers_vision_tokens_trains_without_writing_one(rollout, vision_lover, tmp_path,
                                                                      tiny_processor):
    # Unbanned, this model writes <|image_pad|> at every position (TRL's hf path bans that one alone: it then
    # writes <|video_pad|>); under vLLM the first training forward fails on image features vs image tokens.
    banned = set(vision_token_ids(_tiny_config(), tiny_processor).values())
    ids, metrics = _train_vision_lover(vision_lover, tmp_path / "run", rollout)
    assert len(ids) == 2 * 8 and all(ids), "2 steps x 8 completions, none empty"
    assert not [c for c in ids if banned & set(c)], "a completion the trainer trained on holds a vision token"
    steps = [m for m in metrics if "rollout/vision_token_cuts" in m]
    # Banned at sampling: the guard that would cut a vision token out of a completion never had one to cut.
    assert [m["step"] for m in steps] == [1, 2] and all(m["rollout/vision_token_cuts"] == 0 for m in steps)
