"""mmr1.evaluate: pass@k arithmetic, lengths, and the CLI on a tiny checkpoint scored with the training rewards."""

from __future__ import annotations

import json
import math
import re
import shutil

import pytest
import torch

from mmr1.evaluate import pass_at_k
from mmr1.models.generation import completion_lengths
from mmr1.tracking.series import reward_roles
from testkit import run_cli

# A tiny model gains nothing from a second OpenMP thread, and on shared cores it costs up to 5x
# (measured: a tiny_count step on 2 loaded cores).
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def test_pass_at_k_is_the_unbiased_estimator():
    assert pass_at_k(4, 0, 1) == 0.0
    assert pass_at_k(4, 4, 4) == 1.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)  # 1 - C(3,2)/C(4,2)
    assert pass_at_k(5, 3, 3) == 1.0  # fewer than k wrong samples: some k-subset is all correct
    with pytest.raises(ValueError, match="at least 3 samples"):
        pass_at_k(2, 1, 3)


def test_reward_roles_pick_accuracy_and_format():
    assert reward_roles(["external_r1v_acc", "format"]) == ("external_r1v_acc", "format")
    assert reward_roles(["format", "my_reward"]) == ("my_reward", "format")
    assert reward_roles(["only"]) == ("only", None)


def test_lengths_count_through_the_first_end_of_turn():
    ids = torch.tensor([[5, 6, 9, 0, 0], [5, 6, 7, 8, 4]])
    assert completion_lengths(ids, {9}, 0) == ([3, 5], [False, True])


# The constant answerer's completion: the R1 format with the answer 2, whatever the image shows.
CONSTANT = "<think>x</think><answer>2</answer>"
TRAIN = ["model.warmstart.enabled=false", "dataset.num_samples=16", "dataset.eval_size=8",
         "trainer.max_completion_length=16", "trainer.temperature=0.5", "trainer.top_p=0.95"]
EVAL = [*TRAIN, "eval.top_k=3", "eval.batch_size=4", "eval.num_samples=3", "eval.pass_k=[1,3]"]
_TAGS = re.compile(r"^<think>.*?</think>\s*<answer>(.*?)</answer>$", re.DOTALL)


def constant_answerer(dst):
    """The tiny model fine-tuned (plain next-token loss on the completion) to answer CONSTANT to every
    prompt of the training split: a checkpoint that truly differs from the base model."""
    from transformers import AutoModelForImageTextToText

    from mmr1.data import build_datasets
    from mmr1.models import load_processor
    from mmr1.models.generation import row_images
    from mmr1.models.tiny import tiny_qwen2_5_vl_path
    from testkit import compose_cfg

    base = tiny_qwen2_5_vl_path()
    cfg = compose_cfg(TRAIN)
    rows = build_datasets(cfg.dataset, min_pixels=None, max_pixels=None, seed=cfg.trainer.seed).train
    processor = load_processor(str(base), min_pixels=None, max_pixels=None)
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_pretrained(base, dtype=torch.float32)
    batches = []
    for r in [rows[i] for i in range(6)]:
        prompt = processor.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=False)
        inputs = processor(text=[prompt + CONSTANT + "<|im_end|>"], images=row_images(r), return_tensors="pt")
        n_prompt = processor(text=[prompt], images=row_images(r), return_tensors="pt")["input_ids"].shape[1]
        labels = inputs["input_ids"].clone()
        labels[:, :n_prompt] = -100
        batches.append({**inputs, "labels": labels})
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(40):
        loss = model(**batches[step % len(batches)]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(dst)
    processor.save_pretrained(dst)
    shutil.copy(base / "mmr1_recipe.json", dst / "mmr1_recipe.json")
    return float(loss.detach())


def _evaluate(tmp_path, name, *extra):
    run_cli([*EVAL, *extra, f"hydra.run.dir={tmp_path / ('hydra-' + name)}"], module="mmr1.evaluate", timeout=300,
            env=ONE_THREAD)


def _answer(text):
    m = _TAGS.match(text.strip())
    return m.group(1).strip() if m else None


def _check_against_an_independent_count(result, solutions):
    """Every headline number recomputed here from the completions' text, lengths and the rows' solutions."""
    gold = [re.search(r"<answer>(.*?)</answer>", s).group(1).strip() for s in solutions]
    assert [r["solution"] for r in result["records"]] == solutions  # the held-out rows, in order
    greedy = [r["greedy"] for r in result["records"]]
    correct = [float(_answer(g["text"]) == a) for g, a in zip(greedy, gold)]
    formatted = [float(_answer(g["text"]) is not None) for g in greedy]
    truncated = [float(g["length"] == 16 and not g["text"].endswith("</answer>")) for g in greedy]
    n = len(solutions)
    assert result["accuracy"] == pytest.approx(sum(correct) / n)
    assert result["format_rate"] == pytest.approx(sum(formatted) / n)
    assert result["truncated_rate"] == pytest.approx(sum(truncated) / n)
    assert result["rewards"] == pytest.approx({"external_r1v_acc": sum(correct) / n, "format": sum(formatted) / n})
    assert result["mean_length"] == pytest.approx(sum(g["length"] for g in greedy) / n)
    sampled = result["sampled"]
    # The trainer's sampling settings unless eval.* overrides them (eval.top_k=3 here).
    assert (sampled["n"], sampled["temperature"], sampled["top_p"], sampled["top_k"]) == (3, 0.5, 0.95, 3)
    hits = [sum(_answer(c["text"]) == a for c in r["samples"]) for r, a in zip(result["records"], gold)]
    for k in (1, 3):
        expect = sum(1 - math.comb(3 - c, k) / math.comb(3, k) for c in hits) / n
        assert sampled["pass_at_k"][str(k)] == pytest.approx(expect)
    return sum(correct) / n


@pytest.mark.slow
def test_evaluate_tells_a_checkpoint_that_answers_from_the_base_model(tmp_path):
    """Two models that truly differ: a run whose final/ answers "2" in the R1 format to everything, and the
    base model (eval.checkpoint=null). Accuracy, format and truncation rates, per-reward means, pass@k and
    the sampling settings are each checked against a count made here from the records; eval.output is
    honoured; the sweep report picks up the run's eval.json."""
    from mmr1.data import build_datasets
    from mmr1.sweep.table import write_report
    from testkit import compose_cfg

    run = tmp_path / "run"
    assert constant_answerer(run / "final") < 0.2  # learnt (mean NLL per completion token)
    (run / "run_info.json").write_text(json.dumps({"status": "finished", "steps": 0}))
    cfg = compose_cfg(TRAIN)
    held_out = build_datasets(cfg.dataset, min_pixels=None, max_pixels=None, seed=cfg.trainer.seed).eval
    solutions = [held_out[i]["solution"] for i in range(len(held_out))]
    expected_acc = sum("<answer> 2 </answer>" == s for s in solutions) / len(solutions)
    assert 0 < expected_acc < 1  # the rows mix answers: accuracy is neither all nor nothing

    # As the seed's own benchmark (its held-out split, scored by its rewards: the same numbers, plus the protocol's).
    _evaluate(tmp_path, "trained", f"eval.checkpoint={run}", "eval.benchmark=clevr_count")
    trained = json.loads((run / "eval.json").read_text())
    assert trained["benchmark"]["rows"] == "held_out" and trained["reward_accuracy"] == trained["accuracy"]
    assert [r["greedy"]["correct"] for r in trained["records"]] == [
        r["greedy"]["rewards"]["external_r1v_acc"] == 1.0 for r in trained["records"]]
    assert trained["disagreements"] == [] and trained["baselines"][0]["model"] == "Qwen2.5-VL-3B-Instruct"
    assert trained["model"] == str(run / "final") and trained["checkpoint"] == str(run)
    assert all(r["greedy"]["text"] == CONSTANT for r in trained["records"])
    assert _check_against_an_independent_count(trained, solutions) == pytest.approx(expected_acc)
    assert trained["format_rate"] == 1.0 and trained["truncated_rate"] == 0.0

    out = tmp_path / "elsewhere" / "base.json"
    _evaluate(tmp_path, "base", f"eval.output={out}")
    base = json.loads(out.read_text())
    assert not (tmp_path / "hydra-base" / "eval.json").exists()  # eval.output, not the run directory
    assert base["checkpoint"] is None and base["model"] != trained["model"]
    _check_against_an_independent_count(base, solutions)
    assert base["accuracy"] < trained["accuracy"] and base["format_rate"] < 1.0

    (row,) = write_report(run, plots=False)
    assert row["eval_acc"] == trained["accuracy"] and row["eval_step"] == "clevr_count"
    assert row["published"] == "Qwen2.5-VL-3B-Instruct 0.400 -> 1.000"


@pytest.mark.slow
def test_evaluate_refuses_a_missing_split(tmp_path):
    proc = run_cli(["model.warmstart.enabled=false", "dataset.num_samples=16", "dataset.eval_size=0",
                    f"hydra.run.dir={tmp_path}"], module="mmr1.evaluate", timeout=240, check=False, env=ONE_THREAD)
    assert proc.returncode != 0 and "eval.split='eval': no such split" in proc.stderr
