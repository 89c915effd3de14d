"""Adversarial completions built from a row's gold solution, and what each reward function pays for them.

A reward that pays a wrong or degenerate completion is a reward the policy will learn to hack (Visual-RFT#176:
an empty ``<answer></answer>`` scored 1.0; Visual-RFT#79: "A or B or C" scored 1.0; the tiny model here filled
its length cap with ``<answer>3</answer>2</answer>...``, which the seed's format regex accepts). The probes:

- ``wrong`` (flagged when any reward pays more than 0): an empty answer, the answer only inside ``<think>``,
  all the options, the answer repeated to the length cap, the gold answer followed by junk, the bare answer
  without tags, a completion well over the length cap;
- ``right`` (never flagged; a 0 is shown as missed): the gold answer well formed (the control) and the gold
  answer in another form (no unit, LaTeX, words), where the accuracy reward may miss a right answer.

Scoring goes through the very callables training uses (``mmr1.rewards.build_reward_funcs``: the sandbox, the
timeouts, ``reward.failure_reward``), one call per reward function for all rows and probes, with the row's
columns as TRL passes them. ``mmr1.rewards.audit`` is the command line and the warn-only check at training start.

>>> [p.name for p in build_probes("<answer> 70° </answer>", max_completion_length=16)][:3]
['gold', 'empty_answer', 'answer_in_think']
>>> next(p for p in build_probes("<answer>3</answer>", 16) if p.name == "all_options").text
'<think>I look at the image and work it out.</think><answer>2 or 3 or 4 or 5</answer>'
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mmr1.rewards.text import completion_text

REASONING = "I look at the image and work it out."  # holds no answer, so only the probe's answer part counts
# The probes are strings, not tokens: a length cap of N tokens is taken as about 4 N characters (English
# BPE text; Qwen2.5's tokenizer averages 3.5-4.5 on such text). The rewards here do not count length anyway.
CHARS_PER_TOKEN = 4
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
# A plain number, optionally with a short unit that holds no digit: "70°", "12 cm", "7.5%".
_SIMPLE = re.compile(r"\s*(-?\d+(?:\.\d+)?)\s*([^\d\s][^\d]{0,9})?\s*")
_UNIT_WORDS = {"°": " degrees", "%": " percent"}
_LETTERS = "ABCDE"
_WORDS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
          "sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


@dataclass(frozen=True)
class Probe:
    name: str
    kind: str  # "wrong": must earn 0; "right": should earn > 0
    text: Any  # a completion's text, or a tool-using completion's turns (messages)
    why: str


def gold_answer(solution: Any) -> str:
    """The gold answer: the first ``<answer>...</answer>`` of the solution, stripped, else the whole text.

    >>> gold_answer("<think>2 + 1</think>\\n\\n<answer>3</answer>"), gold_answer(" 70° ")
    ('3', '70°')
    """
    text = str(solution)
    match = _ANSWER.search(text)
    return (match.group(1) if match else text).strip()


def _simple_number(gold: str) -> tuple[str, str] | None:
    """(number, unit) when ``gold`` is a plain number with at most a short unit ("70°", "12 cm", "7.5%")."""
    match = _SIMPLE.fullmatch(gold)
    return (match.group(1), (match.group(2) or "").strip()) if match else None


def _shift(gold: str, by: int) -> str:
    """A different answer of the same form: the number moved by ``by`` (unit kept), the choice letter moved,
    else "0" (or "1" for a gold "0"): any gold that is not a plain number or letter is not 0."""
    simple = _simple_number(gold)
    if simple:
        raw, unit = simple
        number = float(raw) + by
        return (str(int(number)) if "." not in raw else f"{number:g}") + gold[len(raw):]
    if len(gold) == 1 and gold.upper() in _LETTERS:
        return _LETTERS[(_LETTERS.index(gold.upper()) + by) % len(_LETTERS)]
    return gold if not by else "1" if gold == "0" else "0"


def _words(n: int) -> str | None:
    if not 0 <= n < 100:
        return None
    if n < 20:
        return _WORDS[n]
    return _TENS[n // 10] + ("" if n % 10 == 0 else "-" + _WORDS[n % 10])


def _other_forms(gold: str) -> list[Probe]:
    simple = _simple_number(gold)
    if not simple:
        latex = f"$\\boxed{{{gold}}}$" if "\\" in gold else f"$\\text{{{gold}}}$"
        return [Probe("gold_latex", "right", _well_formed(latex), "the gold answer in LaTeX")]
    raw, unit = simple
    forms = []
    if unit:
        forms.append(Probe("gold_no_unit", "right", _well_formed(raw), f"the gold answer without {unit!r}"))
    latex = raw + {"°": "^\\circ", "%": "\\%", "": ""}.get(unit, f"\\text{{ {unit}}}")
    forms.append(Probe("gold_latex", "right", _well_formed(f"$\\boxed{{{latex}}}$"), "the gold answer in LaTeX"))
    words = _words(int(float(raw))) if float(raw).is_integer() else None
    spoken = _UNIT_WORDS.get(unit, f" {unit}" if unit else "")
    if words is not None:
        forms.append(Probe("gold_words", "right", _well_formed(words + spoken), "the gold answer in words"))
    return forms


def _well_formed(answer: str, think: str = REASONING) -> str:
    return f"<think>{think}</think><answer>{answer}</answer>"


def build_probes(solution: Any, max_completion_length: int) -> list[Probe]:
    """Every probe for one row's gold ``solution``; ``max_completion_length`` (tokens) sizes the long ones."""
    gold = gold_answer(solution)
    wrong = _shift(gold, 1)
    if len(gold) == 1 and gold.upper() in _LETTERS:
        options = " or ".join(_LETTERS[: max(4, _LETTERS.index(gold.upper()) + 1)])
    elif _simple_number(gold):
        options = " or ".join(_shift(gold, k) for k in (-1, 0, 1, 2))
    else:
        options = f"{wrong} or {gold}"
    cap_chars = CHARS_PER_TOKEN * max(1, max_completion_length)
    repeated, units = f"<think>{REASONING}</think><answer>{gold}</answer>", [f"{wrong}</answer>", f"{gold}</answer>"]
    for k in range(10**6):  # at least two repeats, then on to the cap
        if k >= 2 and len(repeated) >= cap_chars:
            break
        repeated += units[k % 2]
    filler = " ".join(["Let me look again."] * (2 * cap_chars // 19 + 1))  # about twice the cap
    return [
        Probe("gold", "right", _well_formed(gold), "control: the gold answer, well formed"),
        Probe("empty_answer", "wrong", _well_formed(""), "well formed, empty answer (Visual-RFT#176)"),
        Probe("answer_in_think", "wrong", f"<think>The answer is {gold}.</think>",
              "the answer only inside <think>, no <answer>"),
        Probe("all_options", "wrong", _well_formed(options), "every option at once (Visual-RFT#79)"),
        Probe("repeated_to_cap", "wrong", repeated,
              "the answer then '</answer>' repeated to the length cap (the tiny model's hack)"),
        Probe("gold_then_junk", "wrong", _well_formed(gold) + f" Wait, no: {wrong}. #@!",
              "the gold answer followed by junk"),
        Probe("no_tags", "wrong", gold, "the bare answer, no <think>/<answer> tags"),
        Probe("over_long", "wrong", _well_formed(gold, think=filler),
              f"well formed but about twice the {max_completion_length}-token length cap"),
        *_other_forms(gold),
    ]


def tool_probes(solution: Any) -> list[Probe]:
    """Tool-using completions (``rollout.tools``): the model's turns with a tool's result between them, where the
    answer that counts is the last turn's (mmr1.rewards.text.completion_text).

    >>> [p.name for p in tool_probes("<answer>3</answer>")]
    ['tool_then_gold', 'gold_only_before_tool', 'tool_then_nothing']
    """
    gold = gold_answer(solution)
    crop = {"name": "crop", "arguments": {"bbox_2d": [0, 0, 28, 28]}}
    call = {"role": "assistant", "content": f"<think>{REASONING}</think>",
            "tool_calls": [{"type": "function", "function": crop}]}
    result = {"role": "tool", "name": "crop", "content": "<image>"}
    early = {**call, "content": _well_formed(gold)}
    return [
        Probe("tool_then_gold", "right", [call, result, {"role": "assistant", "content": _well_formed(gold)}],
              "control: a tool call, its result, then the gold answer"),
        Probe("gold_only_before_tool", "wrong", [early, result, {"role": "assistant", "content": _well_formed(
            _shift(gold, 1))}], "the gold answer in the turn that calls the tool, a wrong one at the end"),
        Probe("tool_then_nothing", "wrong", [early, result, {"role": "assistant", "content": ""}],
              "the gold answer before the tool's result, an empty last turn"),
    ]


def _as_completion(text: Any, prompt: Any) -> Any:
    # TRL passes conversational completions as one assistant message (several turns with tools), plain ones as
    # strings.
    if isinstance(text, list):
        return text
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], dict):
        return [{"role": "assistant", "content": text}]
    return text


def score_probes(
    reward_funcs: Sequence[Callable[..., list]], rows: Sequence[dict], max_completion_length: int,
    tools: bool = False,
) -> list[dict]:
    """One record per (row, probe, reward function): ``probe``, ``kind``, ``reward``, ``value``, ``flagged``, ...

    ``rows`` are dataset rows as the trainer sees them (``prompt``, ``solution`` and the other columns);
    each reward function is called once, with every probe of every row, and the rows' columns repeated as
    TRL repeats them for each completion. ``tools``: the tool-using probes too (``tool_probes``).
    """
    if not rows:
        raise ValueError("the reward audit needs at least one dataset row")
    items: list[tuple[int, Probe]] = []
    for i, row in enumerate(rows):
        if "solution" not in row:
            raise KeyError(f"reward audit: dataset row {row.get('source_row', i)} has no 'solution' column "
                           f"(columns: {sorted(row)})")
        items += [(i, p) for p in build_probes(row["solution"], max_completion_length)]
        items += [(i, p) for p in (tool_probes(row["solution"]) if tools else [])]
    columns = sorted({k for row in rows for k in row if k != "prompt"})
    kwargs = {k: [rows[i].get(k) for i, _ in items] for k in columns}
    prompts = [rows[i].get("prompt") for i, _ in items]
    completions = [_as_completion(p.text, rows[i].get("prompt")) for i, p in items]
    records = []
    for fn in reward_funcs:
        name = getattr(fn, "__name__", repr(fn))
        values = list(fn(prompts=prompts, completions=completions, **kwargs))
        if len(values) != len(items):
            raise ValueError(f"reward {name!r} returned {len(values)} values for {len(items)} probes")
        for (i, probe), completion, value in zip(items, completions, values, strict=True):
            paid = value is not None and float(value) > 0
            records.append({
                "row": i, "source_row": rows[i].get("source_row", i), "probe": probe.name, "kind": probe.kind,
                "reward": name, "value": None if value is None else float(value),
                "flagged": probe.kind == "wrong" and paid, "missed": probe.kind == "right" and not paid,
                "why": probe.why, "gold": gold_answer(rows[i]["solution"]),
                "completion": _clip(completion_text(completion)),
            })
    return records


def _clip(text: Any, limit: int = 160) -> str:
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit]}... [{len(text) - limit} more chars]"


def flagged(records: Sequence[dict]) -> list[dict]:
    """One entry per flagged (probe, reward): the largest value paid and on how many rows.

    >>> flagged([{"probe": "empty_answer", "reward": "format", "value": 1.0, "flagged": True}] * 2)
    [{'probe': 'empty_answer', 'reward': 'format', 'value': 1.0, 'rows': 2}]
    """
    out: dict[tuple[str, str], dict] = {}
    for r in records:
        if r["flagged"]:
            entry = out.setdefault((r["probe"], r["reward"]),
                                   {"probe": r["probe"], "reward": r["reward"], "value": r["value"], "rows": 0})
            entry["value"] = max(entry["value"], r["value"])
            entry["rows"] += 1
    return list(out.values())


def table(records: Sequence[dict]) -> str:
    """Probe -> mean reward per function; ``!`` = a wrong completion paid (flagged), ``?`` = a right one missed."""
    probes = list(dict.fromkeys(r["probe"] for r in records))
    funcs = list(dict.fromkeys(r["reward"] for r in records))
    cells: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        cells.setdefault((r["probe"], r["reward"]), []).append(r)
    why = {r["probe"]: r["why"] for r in records}

    def cell(rs: list[dict]) -> str:
        values = [r["value"] for r in rs if r["value"] is not None]
        mean = f"{sum(values) / len(values):.2f}" if values else "None"
        mark = " !" if any(r["flagged"] for r in rs) else " ?" if any(r["missed"] for r in rs) else "  "
        return mean + mark

    rows = [["probe", *funcs, "what it is"]]
    rows += [[p, *(cell(cells.get((p, f), [])) for f in funcs), why[p]] for p in probes]
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]) - 1)]
    lines = ["  ".join([*(c.ljust(w) for c, w in zip(r, widths)), r[-1]]).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
