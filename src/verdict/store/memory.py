"""The embedded in-memory entity store, loaded from each policy store's entities.json."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from verdict.errors import Diagnostic, PolicyLoadError, StoreUnavailableError
from verdict.model import EntityUid
from verdict.policy.snapshot import PolicySnapshot
from verdict.store.base import EntitySlice, StoredEntity
from verdict.store.entity_file import read_entities_file
from verdict.store.graph import collect_slice


class MemoryEntityStore:
    """Entities held in process memory, per policy store; reads never block."""

    def __init__(self, stores: Mapping[str, Mapping[EntityUid, StoredEntity]]) -> None:
        self._stores = {name: dict(entities) for name, entities in stores.items()}

    @classmethod
    def from_snapshot(cls, snapshot: PolicySnapshot) -> MemoryEntityStore:
        """Load every store's ``entities.json`` (validated against its schema)."""
        stores: dict[str, Mapping[EntityUid, StoredEntity]] = {}
        diagnostics: list[Diagnostic] = []
        for store_id, store in snapshot.stores.items():
            if store.entities_file is None:
                stores[store_id] = {}
                continue
            try:
                stores[store_id] = read_entities_file(
                    store.entities_file, store.schema, f"{store_id}/{store.entities_file.name}"
                )
            except PolicyLoadError as exc:
                diagnostics.extend(exc.diagnostics)
        if diagnostics:
            raise PolicyLoadError(diagnostics)
        return cls(stores)

    async def fetch_slice(self, store_id: str, roots: Collection[EntityUid]) -> EntitySlice:
        """The closure of ``roots`` within one store."""
        entities = self._stores.get(store_id)
        if entities is None:
            raise StoreUnavailableError(f"no entities loaded for store {store_id!r}")
        return collect_slice(roots, entities.get)
