"""Tools as config (mmr1.rollout.tools): names resolved and described as TRL describes them, each call bounded in
worker processes (raising, hanging and oversized-image tools), Qwen's tool-call format on Qwen2.5-VL."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from PIL import Image

from mmr1.data.images import PixelLimits
from mmr1.rollout.tools.environment import environment_factory
from mmr1.rollout.tools.registry import ToolConfigError, resolve
from mmr1.rollout.tools.runner import ToolFailure, ToolRunner, ToolSettings

PLUGINS = Path(__file__).with_name("tool_plugins.py")


def entry(name: str) -> str:
    return f"{PLUGINS}:{name}"


@pytest.fixture(scope="module")
def runner():
    """One pool for the module (workers start once): crop and the misbehaving tools, a 2 s call deadline."""
    r = ToolRunner(ToolSettings([
        "crop", entry("hang"), entry("boom"), entry("big"), entry("two_images")],
        max_calls=8, timeout_s=2.0, round_timeout_s=30.0, limits=PixelLimits(3136, 7056)))
    yield r
    r.close()


def call(runner, name, row, **arguments):
    env = environment_factory(runner)()
    env.reset(**row)
    return getattr(env, name)(**arguments)


def test_entries_resolve_and_hide_what_mmr1_fills_in():
    crop = resolve("crop")
    params = crop.schema["function"]["parameters"]
    assert crop.injected == ("image", "seen_size") and list(params["properties"]) == ["bbox_2d"]
    assert "seen_size" not in str(crop.schema) and "PIL" not in str(crop.schema)
    assert resolve("mmr1.rollout.tools.crop:crop").name == "crop"
    assert resolve(entry("boom")).schema["function"]["parameters"]["required"] == ["reason"]
    with pytest.raises(ToolConfigError, match=r"entry 'zoom' \(built in: \['crop'\]\)"):
        resolve("zoom")
    with pytest.raises(ToolConfigError, match=r"'missing/tools.py:crop': plugin file 'missing/tools.py' not found"):
        resolve("missing/tools.py:crop")
    with pytest.raises(ToolConfigError, match="no_docs.*Google-style docstring"):
        resolve(entry("no_docs"))
    with pytest.raises(ToolConfigError, match="has no 'nothing'"):
        resolve(entry("nothing"))


def test_crop_zooms_into_the_source_in_the_models_coordinates(runner):
    source = Image.new("RGB", (252, 252), (255, 255, 255))
    source.paste((200, 0, 0), (84, 168, 168, 252))  # the tile at column 1, row 2
    seen = source.resize((84, 84))
    (part,) = call(runner, "crop", {"image": seen, "source_images": [_png(source)]}, bbox_2d=[28, 56, 56, 84])
    assert part["image"].size == (84, 84)  # the source's 84x84 tile, within the tool image bound (7056 pixels)
    assert part["image"].getextrema() == ((200, 200), (0, 0), (0, 0))
    # A box smaller than one image token is widened to 28 px, one past the edge clipped: a 28x28 crop, which the
    # tool image bounds then bring up to their 3136-pixel minimum, as Qwen's processor would.
    (part,) = call(runner, "crop", {"image": seen}, bbox_2d=[80, 80, 200, 81])
    assert part["image"].size == (56, 56)


def test_raising_hanging_and_oversized_tools_cost_an_error_not_the_step(runner):
    row = {"image": Image.new("RGB", (84, 84))}
    runner.take_stats()
    with pytest.raises(ToolFailure, match="boom: no"):
        call(runner, "boom", row, reason="no")
    started = time.monotonic()
    with pytest.raises(ToolFailure, match="no result within 2 s"):
        call(runner, "hang", row, seconds=1)
    assert time.monotonic() - started < 10  # the deadline, plus killing and replacing the worker
    parts = call(runner, "big", row, side=4000)
    assert parts[0]["image"].width * parts[0]["image"].height <= 7056 and parts[1] == {"type": "text", "text": "ok"}
    with pytest.raises(ToolFailure, match="more than 1 image"):
        call(runner, "two_images", row, n=2)
    with pytest.raises(ToolFailure, match="tool crop: missing a required argument: 'bbox_2d'"):
        call(runner, "crop", row, box=[0, 0, 1, 1])
    assert runner.take_stats() == {"calls": 4, "errors": 3, "timeouts": 1, "images_downscaled": 1}
    assert call(runner, "crop", row, bbox_2d=[0, 0, 28, 28])  # the pool recovered from the killed worker


def test_calls_past_max_tool_calls_and_the_round_budget_fail_at_once():
    row = {"image": Image.new("RGB", (84, 84))}
    r = ToolRunner(ToolSettings(["crop", entry("hang")], max_calls=1, timeout_s=2.0, round_timeout_s=3.0))
    try:
        env = environment_factory(r)()
        env.reset(**row)
        env.crop(bbox_2d=[0, 0, 28, 28])
        with pytest.raises(ToolFailure, match=r"at most 1 per answer \(rollout.max_tool_calls\)"):
            env.crop(bbox_2d=[0, 0, 28, 28])
        r.new_round()
        with pytest.raises(ToolFailure, match="no result within"):
            call(r, "hang", row, seconds=1)
        started = time.monotonic()
        with pytest.raises(ToolFailure, match=r"within 0\.[0-9]+ s"):  # what is left of the round's 3 s
            call(r, "hang", row, seconds=1)
        with pytest.raises(ToolFailure, match="tool budget .* is spent"):
            call(r, "hang", row, seconds=1)
        assert time.monotonic() - started < 6
        assert r.take_stats()["refused"] == 1
    finally:
        r.close()


def test_the_tool_format_renders_qwen2_5_vl_prompts_unchanged_and_passes_trls_checks(tiny_processor):
    import copy

    from trl.chat_template_utils import is_chat_template_prefix_preserving, parse_response, supports_tool_calling

    from mmr1.rollout.tools.template import enable_tools

    proc = copy.deepcopy(tiny_processor)
    prompt = [{"role": "system", "content": [{"type": "text", "text": "SYS"}]},
              {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many?"}]}]
    before = [proc.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in (prompt, prompt[1:])]
    assert not supports_tool_calling(proc)  # Qwen2.5-VL's own template renders no tools: TRL refuses it
    enable_tools(proc)
    after = [proc.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in (prompt, prompt[1:])]
    assert after == before
    assert supports_tool_calling(proc) and is_chat_template_prefix_preserving(proc)
    with_tools = proc.apply_chat_template(prompt, tools=[resolve("crop").schema], add_generation_prompt=True,
                                          tokenize=False)
    assert with_tools.startswith("<|im_start|>system\nSYS\n\n# Tools") and '"name": "crop"' in with_tools
    text = ('<think>zoom</think>\n<tool_call>\n{"name": "crop", "arguments": {"bbox_2d": [0, 28, 28, 56]}}\n'
            '</tool_call><|im_end|>')
    parsed = parse_response(proc.tokenizer, proc.tokenizer(text)["input_ids"], prefix=[])
    assert parsed["content"] == "<think>zoom</think>"  # the reasoning stays where the format reward reads it
    assert parsed["tool_calls"][0]["function"] == {"name": "crop", "arguments": {"bbox_2d": [0, 28, 28, 56]}}


def _png(img):
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def short_rounds():
    """A runner whose round budget (1.5 s) one hung call spends."""
    r = ToolRunner(ToolSettings(["crop", entry("hang")], max_calls=2, timeout_s=1.0, round_timeout_s=1.5,
                                limits=PixelLimits(3136, 7056)))
    with pytest.raises(ToolFailure):
        call(r, "hang", {"image": Image.new("RGB", (84, 84))}, seconds=1)
    yield r
    r.close()


def test_generate_with_tools_runs_the_call_and_keeps_the_completion_budget(short_rounds, tiny_processor):
    """The tool loop outside GRPO (the warm-start's gate, mmr1.evaluate), with a policy whose turns are scripted: the
    call runs, its image joins the next turn's prompt, the answer turn is what is scored, and every turn and tool
    response counts against the budget (a turn with no room left is empty, not a crash). Each call of it is a round
    with its own tool budget: an earlier round's spent budget does not fail its calls."""
    runner = short_rounds
    import copy

    import torch
    from transformers import AutoModelForImageTextToText

    from mmr1.data import build_datasets
    from mmr1.models.tiny import tiny_qwen2_5_vl_path
    from mmr1.rollout.tools.template import enable_tools
    from mmr1.rollout.tools.transcripts import generate_with_tools

    proc = enable_tools(copy.deepcopy(tiny_processor))
    model = AutoModelForImageTextToText.from_pretrained(str(tiny_qwen2_5_vl_path()))
    bundle = build_datasets({"name": "z", "generator": "synthetic_zoom_count", "num_samples": 2, "eval_size": 0,
                             "keep_source_images": True}, min_pixels=3136, max_pixels=7056, seed=0)
    rows = [bundle.train[i] for i in range(2)]
    tok, eos = proc.tokenizer, proc.tokenizer.convert_tokens_to_ids("<|im_end|>")
    turns = ['<think>a</think>\n<tool_call>\n{"name": "crop", "arguments": {"bbox_2d": [28, 56, 56, 84]}}\n'
             '</tool_call>', "<think>b</think><answer>2</answer>"]
    prompts = []

    def scripted(**inputs):
        prompts.append(inputs)
        ids = inputs["input_ids"]
        turn = tok(turns[len(prompts) - 1], add_special_tokens=False)["input_ids"] + [eos]
        return torch.cat([ids, torch.tensor([turn] * ids.shape[0])], 1)

    model.generate = scripted
    (a,), (b,) = generate_with_tools(model, proc, runner, rows, n=1, do_sample=False, max_new_tokens=200)
    assert a["text"] == "<think>b</think><answer>2</answer>" and a["tool_calls"] == 1 and not a["truncated"]
    assert [t["role"] for t in a["turns"]] == ["assistant", "tool", "assistant"]
    assert a["turns"][1]["content"] == "<image 84x84>"
    assert prompts[1]["image_grid_thw"].shape[0] == 4  # per row: its scene and the crop
    # A budget the call and the tool's response fill exactly: the answer turn gets no room (an empty turn).
    answer = len(tok(turns[1], add_special_tokens=False)["input_ids"]) + 1
    budget = a["length"] - answer
    prompts.clear()
    (c,), _ = generate_with_tools(model, proc, runner, rows, n=1, do_sample=False, max_new_tokens=budget)
    assert c["length"] == budget and c["truncated"] and c["text"] == "" and c["tool_calls"] == 1
