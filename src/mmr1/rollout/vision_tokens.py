"""No completion may hold a vision token: the ids, the ban for each rollout backend, and the last-line guard.

A completion is fed back behind its prompt for the log-prob forwards, and Qwen2.5-VL matches every
``<|image_pad|>`` of that sequence to one image feature: a sampled one is "Image features and image tokens do
not match, tokens: 289, features: 288" at the next forward (R1-V#91, verl#3469, EasyR1#110). A sampled
``<|vision_start|>`` shifts the mRoPE positions of the tokens after it (transformers' ``get_rope_index`` reads the
token after each vision start). TRL 1.16 suppresses ``image_token_id`` alone, and only under transformers
generate (``trl/trainer/grpo_trainer.py``, ``suppress_tokens``); under vLLM nothing is banned, which is why the
random tiny model crashed at step 1 under vLLM and not under ``rollout=hf``.

So every backend bans the whole set at sampling time, through its own setting: transformers generate through
``suppress_tokens`` (logits set to -inf), vLLM (colocate and server alike) through ``SamplingParams.bad_words``
(a one-token bad word is masked to -inf at every position; vLLM's ``logit_bias`` would not do: it is clamped to
+-100). ``cut_at_vision_tokens`` then ends any completion at a vision token that still got through (the token becomes
EOS), counted in the metrics (``rollout/vision_token_cuts``): it should never fire.

The trainer still scores the unbanned model (TRL 1.16 computes its log-probs in a fused LM head from the head's
weights, ``trl/trainer/utils.py``, ``add_fused_lm_head``, where no logit can be masked). Under vLLM, whose processed
log-probs are after the ban, each sampled token's log-prob is then ``log(1 - p_banned)`` higher on the sampler's
side, which TRL's importance-sampling correction (``rollout.importance_sampling_correction``) weighs as the
sampler/trainer mismatch it is. For an instruct or warm-started model that mass is negligible (it never learnt to
write vision tokens); on the random tiny model (5 vision tokens of ~920, ~0.6 % of the mass) it is a constant
0.0063 mean |delta logp| (``sampling/sampling_logp_difference/mean``), measured.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("mmr1.rollout")

# Words that name a vision placeholder in a config attribute (``image_token_id``) or a special token
# (``<|vision_pad|>``). Boxes, quads and object refs are text the model may write.
_VISION_WORDS = ("image", "video", "vision")


def _config_ids(config: Any) -> dict[str, int]:
    """``*_token_id`` attributes naming a vision placeholder, on the config and its sub-configs."""
    out: dict[str, int] = {}
    configs = [config] + [getattr(config, sub, None) for sub in ("text_config", "vision_config")]
    for cfg in configs:
        if cfg is None:
            continue
        items = cfg.to_dict().items() if hasattr(cfg, "to_dict") else vars(cfg).items()
        for key, value in items:
            if key.endswith("_token_id") and isinstance(value, int) and any(w in key for w in _VISION_WORDS):
                out[key] = value
    return out


def vision_token_ids(config: Any, processor: Any) -> dict[str, int]:
    """Every vision placeholder of a model, ``{token: id}``, read from its config and its processor.

    From the config: each ``*_token_id`` naming an image, video or vision token (``image_token_id``,
    ``video_token_id``, ``vision_start_token_id``, ``vision_end_token_id``). From the processor: its
    ``image_token`` / ``video_token`` / ``all_special_multimodal_tokens``, and every special token of its
    tokenizer whose name says image, video or vision (Qwen's ``<|vision_pad|>`` is in no config field).
    """
    tokenizer = getattr(processor, "tokenizer", processor)
    names: set[str] = set(getattr(processor, "all_special_multimodal_tokens", None) or [])
    names |= {t for t in (getattr(processor, "image_token", None), getattr(processor, "video_token", None)) if t}
    names |= {t for t in tokenizer.all_special_tokens if any(w in t.lower() for w in _VISION_WORDS)}
    out = {name: int(tokenizer.convert_tokens_to_ids(name)) for name in names}
    by_id = {i: n for n, i in out.items()}
    for key, token_id in _config_ids(config).items():
        if token_id not in by_id:  # a config id whose token the tokenizer does not name: keep it by its key
            name = tokenizer.convert_ids_to_tokens(token_id) or key
            out[name] = token_id
            by_id[token_id] = name
    unk = getattr(tokenizer, "unk_token_id", None)
    return {n: i for n, i in sorted(out.items(), key=lambda kv: kv[1]) if i is not None and i != unk}


def ban_kwargs(backend: str, tokens: Mapping[str, int], tokenizer: Any = None) -> dict[str, Any]:
    """``GRPOConfig.generation_kwargs`` entries that ban ``tokens`` under ``backend`` (``hf`` or ``vllm``).

    >>> ban_kwargs("hf", {"<|vision_start|>": 914, "<|image_pad|>": 917})
    {'suppress_tokens': [914, 917]}
    """
    if backend == "hf":
        return {"suppress_tokens": sorted(tokens.values())}
    if backend != "vllm":
        raise ValueError(f"rollout.backend must be 'hf' or 'vllm', got {backend!r}")
    if tokenizer is not None:
        # vLLM turns each bad word into ids with the tokenizer (add_special_tokens=False): each must come back as
        # exactly its own id, or the ban would miss it (vllm/sampling_params.py, update_from_tokenizer).
        for name, token_id in tokens.items():
            ids = tokenizer.encode(name, add_special_tokens=False)
            if ids != [token_id]:
                raise ValueError(f"the vision token {name!r} (id {token_id}) encodes to {ids}, not to its own id: "
                                 "vLLM's bad_words could not ban it")
    return {"bad_words": sorted(tokens, key=tokens.__getitem__)}


def merge_generation_kwargs(user: Mapping[str, Any] | None, ban: Mapping[str, Any]) -> dict[str, Any]:
    """The user's ``generation_kwargs`` plus the ban; a list the user gave for the same key is kept and extended.

    >>> merge_generation_kwargs({"suppress_tokens": [5], "min_p": 0.1}, {"suppress_tokens": [917]})
    {'suppress_tokens': [5, 917], 'min_p': 0.1}
    """
    out = dict(user or {})
    for key, values in ban.items():
        mine = list(out.get(key) or [])
        out[key] = mine + [v for v in values if v not in mine]
    return out


def banned_generation(backend: str, ban: bool, config: Any, processor: Any,
                      generation_kwargs: Mapping[str, Any] | None) -> tuple[dict[str, Any] | None, set[int]]:
    """A run's ``GRPOConfig.generation_kwargs`` with the vision tokens banned under ``backend`` (as given with
    ``ban`` false: ``rollout.ban_vision_tokens``), and the ids the trainer's last-line cut watches for either way."""
    tokens = vision_token_ids(config, processor)
    if not ban:
        log.warning("rollout.ban_vision_tokens=false: completions are cut before any vision token instead "
                    "(rollout/vision_token_cuts counts them): %s", ", ".join(tokens))
        return (dict(generation_kwargs) if generation_kwargs is not None else None), set(tokens.values())
    kwargs = ban_kwargs(backend, tokens, processor.tokenizer)
    log.info("vision tokens banned from completions (%s): %s", next(iter(kwargs)), ", ".join(tokens))
    return merge_generation_kwargs(generation_kwargs, kwargs), set(tokens.values())


def cut_at_vision_tokens(completion_ids: list[list[int]], logprobs: list | None, banned: set[int],
                         eos_token_id: int) -> tuple[list[list[int]], list | None, int]:
    """End each completion at its first banned token, which becomes ``eos_token_id``; return the lists and how many
    were cut. The end token was not sampled: its sampler log-prob is NaN, which TRL leaves out of its mismatch
    metrics and gives an importance ratio of 1 (``trl/trainer/grpo_trainer.py``). Never empty: TRL reads each
    completion's last token.

    >>> cut_at_vision_tokens([[5, 917, 6], [917], [5, 6]], [[-1.0, -2.0, -3.0], [-1.0], [-1.0, -1.0]], {917}, 2)
    ([[5, 2], [2], [5, 6]], [[-1.0, nan], [nan], [-1.0, -1.0]], 2)
    """
    cuts = 0
    out_ids: list[list[int]] = []
    out_lp: list | None = [] if logprobs is not None else None
    for i, ids in enumerate(completion_ids):
        stop = next((k for k, t in enumerate(ids) if t in banned), None)
        if stop is None:
            out_ids.append(list(ids))
            if out_lp is not None and logprobs is not None:
                out_lp.append(logprobs[i])
            continue
        cuts += 1
        out_ids.append([*ids[:stop], eos_token_id])
        if out_lp is not None and logprobs is not None:
            out_lp.append([*logprobs[i][:stop], float("nan")])
    return out_ids, out_lp, cuts
