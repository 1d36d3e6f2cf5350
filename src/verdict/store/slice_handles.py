"""Pre-parsed Cedar handles of hot slices answered from the Redis store's local cache.

A handle is reused only for a slice made of exactly the same cached entries: the entry keeps
the very JSON objects it was parsed from, and a hit compares them by identity with what the
cache walk found now. The entity cache never changes an entry in place: an invalidation, a
newer read, a reset or an eviction replaces or drops it, so any change to the slice (a write
here or on another replica, a newer version, a reload) fails the comparison and the handle is
parsed again from the current entries. Holding the objects keeps their identities from being
reused while the entry lives.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from verdict import cedar
from verdict.cedar import CedarError, EntitiesHandle, SchemaHandle
from verdict.model import EntityUid, JsonObject
from verdict.store.base import EntitySlice

_Key = tuple[str, frozenset[EntityUid]]


@dataclass(frozen=True, eq=False)
class _Entry:
    """A parsed slice and the entries it was parsed from."""

    members: Mapping[EntityUid, JsonObject]
    handle: EntitiesHandle
    bytes: int


class SliceHandles:
    """An LRU of parsed slices keyed by store and roots, bounded in entries and stored bytes."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[_Key, _Entry] = OrderedDict()
        self._bytes = 0
        self.parsed = 0  # handles parsed (misses of this cache), for tests and benchmarks

    def handle_for(
        self,
        store_id: str,
        roots: Collection[EntityUid],
        entity_slice: EntitySlice,
        schema: SchemaHandle | None,
    ) -> EntitiesHandle | None:
        """The handle of exactly ``entity_slice``'s entries, parsed now if not held; None when
        disabled, too large to keep, or refused by Cedar (the list path then reports it)."""
        if self.max_entries <= 0:
            return None
        key = (store_id, frozenset(roots))
        entry = self._entries.get(key)
        found = entity_slice.entities
        if entry is not None and entry.handle.schema is schema and _same(entry.members, found):
            self._entries.move_to_end(key)
            return entry.handle
        size = sum(w.bytes for w in entity_slice.weights.values())
        if size > self.max_bytes:
            return None
        try:
            # On the loop, as a list evaluation parses: this parse replaces the next ones.
            handle = cedar.parse_entities(json.dumps(list(found.values())), schema)
        except CedarError:
            return None
        self.parsed += 1
        self._drop(key)
        self._entries[key] = _Entry(dict(found), handle, size)
        self._bytes += size
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))
        return handle

    def _drop(self, key: _Key) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= entry.bytes

    def __len__(self) -> int:
        return len(self._entries)


def _same(members: Mapping[EntityUid, JsonObject], found: Mapping[EntityUid, JsonObject]) -> bool:
    """Whether ``found`` is made of exactly the objects ``members`` holds."""
    if len(members) != len(found):
        return False
    get = found.get
    return all(get(uid) is entity for uid, entity in members.items())
