"""Benchmarks under their authors' protocols: the scorers against the authors' own code on the cases it implies,
the test files' loading and its failures, an R1-V result file re-scored to its own accuracy, and one evaluation of
the tiny model on a SuperCLEVR-shaped test file."""

from __future__ import annotations

import json
import re

import pytest
from math_verify import parse, verify
from PIL import Image

from mmr1.evaluation.completions import read_completions
from mmr1.evaluation.config import BenchmarkConfig, Prompt, Rows
from mmr1.evaluation.scorers import r1v_count, r1v_math_verify
from mmr1.evaluation.testsets import load_rows, read_records, resolve_image
from testkit import REPO, run_cli


# --- The authors' code, verbatim (Deep-Agent/R1-V@bbbbe3dc), as the oracle the scorers must agree with. ---------
def extract_number_answer(output_str):  # src/eval/test_qwen2vl_counting_superclevr.py:88-95
    # Try to find the number within <answer> tags, if can not find, return None
    answer_pattern = r'<answer>\s*(\d+)\s*</answer>'
    match = re.search(answer_pattern, output_str)

    if match:
        return int(match.group(1))
    return None


def superclevr_correct(model_output, ground_truth):  # :113-117
    model_answer = extract_number_answer(model_output)
    return model_answer is not None and model_answer == ground_truth


def geoqa_correct(original_output, ground_truth):  # src/eval/test_qwen2vl_geoqa.py:99-106
    model_answer = parse(original_output)
    return model_answer is not None and float(verify(model_answer, parse(ground_truth))) > 0


# The failure cases their code implies, each with what the authors' script decides (checked against the oracle too).
COUNT_CASES = [  # (completion, ground truth 3: correct?)
    ("<answer>3</answer>", True), ("<think>x</think><answer> 3 </answer>", True), ("<answer>\n 3\n</answer>", True),
    ("<answer>03</answer>", True), ("<answer>3.0</answer>", False), ("<answer>three</answer>", False),
    ("<answer>3 objects</answer>", False), ("<answer>-3</answer>", False), ("The answer is 3.", False),
    ("<answer>3", False), ("<ANSWER>3</ANSWER>", False), ("<answer>2</answer> <answer>3</answer>", False),
    ("<answer>two</answer><answer>3</answer>", True), ("<answer>\\boxed{3}</answer>", False),
]
GEOQA_CASES = [  # (completion, ground truth, correct?)
    ("<answer> 140 </answer>", "140°", True),
    ("<think>x</think>\n<answer>140</answer>", "140°", False),  # no whitespace before 140: nothing extracted
    ("<answer>$140$</answer>", "140°", True),  # the LaTeX extractor needs no whitespace
    ("<think>angle A = 80, angle B = 60</think><answer>140</answer>", "140°", False),  # grades the 60
    ("<think>angle is 140</think><answer>40</answer>", "140°", True),  # a wrong answer scored right
    ("<answer> 140 </answer> and also 40", "140°", False),  # the rightmost number wins
    ("<answer> 3cm </answer>", "3cm", True), ("<answer> 2.4 </answer>", "\\frac{12}{5}", True),
    ("<answer> $2\\sqrt{3}$ </answer>", "2√{3}", False),  # the ground truth parses to 2
    ("<answer> 2 </answer>", "2√{3}", True),
    ("<answer> 1.732 </answer>", "√{3}", False),  # the ground truth parses to nothing: never correct
    ("no number here", "140°", False),
    ("<answer>√{3}</answer>", "√{3}", False),  # the very ground truth, unparseable: wrong by R1-V's protocol
]


@pytest.mark.parametrize(("completion", "correct"), COUNT_CASES)
def test_superclevr_scorer_is_r1v_extract_number_answer(completion, correct):
    extracted, ours = r1v_count(completion, 3)
    assert ours is correct is superclevr_correct(completion, 3)
    assert extracted == extract_number_answer(completion)
    assert r1v_count(completion, "3")[1] is correct  # a digit-string ground truth from another file reads as 3


@pytest.mark.parametrize(("completion", "gold", "correct"), GEOQA_CASES)
def test_geoqa_scorer_is_r1v_math_verify_on_the_whole_output(completion, gold, correct):
    extracted, ours = r1v_math_verify(completion, gold)
    assert ours is correct is geoqa_correct(completion, gold)
    assert (extracted is None) == (parse(completion) == [])


def _bench(tmp_path, **kw) -> BenchmarkConfig:
    return BenchmarkConfig(name="t", rows=Rows.jsonl, path=str(tmp_path / "test.jsonl"), **kw)


def _test_file(tmp_path, n=3, *, folder="images", bad=None):
    """A test file in R1-V's schema whose image paths are relative to R1-V's src/eval, as theirs are."""
    (tmp_path / folder).mkdir(exist_ok=True)
    lines = []
    for i in range(n):
        Image.new("RGB", (56, 56), (40 * i, 80, 120)).save(tmp_path / folder / f"superCLEVR_new_{25000 + i}.png")
        lines.append(json.dumps({"image_path": f"./{folder}/superCLEVR_new_{25000 + i}.png",
                                 "question": "How many different items are there in the image?",
                                 "ground_truth": i + 3}))
    if bad is not None:
        lines[bad[0]] = bad[1]
    (tmp_path / "test.jsonl").write_text("\n".join(lines) + "\n")


def test_rows_follow_the_protocol_and_bad_files_are_named(tmp_path):
    _test_file(tmp_path)
    bench = _bench(tmp_path, template="{Question} Count.", size=3)
    rows = load_rows(bench, system_prompt="SYS", query_suffix=" SUF", limit=None)
    assert [r["ground_truth"] for r in rows] == [3, 4, 5]
    assert rows[0]["prompt"] == [{"role": "user", "content": [
        {"type": "image"}, {"type": "text", "text": "How many different items are there in the image? Count."}]}]
    assert rows[1]["solution"] == "<answer> 4 </answer>"
    trained = load_rows(_bench(tmp_path, prompt=Prompt.training), system_prompt="SYS", query_suffix=" SUF", limit=2)
    assert len(trained) == 2 and trained[0]["prompt"][0]["content"][0]["text"] == "SYS"
    assert trained[0]["prompt"][1]["content"][1]["text"].endswith("image? SUF")

    with pytest.raises(ValueError, match=r"has 3 rows, the authors' file 754"):
        load_rows(_bench(tmp_path, size=754), system_prompt="", query_suffix="", limit=None)
    (tmp_path / "images" / "superCLEVR_new_25001.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"row 1 .*superCLEVR_new_25001.png is unreadable"):
        load_rows(_bench(tmp_path), system_prompt="", query_suffix="", limit=None)
    Image.new("RGB", (56, 56)).save(tmp_path / "images" / "superCLEVR_new_25001.png")
    (tmp_path / "images" / "superCLEVR_new_25002.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"row 2 .*superCLEVR_new_25002.png' not found .*get them here"):
        load_rows(_bench(tmp_path, images="get them here"), system_prompt="", query_suffix="", limit=None)

    _test_file(tmp_path, bad=(1, '{"image_path": "x.png", "question": "q"'))
    with pytest.raises(ValueError, match=r"test.jsonl line 2 is not JSON"):
        read_records(tmp_path / "test.jsonl", None, "t")
    _test_file(tmp_path, bad=(2, '{"image_path": "x.png", "question": "q"}'))
    with pytest.raises(ValueError, match=r"test.jsonl line 3 has no \['ground_truth'\]"):
        read_records(tmp_path / "test.jsonl", None, "t")


def test_authors_image_paths_resolve_under_an_image_dir(tmp_path):
    img = tmp_path / "Geo170K" / "images" / "test" / "0.png"
    img.parent.mkdir(parents=True)
    img.write_bytes(b"")
    assert resolve_image("./Geo170K/images/test/0.png", tmp_path) == img
    assert resolve_image("/home/them/Geo170K/images/test/0.png", tmp_path) == img  # their logs' absolute paths
    assert resolve_image("./Geo170K/images/test/1.png", tmp_path) is None


def _r1v_result_file(path, outputs, golds):
    """What R1-V's test_qwen2vl_geoqa.py writes (:93-144): its own accuracy (percent) and per-row results."""
    results = [{"question": {"image_path": f"./Geo170K/images/test/{i}.png", "question": "q", "ground_truth": g},
                "ground_truth": g, "model_output": o, "is_correct": geoqa_correct(o, g)}
               for i, (o, g) in enumerate(zip(outputs, golds))]
    accuracy = sum(r["is_correct"] for r in results) / len(results) * 100
    path.write_text(json.dumps({"accuracy": accuracy, "results": results}, ensure_ascii=False))
    return accuracy / 100


def test_an_r1v_result_file_rescored_reproduces_its_accuracy(tmp_path):
    """eval.completions on R1-V's own output format, through the CLI: the protocol's accuracy equals the file's,
    the training reward scores beside it, the rows the two score apart are listed, the baselines are there."""
    outputs = [c for c, _, _ in GEOQA_CASES]
    golds = [g for _, g, _ in GEOQA_CASES]
    reported = _r1v_result_file(tmp_path / "r1v.json", outputs, golds)
    rows, given, file_acc = read_completions(tmp_path / "r1v.json")
    assert file_acc == pytest.approx(reported) and rows[0]["question"] == "q" and given[0][0]["text"] == outputs[0]

    out = tmp_path / "eval.json"
    run_cli(["eval.benchmark=geoqa_test", f"eval.completions={tmp_path / 'r1v.json'}", f"eval.output={out}",
             f"hydra.run.dir={tmp_path / 'hydra'}"], module="mmr1.evaluate", timeout=300)
    result = json.loads(out.read_text())
    assert result["accuracy"] == pytest.approx(reported) == pytest.approx(result["reported_accuracy"])
    assert [r["greedy"]["correct"] for r in result["records"]] == [c for _, _, c in GEOQA_CASES]
    assert result["benchmark"]["name"] == "geoqa_test" and result["benchmark"]["scorer"] == "r1v_math_verify"
    assert {b["model"] for b in result["baselines"]} == {"Qwen2.5-VL-3B-Instruct", "Qwen2-VL-7B-Instruct"}
    # The seed's reward falls back to the <answer> tag's text: "<answer>√{3}</answer>" is right by it, wrong by
    # R1-V's protocol; on every other case here the two agree.
    assert result["disagreements"] == [len(GEOQA_CASES) - 1]
    assert result["records"][-1]["greedy"]["rewards"]["external_r1v_acc"] == 1.0
    assert result["reward_accuracy"] == pytest.approx(result["accuracy"] + 1 / len(GEOQA_CASES))
    assert result["mean_length"] is None  # token counts of outputs made elsewhere are not known


def test_a_typo_in_the_benchmark_is_refused_before_any_model_loads(tmp_path):
    proc = run_cli(["eval.benchmark=superclevr_200", "eval.benchmark.scorer=r1v_cnt", f"hydra.run.dir={tmp_path}"],
                   module="mmr1.evaluate", timeout=120, check=False)
    assert proc.returncode != 0 and "eval.benchmark.scorer: unknown benchmark scorer 'r1v_cnt'" in proc.stderr
    assert "r1v_count" in proc.stderr


@pytest.mark.slow
def test_the_tiny_model_on_a_superclevr_shaped_test_file(tmp_path):
    """The whole path: the authors' prompt reaches the model (no system turn: the chat template's default), greedy
    decoding within the benchmark's token budget, each completion scored by R1-V's code, the sweep report's row."""
    from mmr1.sweep.table import write_report

    _test_file(tmp_path, n=4)
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    out = tmp_path / "eval.json"
    run_cli(["eval.benchmark=superclevr_200", f"eval.benchmark.path={tmp_path / 'test.jsonl'}",
             "eval.benchmark.size=4", "eval.benchmark.max_new_tokens=12", "eval.backend=hf", f"eval.output={out}",
             "model.warmstart.enabled=false",  # the base tiny model: the path is under test, not the answers
             f"hydra.run.dir={tmp_path / 'hydra'}"], module="mmr1.evaluate", timeout=400)
    result = json.loads(out.read_text())
    assert result["rows"] == 4 and result["max_new_tokens"] == 12
    records = result["records"]
    assert [r["ground_truth"] for r in records] == [3, 4, 5, 6]
    assert all(r["greedy"]["length"] <= 12 for r in records)
    assert [r["greedy"]["correct"] for r in records] == [superclevr_correct(r["greedy"]["text"], r["ground_truth"])
                                                         for r in records]
    assert result["accuracy"] == sum(r["greedy"]["correct"] for r in records) / 4
    assert result["benchmark"]["min_pixels"] == 3136 and result["baselines"][0]["before"] == 0.48

    # In a run directory, the sweep report shows the benchmark's score and the published numbers beside it.
    (run / "run_info.json").write_text(json.dumps({"status": "finished", "steps": 0}))
    (run / "eval.json").write_text(out.read_text())
    (row,) = write_report(run, plots=False)
    assert row["eval_acc"] == result["accuracy"] and row["eval_step"] == "superclevr_200"
    assert "Qwen2-VL-2B-Instruct 0.480 -> 0.825" in row["published"]
    assert "Qwen2-VL-2B-Instruct 0.480 -> 0.825" in (run / "report.md").read_text()


def test_each_benchmark_composes_checks_and_cites_its_protocol():
    """Every shipped benchmark composes under mmr1.evaluate, passes the start-up check (a registered scorer, a file
    to read) and carries where its protocol comes from and its published numbers, each with its source."""
    from hydra import compose, initialize_config_dir

    from mmr1.config import CONF_DIR
    from mmr1.config.typed import typed_config
    from mmr1.evaluate import group_overrides
    from mmr1.evaluation.protocol import check_benchmark

    names = sorted(p.stem for p in (REPO / "src/mmr1/conf/eval/benchmark").glob("*.yaml"))
    assert names == ["clevr_count", "geoqa_test", "none", "superclevr_200"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        for name in names:
            cfg = compose("evaluate", overrides=group_overrides([f"eval.benchmark={name}", "run_dir=/tmp/x"]))
            bench = typed_config(BenchmarkConfig, cfg.eval.benchmark, key="eval.benchmark")
            check_benchmark(bench)
            assert bench.name == name
            if name == "none":
                continue
            assert bench.protocol_source and bench.baselines
            assert all(b.source and b.model and b.before is not None and b.after is not None for b in bench.baselines)
            if bench.rows == Rows.jsonl:  # a pinned file: the commit in its URL is the revision it names
                assert bench.revision in bench.url and bench.size and bench.images and "{Question}" in bench.template


@pytest.mark.vllm
@pytest.mark.slow
def test_vllm_evaluates_as_transformers_does(tmp_path):
    """eval.backend=vllm (its CPU build here): one engine, the batch in one call, the same greedy completions,
    lengths and scores as transformers' generate on the same float32 weights and the benchmark's image limits."""
    _test_file(tmp_path, n=4)
    common = ["eval.benchmark=superclevr_200", f"eval.benchmark.path={tmp_path / 'test.jsonl'}",
              "eval.benchmark.size=4", "eval.benchmark.max_new_tokens=12", "model.warmstart.enabled=false",
              "rollout.enforce_eager=true", "rollout.kv_cache_gib=1"]
    results = {}
    for backend in ("vllm", "hf"):
        out = tmp_path / f"{backend}.json"
        run_cli([*common, f"eval.backend={backend}", f"eval.output={out}", f"hydra.run.dir={tmp_path / backend}"],
                module="mmr1.evaluate", timeout=600)
        results[backend] = json.loads(out.read_text())
    strip = [{k: r["greedy"][k] for k in ("text", "length", "truncated", "extracted", "correct")}
             for r in results["vllm"]["records"]]
    assert strip == [{k: r["greedy"][k] for k in ("text", "length", "truncated", "extracted", "correct")}
                     for r in results["hf"]["records"]]
    assert results["vllm"]["accuracy"] == results["hf"]["accuracy"]
