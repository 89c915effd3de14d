"""A copy of the embedded tiny Qwen2.5-VL that wants to write vision tokens: the crash real runs hit, on demand.

The last decoder layer's attention is made to add a large constant to hidden dimension 0 at every position
(value projection: weight 0, bias 1 on that dimension; output projection: 1000x it), so after the final norm
dimension 0 dominates every hidden state; the LM head then reads dimension 0 into the vision tokens' logits
only, ``<|image_pad|>`` first, then ``<|video_pad|>``, ``<|vision_start|>``, ... Unbanned, every completion is
vision tokens; banned, the model writes text.
"""

from __future__ import annotations

import shutil
from pathlib import Path


def make_vision_lover(dst: Path) -> Path:
    import torch
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    from mmr1.models.tiny import tiny_qwen2_5_vl_path

    src = tiny_qwen2_5_vl_path()
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(src, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(src)
    tok = processor.tokenizer
    preference = ["<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>"]
    attn = model.model.language_model.layers[-1].self_attn
    head = model.lm_head.weight
    with torch.no_grad():
        attn.v_proj.weight.zero_()
        attn.v_proj.bias.zero_()
        attn.v_proj.bias[0] = 1.0
        attn.o_proj.weight.zero_()
        attn.o_proj.weight[0, 0] = 1000.0
        head[:, 0] = 0.0  # (tied or not: the image/video pads' input embeddings are replaced by image features)
        for rank, token in enumerate(preference):
            head[tok.convert_tokens_to_ids(token), 0] = 4.0 - 0.5 * rank
    shutil.rmtree(dst, ignore_errors=True)
    model.save_pretrained(dst)
    processor.save_pretrained(dst)
    return dst
