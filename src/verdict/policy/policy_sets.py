"""A bounded, thread-safe LRU of the policy sets built for the index's selections."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from verdict.cedar import PolicySetHandle


@dataclass(frozen=True)
class SelectionCacheLimits:
    """How many selections' policy sets one store keeps, and how many policies in all (Cedar
    holds a parsed policy in a few KiB; building one costs ~6-10 us, so sets are kept)."""

    max_sets: int = 4_096
    max_policies: int = 65_536


class PolicySetCache:
    """Policy sets by selection key (a sorted tuple of entry numbers), least recently used
    evicted first; a set larger than ``max_policies`` is built for its caller but not kept."""

    def __init__(self, limits: SelectionCacheLimits) -> None:
        self._limits = limits
        self._sets: OrderedDict[tuple[int, ...], PolicySetHandle] = OrderedDict()
        self._policies = 0
        self._lock = threading.Lock()  # evaluation may run off the event loop
        self.hits = self.misses = 0

    def get(self, key: tuple[int, ...], build: Callable[[], PolicySetHandle]) -> PolicySetHandle:
        """The set for ``key``, built by ``build`` (outside the lock) when not kept."""
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
