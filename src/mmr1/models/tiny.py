"""The embedded default model: a tiny Qwen2.5-VL built locally, with no download.

Real classes end to end (``Qwen2_5_VLForConditionalGeneration``, ``Qwen2_5_VLProcessor``,
``Qwen2VLImageProcessor``, a video processor), so the code path that trains it is the one that trains
Qwen/Qwen2.5-VL-3B-Instruct. Only the sizes and the tokenizer differ: the tokenizer is a byte-level
BPE trained here on the project's own prompt text, carrying Qwen's special tokens and chat template.

The build is deterministic (fixed seed, fixed corpus) and cached under ``cache_root()/<name>-<hash>``
where the hash covers the recipe below: change the recipe and the cache rebuilds itself.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Bump when the build changes in a way the recipe dict below does not capture.
RECIPE_VERSION = 3

# Qwen2.5-VL's special tokens, in Qwen's order. Ids are looked up after registration, never assumed
# (the order the tokenizer registers them decides the ids).
QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]
# The R1 tags as single (non-special) tokens: decoding keeps them, and a tiny model learns the
# format in a handful of steps instead of spelling tags byte by byte.
R1_TAG_TOKENS = ["<think>", "</think>", "<answer>", "</answer>"]
# Qwen2.5's tool-call delimiters, added tokens of the real tokenizer (Qwen2.5-VL's tokenizer_config.json, ids 151657
# and 151658); the tool-enabled recipe (RECIPE_TOOLS) carries them, and learns merges for Qwen's tool format from
# TOOL_CORPUS (the fixed text of Qwen2.5's tool template and a crop call), so a call costs a handful of tokens.
TOOL_TOKENS = ["<tool_call>", "</tool_call>"]
TOOL_CORPUS = [
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function "
    "signatures within <tools></tools> XML tags:\n<tools>\n</tools>\n\nFor each function call, return a json object "
    "with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": "
    "<function-name>, \"arguments\": <args-json-object>}\n</tool_call>",
    '{"type": "function", "function": {"name": "crop", "description": "Zoom in on a region of the image: returns that '
    'region at full resolution.", "parameters": {"type": "object", "properties": {"bbox_2d": {"type": "array", '
    '"items": {"type": "integer"}, "description": "The region as [x1, y1, x2, y2], in pixels of the image as you see '
    'it."}}, "required": ["bbox_2d"]}, "return": {"type": "array", "items": {"type": "object", '
    '"additionalProperties": {}}}}}',
    "<|im_start|>user\n<tool_response>\n</tool_response><|im_end|>\n<|im_start|>assistant\n",
    *[f'\n{{"name": "crop", "arguments": {{"bbox_2d": [{x}, {y}, {x + 28}, {y + 28}]}}}}\n'
      for x in range(0, 84, 28) for y in range(0, 84, 28)],
]

# Qwen2.5-VL-Instruct's chat template (an image part renders as vision_start, image_pad, vision_end).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# ~1M parameters is plenty for the pipeline (and learns the counting scenes in minutes), and an 84x84 image
# costs 9 image tokens (patch 14, merge 2), one per 28x28 cell of the synthetic scenes.
TEXT: dict[str, Any] = {"hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
                        "num_key_value_heads": 2, "intermediate_size": 256, "max_position_embeddings": 2048,
                        "rope_theta": 10000.0, "mrope_section": [4, 6, 6]}
RECIPE: dict[str, Any] = {
    "version": RECIPE_VERSION,
    "vocab_size": 1024,
    "text": TEXT,
    "vision": {"depth": 2, "hidden_size": 64, "num_heads": 4, "intermediate_size": 128,
               "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 56},
    "seed": 0,
}
# The embedded model with Qwen's tool-call tokens (model.tool_tokens=true): its own cache entry; RECIPE is unchanged.
RECIPE_TOOLS: dict[str, Any] = {**RECIPE, "tools": True}


def cache_root() -> Path:
    """Where built models live: ``$MMR1_CACHE`` or ``~/.cache/mmr1``."""
    return Path(os.environ.get("MMR1_CACHE", Path.home() / ".cache" / "mmr1"))


@contextmanager
def build_lock(entry: Path) -> Iterator[None]:
    """One builder per cache entry across processes (parallel sweep jobs, ranks, test workers): the others wait here,
    then find the entry built. An flock: released when its holder exits, even killed."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    with open(entry.parent / f".{entry.name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def recipe_hash(recipe: dict) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def _corpus(tools: bool = False) -> list[str]:
    """The text the tokenizer learns its merges from: the project's own prompts and answers."""
    from importlib.resources import files

    system = files("mmr1.data.prompts").joinpath("r1v_system.txt").read_text()
    lines = [system,
             "How many items are there in the image? Output the thinking process in <think> </think> and\n"
             " final answer (number) in <answer> </answer> tags.",
             "I count the objects. red blue green yellow purple cyan gray brown circle square cube "
             "sphere cylinder triangle object objects item items left right big small metal rubber",
             "In the figure, triangle ABC, circle O, angle ABC = 40 degrees, find the measure of angle "
             "ACB. AB = 5, BC = 12, the length of AC is. radius diameter chord tangent perpendicular "
             "parallel area perimeter \\frac{1}{2} \\sqrt{3} \\pi ° + - * / = ^ ( ) { } [ ] , . : ;",
             "Based on the chart, which category has the highest value? What is the value of the bar? "
             "pie chart bar chart percentage share total sum difference largest smallest label value",
             "The answer is A B C D E F. Therefore the answer is"]
    lines += [f"<answer> {i} </answer> <answer>{i}</answer> {i} {i}.5 {i}0 {i}% {i}°" for i in range(100)]
    return lines + (TOOL_CORPUS if tools else [])


def _build_tokenizer(vocab_size: int, tools: bool = False):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(QWEN_SPECIAL_TOKENS) - len(R1_TAG_TOKENS) - (len(TOOL_TOKENS) if tools else 0),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodes: no unknown tokens
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(tools), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        additional_special_tokens=QWEN_SPECIAL_TOKENS, model_max_length=TEXT["max_position_embeddings"],
    )
    fast.add_tokens(R1_TAG_TOKENS + (TOOL_TOKENS if tools else []))
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _build_model(tok, recipe: dict):
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    t, v = recipe["text"], recipe["vision"]
    ids = {name: tok.convert_tokens_to_ids(token) for name, token in [
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"),
        ("eos_token_id", "<|im_end|>"), ("pad_token_id", "<|endoftext|>"), ("bos_token_id", "<|endoftext|>")]}
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tok), "hidden_size": t["hidden_size"], "num_hidden_layers": t["num_hidden_layers"],
            "num_attention_heads": t["num_attention_heads"], "num_key_value_heads": t["num_key_value_heads"],
            "intermediate_size": t["intermediate_size"], "max_position_embeddings": t["max_position_embeddings"],
            "rope_parameters": {"rope_type": "default", "rope_theta": t["rope_theta"],
                                "mrope_section": t["mrope_section"]},
            "tie_word_embeddings": True, "eos_token_id": ids["eos_token_id"], "pad_token_id": ids["pad_token_id"],
            "bos_token_id": ids["bos_token_id"],
        },
        vision_config={
            "depth": v["depth"], "hidden_size": v["hidden_size"], "num_heads": v["num_heads"],
            "intermediate_size": v["intermediate_size"], "patch_size": v["patch_size"],
            "spatial_merge_size": v["spatial_merge_size"], "temporal_patch_size": v["temporal_patch_size"],
            "window_size": v["window_size"], "out_hidden_size": t["hidden_size"],
            # The default (7, 15, 23, 31) indexes blocks a 2-block tower does not have.
            "fullatt_block_indexes": [v["depth"] - 1],
        },
        tie_word_embeddings=True,
        **ids,
    )
    torch.manual_seed(recipe["seed"])
    model = Qwen2_5_VLForConditionalGeneration(config)
    # TRL reads the stop token from generation_config: end of turn stops, <|endoftext|> pads.
    model.generation_config = GenerationConfig(
        eos_token_id=ids["eos_token_id"], pad_token_id=ids["pad_token_id"], bos_token_id=ids["bos_token_id"],
        do_sample=True, temperature=1.0,
    )
    return model


def _build_processor(tok, recipe: dict):
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor

    try:  # the fast video processor needs torchvision; that is a core dependency, this is belt and braces
        from transformers import Qwen2VLVideoProcessor as VideoProcessor
    except ImportError as err:  # pragma: no cover
        raise ImportError("Qwen2.5-VL's processor needs torchvision (pip install torchvision)") from err
    v = recipe["vision"]
    kw = {"patch_size": v["patch_size"], "merge_size": v["spatial_merge_size"],
          "temporal_patch_size": v["temporal_patch_size"]}
    return Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(**kw), tokenizer=tok,
        video_processor=VideoProcessor(**kw), chat_template=CHAT_TEMPLATE,
    )


def build_tiny_qwen2_5_vl(out_dir: Path, recipe: dict = RECIPE) -> Path:
    """Build the tiny model + processor into ``out_dir`` (written to a temp dir, then renamed)."""
    tok = _build_tokenizer(recipe["vocab_size"], tools=bool(recipe.get("tools")))
    model = _build_model(tok, recipe)
    processor = _build_processor(tok, recipe)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}-"))
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    (tmp / "mmr1_recipe.json").write_text(json.dumps(recipe, indent=2, sort_keys=True))
    try:
        os.replace(tmp, out_dir)  # atomic: a concurrent builder either wins or finds it done
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def tiny_qwen2_5_vl_dir(recipe: dict = RECIPE) -> Path:
    """Where the tiny model of ``recipe`` is cached, built or not (a new recipe gets a new directory)."""
    return cache_root() / f"tiny_qwen2_5_vl-{recipe_hash(recipe)}"


def tiny_qwen2_5_vl_path(recipe: dict = RECIPE) -> Path:
    """Return the cached tiny model's directory, building it first when absent or outdated."""
    path = tiny_qwen2_5_vl_dir(recipe)
    if not (path / "mmr1_recipe.json").exists():
        with build_lock(path):
            if not (path / "mmr1_recipe.json").exists():  # another process may have built it while we waited
                log.info("Building the embedded tiny Qwen2.5-VL into %s", path)
                build_tiny_qwen2_5_vl(path, recipe)
    return path
