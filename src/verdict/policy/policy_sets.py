"""A bounded, thread-safe LRU of what is built for the index's selections (policy sets, and
the explanation probes built from them)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from verdict.cedar import PolicySetHandle

V = TypeVar("V")


@dataclass(frozen=True)
class SelectionCacheLimits:
    """How many selections' policy sets one store keeps, and how many policies in all (Cedar
    holds a parsed policy in a few KiB; building one costs ~6-10 us, so sets are kept)."""

    max_sets: int = 4_096
    max_policies: int = 65_536


class SelectionCache(Generic[V]):
    """What is built for a selection key (a sorted tuple of entry numbers), least recently
    used evicted first; one for more than ``max_policies`` policies is built for its caller
    but not kept."""

    def __init__(self, limits: SelectionCacheLimits) -> None:
        self._limits = limits
        self._sets: OrderedDict[tuple[int, ...], V] = OrderedDict()
        self._policies = 0
        self._lock = threading.Lock()  # evaluation may run off the event loop
        self.hits = self.misses = 0

    def get(self, key: tuple[int, ...], build: Callable[[], V]) -> V:
        """The value for ``key``, built by ``build`` (outside the lock) when not kept."""
        with self._lock:
            found = self._sets.get(key)
            if found is not None:
                self._sets.move_to_end(key)
                self.hits += 1
                return found
            self.misses += 1
        built = build()
        if len(key) > self._limits.max_policies or self._limits.max_sets == 0:
            return built
        with self._lock:
            if key not in self._sets:
                self._sets[key] = built
                self._policies += len(key)
            while len(self._sets) > self._limits.max_sets or (
                self._policies > self._limits.max_policies
            ):
                evicted, _ = self._sets.popitem(last=False)
                self._policies -= len(evicted)
        return built

    def __len__(self) -> int:
        return len(self._sets)


# The index's policy sets.
PolicySetCache = SelectionCache[PolicySetHandle]
