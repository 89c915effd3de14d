"""DAPO's overlong reward shaping (Yu et al. 2025, arXiv 2503.14476, section 3.4 and eq. 13), as TRL implements it.

A completion longer than ``L_max - L_cache`` tokens is penalised linearly, down to -1 at ``L_max``; a shorter one
gets 0. The paper generates at most 20,480 tokens with a 4,096-token soft punish cache: the last 20% of the budget,
``reward.overlong_cache: 0.2`` of ``trainer.max_completion_length`` here (mmr1's lengths are the experiment's). It
replaces the hard truncation mask (``trainer.mask_truncated_completions``) in ``algorithm=dapo``.

It scores token counts (TRL passes ``completion_ids`` to every reward), not text, so it is added to the training
rewards only (``build_reward_funcs(..., max_completion_length=...)``), never to the text-only scorers (the reward
audit's probes, ``mmr1.evaluate``).
"""

from __future__ import annotations

import functools
from typing import Any

from mmr1.rewards.config import RewardConfigError
from mmr1.rewards.registry import RewardSpec

NAME = "soft_overlong"


def soft_punish_cache(max_completion_length: int, fraction: float) -> int:
    """The cache in tokens: ``fraction`` of the budget, at least 1.

    >>> soft_punish_cache(20480, 0.2), soft_punish_cache(24, 0.2)
    (4096, 5)
    """
    if not 0 < fraction < 1:
        raise RewardConfigError(f"reward.overlong_cache={fraction}: a fraction of trainer.max_completion_length "
                                "in (0, 1) (DAPO: 0.2)")
    return max(1, round(max_completion_length * fraction))


def _score(completions: list, completion_ids: list[list[int]] | None = None, *, max_completion_len: int,
           cache: int, **kwargs: Any) -> list[float]:
    if completion_ids is None:
        raise ValueError(f"{NAME} scores completion token ids, which this caller did not pass")
    # trl/rewards/other_rewards.py: imported on the first training batch (TRL pulls in torch; the dry run builds
    # the reward list without it).
    from trl.rewards import get_soft_overlong_punishment

    return get_soft_overlong_punishment(max_completion_len, cache)(completion_ids)


def overlong_spec(max_completion_length: int, fraction: float) -> RewardSpec:
    """The reward for a run: bounded arithmetic, scored in the trainer process (no worker round trip)."""
    fn = functools.partial(_score, max_completion_len=max_completion_length,
                           cache=soft_punish_cache(max_completion_length, fraction))
    return RewardSpec(NAME, fn, isolate=False, columns=None, pure=False)
