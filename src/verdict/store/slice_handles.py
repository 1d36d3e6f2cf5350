"""Pre-parsed Cedar handles of hot slices answered from the Redis store's local cache.

A handle is reused only for a slice made of exactly the same cached entries. While nothing in
the cache has changed (its stamp), the previous walk's slice is answered again without walking
(``EntityCache.lookup_again``, which still applies the cache's time-bound checks). Otherwise the
cache is walked, and the entry, which keeps the very JSON objects it was parsed from, is reused
only if the walk found exactly those objects (compared by identity). The entity cache never
changes an entry in place: an invalidation, a newer read, a reset or an eviction replaces or
drops it (and moves the stamp), so any change to the slice (a write here or on another
replica, a newer version, a reload) fails the comparison and the handle is parsed again from
the current entries. Holding the objects keeps their identities from being reused while the
entry lives.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass, replace

from verdict import cedar
from verdict.cedar import CedarError, EntitiesHandle, SchemaHandle
from verdict.model import EntityUid
from verdict.store.base import EntitySlice
from verdict.store.entity_cache import EntityCache

_Key = tuple[str, frozenset[EntityUid]]


@dataclass(frozen=True, eq=False)
class _Entry:
    """A parsed slice (as last answered, with its handle) and the cache stamp of that walk."""

    slice: EntitySlice
    handle: EntitiesHandle
    bytes: int
    stamp: int


class SliceHandles:
    """An LRU of parsed slices keyed by store and roots, bounded in entries and stored bytes."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[_Key, _Entry] = OrderedDict()
        self._bytes = 0
        self.parsed = 0  # handles parsed (misses of this cache), for tests and benchmarks

    def lookup(
        self,
        cache: EntityCache,
        store_id: str,
        roots: Collection[EntityUid],
        schema: SchemaHandle | None,
    ) -> EntitySlice | None:
        """``cache.lookup``, with the handle of exactly its entries (parsed now when not held;
        none when disabled, too large to keep, or refused by Cedar: the list path reports it)."""
        if self.max_entries <= 0:
            return cache.lookup(store_id, roots)
        key = (store_id, frozenset(roots))
        entry = self._entries.get(key)
        if entry is not None and entry.handle.schema is schema:
            again = cache.lookup_again(store_id, entry.slice, entry.stamp)
            if again is not None:
                self._entries.move_to_end(key)
                return again
        found = cache.lookup(store_id, roots)
        if found is None:
            return None
        stamp = cache.stamp  # after the walk: what it changed (a promotion) is part of it
        if entry is not None and entry.handle.schema is schema and _same(entry, found):
            handle = entry.handle
        else:
            size = sum(w.bytes for w in found.weights.values())
            if size > self.max_bytes:
                return found
            try:
                # On the loop, as a list evaluation parses: this parse replaces the next ones.
                handle = cedar.parse_entities(json.dumps(list(found.entities.values())), schema)
            except CedarError:
                return found
            self.parsed += 1
        answer = replace(found, handle=handle)
        self._drop(key)
        size = sum(w.bytes for w in found.weights.values())
        self._entries[key] = _Entry(answer, handle, size, stamp)
        self._bytes += size
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))
        return answer

    def _drop(self, key: _Key) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= entry.bytes

    def __len__(self) -> int:
        return len(self._entries)


def _same(entry: _Entry, found: EntitySlice) -> bool:
    """Whether ``found`` is made of exactly the objects the entry's handle was parsed from."""
    members, now = entry.slice.entities, found.entities
    if len(members) != len(now):
        return False
    get = now.get
    return all(get(uid) is entity for uid, entity in members.items())
