"""The reward audit: probes from gold solutions, scored by each reward through the sandbox."""

from __future__ import annotations

import json

import pytest

from mmr1.rewards import build_reward_funcs, register, shutdown
from mmr1.rewards.audit import AUDIT_FILE, audit_at_start, run
from mmr1.rewards.probes import CHARS_PER_TOKEN, build_probes, flagged, gold_answer, score_probes
from testkit import EXPERIMENTS, compose_cfg, run_cli

CONVERSATION = [{"role": "user", "content": [{"type": "text", "text": "How many?"}]}]


def _rows(*solutions: str) -> list[dict]:
    return [{"prompt": CONVERSATION, "solution": s, "source_row": i} for i, s in enumerate(solutions)]


@register("audit_test_pays_all", isolate=False, columns=(), pure=True)
def audit_test_pays_all(completions, **kwargs):
    return [1.0] * len(completions)


@register("audit_test_pays_none", isolate=False, columns=(), pure=True)
def audit_test_pays_none(completions, **kwargs):
    return [0.0] * len(completions)


@register("audit_test_pays_half_to_no_tags", isolate=False, columns=(), pure=True)
def audit_test_pays_half_to_no_tags(completions, **kwargs):
    """Partial credit for a bare answer: 0.5 to a completion without tags, 0 otherwise."""
    return [0.0 if "<" in (c if isinstance(c, str) else c[0]["content"]) else 0.5 for c in completions]


@pytest.mark.parametrize("solution, gold, forms", [
    ("<answer> 70° </answer>", "70°", {"gold_no_unit", "gold_latex", "gold_words"}),
    ("<think>Apples 9, pears 3.</think>\n\n<answer>apples</answer>", "apples", {"gold_latex"}),
    ("<answer> 3 </answer>", "3", {"gold_latex", "gold_words"}),
])
def test_probes_are_built_from_the_gold_answer(solution, gold, forms):
    cap = 32
    probes = {p.name: p for p in build_probes(solution, max_completion_length=cap)}
    assert gold_answer(solution) == gold
    assert {"empty_answer", "answer_in_think", "all_options", "repeated_to_cap", "gold_then_junk", "no_tags",
            "over_long"} <= {n for n, p in probes.items() if p.kind == "wrong"}
    assert {n for n, p in probes.items() if p.kind == "right"} == {"gold", *forms}
    assert probes["empty_answer"].text.endswith("<answer></answer>")
    assert gold in probes["answer_in_think"].text and "<answer>" not in probes["answer_in_think"].text
    assert probes["all_options"].text.count(" or ") >= 1 and gold in probes["all_options"].text
    assert probes["no_tags"].text == gold
    repeated = probes["repeated_to_cap"].text
    assert len(repeated) >= CHARS_PER_TOKEN * cap and repeated.count("</answer>") >= 3
    assert len(probes["over_long"].text) >= 2 * CHARS_PER_TOKEN * cap
    assert probes["gold_then_junk"].text.startswith(probes["gold"].text) and len(probes["gold_then_junk"].text) > len(
        probes["gold"].text)


def test_the_seed_rewards_through_the_sandbox_pay_the_empty_answer_under_format_only():
    funcs = build_reward_funcs({})  # the seed's external_r1v_acc (math-verify in workers) + format
    try:
        records = score_probes(funcs, _rows("<answer> 70° </answer>", "<answer> 3 </answer>"), 64, tools=True)
    finally:
        shutdown()
    by = {(r["row"], r["probe"], r["reward"]): r for r in records}
    for row in (0, 1):
        assert by[row, "empty_answer", "format"]["value"] == 1.0 and by[row, "empty_answer", "format"]["flagged"]
        assert by[row, "empty_answer", "external_r1v_acc"]["value"] == 0.0
        assert not by[row, "empty_answer", "external_r1v_acc"]["flagged"]
        for fn in ("format", "external_r1v_acc"):  # the control: paid, never flagged
            assert by[row, "gold", fn]["value"] == 1.0 and not by[row, "gold", fn]["flagged"]
    assert not any(r["flagged"] for r in records if r["kind"] == "right")
    assert {"probe": "empty_answer", "reward": "format", "value": 1.0, "rows": 2} in flagged(records)
    # Tool-using completions (rollout.tools): the last turn is the answer. A gold answer given before the tool's
    # result and not after earns no accuracy; format pays the well-formed wrong last turn, as it pays any.
    for row in (0, 1):
        assert by[row, "tool_then_gold", "external_r1v_acc"]["value"] == 1.0
        assert by[row, "tool_then_gold", "format"]["value"] == 1.0
        assert by[row, "gold_only_before_tool", "external_r1v_acc"]["value"] == 0.0
        assert by[row, "gold_only_before_tool", "format"]["flagged"]
        assert by[row, "tool_then_nothing", "external_r1v_acc"]["value"] == 0.0
        assert by[row, "tool_then_nothing", "format"]["value"] == 0.0


def test_flags_follow_what_a_reward_pays():
    rows = _rows("<answer> 3 </answer>")
    from mmr1.rewards import get

    records = score_probes([get("audit_test_pays_all"), get("audit_test_pays_none")], rows, 16)
    paid = {r["probe"] for r in records if r["reward"] == "audit_test_pays_all" and r["flagged"]}
    assert paid == {r["probe"] for r in records if r["kind"] == "wrong"}
    assert not any(r["flagged"] for r in records if r["reward"] == "audit_test_pays_none")
    assert all(r["missed"] for r in records if r["reward"] == "audit_test_pays_none" and r["kind"] == "right")
    # Any pay counts, not only 1: partial credit (0.5) for the wrong bare answer is flagged, with its value.
    half = score_probes([get("audit_test_pays_half_to_no_tags")], rows, 16)
    assert [(r["probe"], r["value"]) for r in half if r["flagged"]] == [("no_tags", 0.5)]
    assert {"probe": "no_tags", "reward": "audit_test_pays_half_to_no_tags", "value": 0.5, "rows": 1} in flagged(half)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_audit_of_each_seed_experiment_offline_flags_the_empty_answer_under_format(experiment, tmp_path, capsys):
    cfg = compose_cfg([f"+experiment={experiment}", "audit.stand_in=true", "audit.rows=2"], run_dir=tmp_path)
    assert run(cfg) == 0  # not strict: the findings are reported, the exit status is 0
    records = json.loads((tmp_path / AUDIT_FILE).read_text())
    assert {r["row"] for r in records} == {0, 1}
    assert {r["reward"] for r in records} == set(cfg.reward.funcs)
    assert all({"probe", "reward", "value", "flagged"} <= set(r) for r in records)
    assert any(r["probe"] == "empty_answer" and r["reward"] == "format" and r["flagged"] for r in records)
    out = capsys.readouterr().out
    assert "empty_answer under format" in out and "offline stand-in" not in out  # asked for, not a fallback


def test_strict_exits_nonzero_when_flagged_and_zero_when_clean(tmp_path):
    clean = compose_cfg(["reward.funcs=[audit_test_pays_none]", "audit.strict=true"], run_dir=tmp_path / "clean")
    assert run(clean) == 0
    assert not any(r["flagged"] for r in json.loads((tmp_path / "clean" / AUDIT_FILE).read_text()))
    # The command itself, as CI runs it: a hub dataset offline falls back to its stand-in, strict exits 1.
    out = tmp_path / "strict"
    proc = run_cli(["+experiment=geoqa", "audit.strict=true", "audit.rows=1", f"hydra.run.dir={out}"],
                   module="mmr1.rewards.audit", env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")},
                   check=False, timeout=300)  # an empty HF cache: no GEOQA copy of the user's can be found
    # Exit 1 is also what a crash gives: the finding must be reported, and nothing may have raised.
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "offline stand-in synthetic_geoqa" in proc.stdout and "empty_answer under format" in proc.stdout
    assert any(r["probe"] == "empty_answer" and r["reward"] == "format" and r["flagged"]
               for r in json.loads((out / AUDIT_FILE).read_text()))


def test_audit_at_start_never_fails_a_run(tmp_path, caplog):
    cfg = compose_cfg([], run_dir=tmp_path)

    def broken(completions, **kwargs):
        raise RuntimeError("reward exploded")

    assert audit_at_start(cfg, [broken], _rows("<answer> 3 </answer>"), tmp_path) == {
        "error": "RuntimeError: reward exploded"}
    assert "reward audit failed (the run goes on)" in caplog.text
    from mmr1.rewards import get

    # A reward blind to the gold answer is named: it cannot tell right from wrong.
    blind = audit_at_start(cfg, [get("audit_test_pays_none")], _rows("<answer> 3 </answer>"), tmp_path)
    assert blind["flagged"] == [] and blind["control_missed"] == ["audit_test_pays_none"]
    assert "paid 0 for the gold answer itself" in caplog.text
    off = compose_cfg(["audit.at_start=false"], run_dir=tmp_path)
    assert audit_at_start(off, [broken], _rows("<answer> 3 </answer>"), tmp_path) is None


def test_audit_rows_must_be_positive():
    from mmr1.rewards.config import RewardConfigError, as_audit_config

    with pytest.raises(RewardConfigError, match=r"audit\.rows=0"):
        as_audit_config({"rows": 0})
