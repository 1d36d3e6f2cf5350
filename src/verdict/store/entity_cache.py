"""A bounded in-process entity cache that is only trusted while invalidations can reach it.

Entries (including "known missing" ones) are valid while the invalidation listener is
subscribed. When the subscription is lost, the cache serves for at most ``grace`` seconds, then
not at all until the listener resubscribes, which empties it (messages may have been missed).
A fill read at version r is dropped if an invalidation newer than r has already arrived, so a
slow read can never re-install data a concurrent write replaced.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Collection

from verdict.cedar_json import entity_references
from verdict.model import EntityUid
from verdict.store.base import EntitySlice, StoredEntity
from verdict.store.graph import collect_slice


class _NotCached(Exception):
    """Raised inside a cache walk when a reachable uid has no entry."""


class EntityCache:
    """LRU over (store id, uid); see the module docstring for when it may answer."""

    def __init__(
        self, max_entries: int, grace_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_entries = max_entries
        self.grace = grace_seconds
        self._clock = clock
        # None marks a uid the store is known not to hold.
        self._entries: OrderedDict[tuple[str, EntityUid], StoredEntity | None] = OrderedDict()
        self._trusted_until = -math.inf
        self._versions: dict[str, int] = {}
        self._invalidated: dict[str, int] = {}
        # Bumped on every resubscription; a read begun in an older epoch is never installed.
        self._epoch = 0

    def usable(self) -> bool:
        """Whether entries may answer decisions now (never when the cache is disabled)."""
        return self.max_entries > 0 and self._clock() < self._trusted_until

    def version(self, store_id: str) -> int:
        """The newest entity version this process has seen for a store."""
        return self._versions.get(store_id, 0)

    def lookup(self, store_id: str, roots: Collection[EntityUid]) -> EntitySlice | None:
        """The slice from cache alone, or None when any reachable uid is not cached."""
        if not self.usable():
            return None
        entries = self._entries

        def cached(uid: EntityUid) -> StoredEntity | None:
            key = (store_id, uid)
            try:
                entry = entries[key]
            except KeyError:
                raise _NotCached from None
            entries.move_to_end(key)
            return entry

        try:
            found = collect_slice(roots, cached)
        except _NotCached:
            return None
        return EntitySlice(found.entities, self.version(store_id), found.missing)

    def begin_read(self) -> int:
        """A token to pass to ``fill`` for a read that starts now."""
        return self._epoch

    def fill(self, store_id: str, entity_slice: EntitySlice, token: int) -> None:
        """Install a slice read from the store at ``entity_slice.version``, if still current."""
        self._note_version(store_id, entity_slice.version)
        stale = entity_slice.version < self._invalidated.get(store_id, 0)
        if stale or token != self._epoch or not self.usable():
            return
        for uid, entity in entity_slice.entities.items():
            self._put((store_id, uid), StoredEntity(uid, entity, entity_references(entity)))
        for uid in entity_slice.missing:
            self._put((store_id, uid), None)

    def invalidate(self, store_id: str, version: int, uids: Collection[EntityUid]) -> None:
        """Drop entries a write at ``version`` changed."""
        self._note_version(store_id, version)
        self._invalidated[store_id] = max(version, self._invalidated.get(store_id, 0))
        for uid in uids:
            self._entries.pop((store_id, uid), None)

    def subscribed(self) -> None:
        """The listener is (re)subscribed: start afresh, trusted until told otherwise."""
        self._entries.clear()
        self._epoch += 1
        # A restarted Redis may count versions from zero again; start the comparison afresh.
        self._invalidated.clear()
        self._versions.clear()
        self._trusted_until = math.inf

    def unsubscribed(self) -> None:
        """The listener lost its subscription: keep serving for at most the grace period."""
        if self._trusted_until == math.inf:
            self._trusted_until = self._clock() + self.grace

    def __len__(self) -> int:
        return len(self._entries)

    def _put(self, key: tuple[str, EntityUid], entry: StoredEntity | None) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def _note_version(self, store_id: str, version: int) -> None:
        if version > self._versions.get(store_id, 0):
            self._versions[store_id] = version
