"""One validation idiom for every typed config node: the schema dataclass, merged by OmegaConf.

OmegaConf checks types and refuses unknown keys (the same checks the spine's ConfigStore schema makes at
compose time); ``OmegaConf.to_object`` then builds the dataclass, whose ``__post_init__`` checks values.
Every default lives once, in the dataclass; YAML files hold deltas.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def typed_config(cls: type[T], node: Any, *, key: str, error: type[Exception] = ValueError) -> T:
    """``cls`` from ``node`` (an instance, an OmegaConf node, a mapping or None); errors name ``key.<field>``.

    >>> from mmr1.rewards.config import RewardConfig
    >>> typed_config(RewardConfig, {"timeout_s": 2}, key="reward").timeout_s
    2.0
    """
    if isinstance(node, cls):
        return node  # built by its constructor: __post_init__ has run
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if node is not None and not isinstance(node, Mapping) and not OmegaConf.is_dict(node):
        raise error(f"{key}: expected a mapping, got {type(node).__name__}")
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), node or {}))  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        where = f"{key}.{exc.full_key}" if getattr(exc, "full_key", None) else key
        raise error(f"{where}: {str(getattr(exc, 'msg', exc)).splitlines()[0]}") from None


def container(node: Any, **kwargs: Any) -> dict[str, Any]:
    """``OmegaConf.to_container`` of a mapping node, typed as the dict it is (resolve=True unless told)."""
    from omegaconf import OmegaConf

    out = OmegaConf.to_container(node, **{"resolve": True, **kwargs})
    if not isinstance(out, dict):
        raise TypeError(f"expected a mapping config node, got {type(out).__name__}")
    return out  # type: ignore[return-value]
