"""The seams between the engine and entity storage: small Protocols and the slice they return."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from verdict.model import EntityUid, JsonObject


@dataclass(frozen=True)
class StoredEntity:
    """A Cedar JSON entity and the uids it references (parents, attributes, tags)."""

    uid: EntityUid
    json: JsonObject
    refs: frozenset[EntityUid]


@dataclass(frozen=True)
class EntitySlice:
    """Every stored entity reachable from a request's roots."""

    entities: Mapping[EntityUid, JsonObject]
    # Highest entity version read (0 for stores without versions); used for read-your-writes.
    version: int = 0
    missing: frozenset[EntityUid] = field(default_factory=frozenset)


class EntityReader(Protocol):
    """Reads entity slices for decisions."""

    async def fetch_slice(self, store_id: str, roots: Collection[EntityUid]) -> EntitySlice:
        """Return the entities reachable from ``roots`` through parents and references.

        Raises StoreUnavailableError when the store cannot answer and EntityDataError when the
        data it holds is unusable; never returns a partial slice silently.
        """
        ...
