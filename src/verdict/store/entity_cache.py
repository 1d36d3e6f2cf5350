"""A bounded in-process entity cache that answers only with data its invalidations have settled.

Freshness: the invalidation listener pings Redis; the pong to a ping sent at time s proves that
every invalidation published before s has been applied (pub/sub keeps order; on a cluster, s is
the oldest ping every master has answered). The cache answers
only until ``grace`` seconds after the newest such s. A write is therefore never served stale
for longer than ``grace`` after it committed, whether the channel was lost, went silent, or this
process's event loop stalled: silence alone runs the clock out.

Settled versions: per store, ``applied`` is the version through which every invalidation has
been applied. Invalidation messages raise it; so does a pong to a ping sent after a read at
version r completed (every write up to r was published before that ping). An entry read at r
answers only once ``applied >= r``: all cached entries then equal the store's state at
``applied``, so a cache hit is a state that existed, and ``min_entity_version`` is judged by
``applied`` alone. Own writes drop their entries at once but do not raise ``applied``: another
replica's earlier write may still be in flight.

A fill read at r is dropped if an invalidation newer than r has already been seen, or if the
store was reset since the read began.

Load epochs: a store replaced (a load, a first write after data loss) starts an epoch numbered
by its first version. ``min_entity_version`` below the epoch named data that is gone: the cache
never answers it (the store refuses it).

Data loss: no invalidation announces a FLUSHALL, a Redis restarted empty or an evicted hash. So
a store's entries answer only until ``grace`` seconds after the newest read (a fill or a health
check) *sent* at s that found the store loaded: a check sent after the loss finds it not loaded,
so the cache stops answering at most ``grace`` after the loss, stall or not.

"Known missing" uids live apart from entities, so a flood of unknown uids named by callers
cannot evict real entities: new ones in a probation LRU, those asked for again (policy
literals, actions) in a protected one that single-use floods cannot reach.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import replace
from typing import Any, NamedTuple, TypeVar

from verdict.cedar_json import entity_references
from verdict.errors import EntityDataError
from verdict.model import EntityUid
from verdict.store.base import DEFAULT_SLICE_LIMITS, EntitySlice, SliceLimits, StoredEntity
from verdict.store.graph import SLICE_TOO_LARGE, SliceTooLargeError, collect_slice
from verdict.store.weight import json_weight

Key = tuple[str, EntityUid]
V = TypeVar("V")
MAX_PENDING = 10_000  # reads awaiting a covering pong; older ones settle by messages only


class ReadToken(NamedTuple):
    """Where a read started: subscription epoch, the store's generation, and the time."""

    epoch: int
    generation: int
    started: float


class _NotCached(Exception):
    """Raised inside a cache walk when a reachable uid has no settled entry."""


class EntityCache:
    """LRU over (store id, uid); see the module docstring for when it may answer."""

    def __init__(
        self,
        max_entries: int,
        grace_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_missing: int = 10_000,
        limits: SliceLimits = DEFAULT_SLICE_LIMITS,
    ) -> None:
        self.max_entries = max_entries
        self.max_missing = max_missing
        self.limits = limits
        self.grace = grace_seconds
        self._clock = clock
        self._entries: OrderedDict[Key, tuple[StoredEntity, int]] = OrderedDict()
        # Known-missing uids -> version read at: on probation, and asked for again.
        self._missing: OrderedDict[Key, int] = OrderedDict()
        self._missing_hot: OrderedDict[Key, int] = OrderedDict()
        self._fresh_as_of = -math.inf
        self._applied: dict[str, int] = {}
        self._invalidated: dict[str, int] = {}
        self._pending: list[tuple[str, int, float]] = []
        self._load_epochs: dict[str, int] = {}
        self._loaded_as_of: dict[str, float] = {}  # send time of the newest "loaded" proof
        # A read begun under another (epoch, generation) is never installed.
        self._epoch = 0
        self._generations: dict[str, int] = {}
        # Set when a fill needs a pong to settle; the listener then pings at once.
        self.settle_wanted = asyncio.Event()
        # Changes whenever an entry, a known-missing uid, an epoch or a generation changes: a
        # walk that answered at one stamp answers the same at that stamp (see ``lookup_again``).
        self.stamp = 0

    def usable(self) -> bool:
        """Whether entries may answer decisions now (never when the cache is disabled)."""
        return self.max_entries > 0 and self._clock() < self._fresh_as_of + self.grace

    def version(self, store_id: str) -> int:
        """The version through which this process has applied every invalidation of a store."""
        return self._applied.get(store_id, 0)

    def load_epoch(self, store_id: str) -> int:
        """The newest load epoch of a store this process has seen (0: none yet)."""
        return self._load_epochs.get(store_id, 0)

    def satisfies(self, store_id: str, min_version: int) -> bool:
        """Whether a read needing ``min_version`` may be answered here (if entries are there)."""
        if min_version == 0:
            return True
        return self.load_epoch(store_id) <= min_version <= self.version(store_id)

    def seen_epoch(self, store_id: str, epoch: int) -> None:
        """The store was found loaded in ``epoch``; a newer one than known replaced its data."""
        if epoch > self.load_epoch(store_id):
            if store_id in self._load_epochs:
                self.forget(store_id)
            self._load_epochs[store_id] = epoch
            self.stamp += 1

    def lookup(self, store_id: str, roots: Collection[EntityUid]) -> EntitySlice | None:
        """The slice from settled entries alone, or None when any reachable uid has none.

        Raises EntityDataError when the slice exceeds ``limits``, as a read from Redis would.
        """
        proven = self._loaded_as_of.get(store_id, -math.inf)
        if not self.usable() or self._clock() >= proven + self.grace:
            return None
        applied = self.version(store_id)
        entries, hot = self._entries, self._missing_hot

        def cached(uid: EntityUid) -> StoredEntity | None:
            key = (store_id, uid)
            if key in entries:
                entity, read_at = entries[key]
                if read_at > applied:
                    raise _NotCached
                entries.move_to_end(key)
                return entity
            if key not in hot and key in self._missing:
                self.stamp += 1
                _put(hot, key, self._missing.pop(key), self._hot_limit)
            if key in hot and hot[key] <= applied:
                hot.move_to_end(key)
                return None
            raise _NotCached

        try:
            found = collect_slice(roots, cached, self.limits)
        except _NotCached:
            return None
        except SliceTooLargeError:
            raise EntityDataError(SLICE_TOO_LARGE) from None
        return EntitySlice(
            found.entities,
            applied,
            found.missing,
            self.load_epoch(store_id),
            weights=found.weights,
        )

    def lookup_again(self, store_id: str, previous: EntitySlice, stamp: int) -> EntitySlice | None:
        """What ``lookup`` would answer now for the roots that gave ``previous`` at ``stamp``,
        without walking: nothing it read has changed since (same stamp), and the settled
        version can only have grown, which every entry it read still satisfies. None when
        anything changed, or when the cache may not answer now (its time-bound checks)."""
        proven = self._loaded_as_of.get(store_id, -math.inf)
        if stamp != self.stamp or not self.usable() or self._clock() >= proven + self.grace:
            return None
        applied = self.version(store_id)
        if applied == previous.version:
            return previous
        return replace(previous, version=applied)

    def begin_read(self, store_id: str) -> ReadToken:
        """A token to pass to ``fill`` (or ``proved_loaded``) for a read that starts now."""
        return ReadToken(self._epoch, self._generations.get(store_id, 0), self._clock())

    def proved_loaded(self, store_id: str, token: ReadToken) -> None:
        """A read begun with ``token`` found the store loaded (in the epoch this cache knows)."""
        if token[:2] == self.begin_read(store_id)[:2]:
            proven = self._loaded_as_of.get(store_id, -math.inf)
            self._loaded_as_of[store_id] = max(proven, token.started)

    def fill(self, store_id: str, entity_slice: EntitySlice, token: ReadToken) -> None:
        """Install a slice read from the store at ``entity_slice.version``, if still current."""
        read_at = entity_slice.version
        self.seen_epoch(store_id, entity_slice.epoch)
        self.proved_loaded(store_id, token)
        if (
            token[:2] != self.begin_read(store_id)[:2]
            or not self.usable()
            or read_at < self._invalidated.get(store_id, 0)
        ):
            return
        self.stamp += 1
        weights = entity_slice.weights
        for uid, entity in entity_slice.entities.items():
            key = (store_id, uid)
            self._missing.pop(key, None)
            # The weight counted from the stored text when it was read, kept for every hit.
            weight = weights.get(uid) or json_weight(entity)
            refs = entity_slice.references.get(uid) or entity_references(entity)
            stored = StoredEntity(uid, entity, refs, weight)
            _put(self._entries, key, (stored, read_at), self.max_entries)
        for uid in entity_slice.missing:
            key = (store_id, uid)
            self._entries.pop(key, None)
            if key in self._missing_hot:
                self._missing_hot[key] = read_at
            else:
                _put(self._missing, key, read_at, self.max_missing - self._hot_limit)
        if read_at > self.version(store_id):
            if len(self._pending) >= MAX_PENDING:
                del self._pending[0]
            self._pending.append((store_id, read_at, self._clock()))
            self.settle_wanted.set()

    def invalidate(self, store_id: str, version: int, uids: Collection[EntityUid]) -> None:
        """Apply another write's invalidation (in order): drop its uids, settle up to it."""
        self.wrote(store_id, version, uids)
        self._applied[store_id] = max(version, self.version(store_id))

    def wrote(self, store_id: str, version: int, uids: Collection[EntityUid]) -> None:
        """This process wrote ``uids`` at ``version``: drop them and refuse older fills.

        An entry read at ``version`` or later already shows the write (a slice is read
        atomically with the version), so it stays: the write's own message, arriving after a
        re-read, must not throw the fresh entry away."""
        self._invalidated[store_id] = max(version, self._invalidated.get(store_id, 0))
        self.stamp += 1
        for uid in uids:
            key = (store_id, uid)
            for lru in self._lrus:
                if key in lru and _read_at(lru[key]) < version:
                    del lru[key]

    def reset(self, store_id: str, version: int) -> None:
        """The whole store was replaced at ``version`` (a load, a first write after data loss)."""
        self.forget(store_id)
        self._applied[store_id] = self._invalidated[store_id] = version
        self._load_epochs[store_id] = max(version, self.load_epoch(store_id))

    def forget(self, store_id: str) -> None:
        """Drop everything of one store, including reads still in flight."""
        self._generations[store_id] = self._generations.get(store_id, 0) + 1
        self.stamp += 1
        for lru in self._lrus:
            for key in [k for k in lru if k[0] == store_id]:
                del lru[key]
        self._pending = [p for p in self._pending if p[0] != store_id]
        self._applied.pop(store_id, None)
        self._invalidated.pop(store_id, None)
        self._load_epochs.pop(store_id, None)
        self._loaded_as_of.pop(store_id, None)

    def forget_all(self) -> None:
        """Drop everything, including reads in flight (messages may have been missed)."""
        for lru in self._lrus:
            lru.clear()
        self._pending.clear()
        self._epoch += 1
        self.stamp += 1
        # A restarted Redis may count versions from zero again; start the comparison afresh.
        self._invalidated.clear()
        self._applied.clear()
        self._load_epochs.clear()
        self._loaded_as_of.clear()

    def subscribed(self, sent_at: float | None = None) -> None:
        """The listener (re)subscribed with a request sent at ``sent_at``: start afresh."""
        self.forget_all()
        self._fresh_as_of = self._clock() if sent_at is None else sent_at

    def heard(self, sent_at: float) -> None:
        """A pong answered a ping sent at ``sent_at``: everything published before is applied."""
        self._fresh_as_of = max(self._fresh_as_of, sent_at)
        still: list[tuple[str, int, float]] = []
        for store_id, read_at, done_at in self._pending:
            if done_at <= sent_at:
                self._applied[store_id] = max(read_at, self.version(store_id))
            else:
                still.append((store_id, read_at, done_at))
        self._pending = still

    def unsubscribed(self, stale: bool = False) -> None:
        """The listener lost its subscription: no pong can settle reads any more.

        ``stale``: entries stop answering at once, not only when the grace runs out (a cluster
        lost one node; the others may be taking writes this process no longer hears)."""
        self._pending.clear()
        if stale:
            self._fresh_as_of = -math.inf

    def __len__(self) -> int:
        return sum(len(lru) for lru in self._lrus)

    @property
    def _lrus(self) -> tuple[OrderedDict[Key, Any], ...]:
        return self._entries, self._missing, self._missing_hot

    @property
    def _hot_limit(self) -> int:
        """A quarter of ``max_missing`` is protected; the rest is probation."""
        return self.max_missing // 4


def _put(lru: OrderedDict[Key, V], key: Key, value: V, limit: int) -> None:
    lru[key] = value
    lru.move_to_end(key)
    while len(lru) > limit:
        lru.popitem(last=False)


def _read_at(value: tuple[StoredEntity, int] | int) -> int:
    """The version an entry (entity, version) or a known-missing uid (version) was read at."""
    return value[1] if isinstance(value, tuple) else value
