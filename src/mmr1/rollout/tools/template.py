"""The tool-call format: Qwen's (Hermes-style ``<tool_call>{"name": ..., "arguments": ...}</tool_call>``, tools listed
in the system turn, results in ``<tool_response>`` inside a user turn), rendered for Qwen2.5-VL.

Qwen2.5-VL-Instruct's chat template renders no tools, so TRL 1.16 refuses it for tool training
(``supports_tool_calling``). ``qwen2_5_vl_tools.jinja`` is TRL's Qwen3-VL template (trl/chat_templates/qwen3_vl.jinja:
Qwen2.5's tool format, with images inside tool responses) plus Qwen2.5-VL's default system turn, so a conversation
without tools renders exactly as Qwen2.5-VL's own template does (tests/test_tools.py checks both).

The response parser is TRL's Qwen3 one (trl/chat_template_utils.py ``qwen3_template``) without its ``<think>`` field:
that field would move the reasoning out of ``content``, where the R1 format reward looks for it.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import Any

from mmr1.internals import qwen_response_template


@cache
def tool_chat_template() -> str:
    return files("mmr1.rollout.tools").joinpath("qwen2_5_vl_tools.jinja").read_text()


def response_template() -> dict[str, Any]:
    template = qwen_response_template()
    template["fields"].pop("reasoning_content", None)
    return template


def enable_tools(processor: Any) -> Any:
    """``processor`` (a VLM processor or a tokenizer) set to render and parse tool calls; returned for chaining."""
    template = tool_chat_template()
    tokenizer = getattr(processor, "tokenizer", processor)
    processor.chat_template = template
    tokenizer.chat_template = template
    tokenizer.response_template = response_template()
    return processor
