"""A registry is a dict plus a decorator that refuses duplicate names (fairseq's idiom, nothing more).

The data layer keeps two: ``SOURCES`` (where raw rows come from: hf, modelscope, local, synthetic) and
``GENERATORS`` (procedural datasets that run offline on CPU). Tasks are YAML files (conf/dataset/).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> object. ``@reg.register("name")`` adds one; a second registration of a name is a bug."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered ({self._items[name]!r})")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; known: {sorted(self._items)}") from None

    def names(self) -> list[str]:
        return sorted(self._items)
