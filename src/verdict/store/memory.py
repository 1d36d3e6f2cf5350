"""The embedded in-memory entity store, loaded from each policy store's entities.json."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from verdict.cedar import SchemaHandle
from verdict.errors import (
    Diagnostic,
    EntitiesChangedError,
    EntityDataError,
    PolicyLoadError,
    StaleReadError,
    StoreUnavailableError,
    WriteConflictError,
)
from verdict.files import FileReadError, confined_reads, resolved_inside
from verdict.model import EntityUid, JsonObject
from verdict.store.base import (
    DEFAULT_READ,
    DEFAULT_SLICE_LIMITS,
    EntitySlice,
    ReadOptions,
    SliceLimits,
    StoredEntity,
)
from verdict.store.entity_file import DEFAULT_HIERARCHY, read_entities_file
from verdict.store.graph import SLICE_TOO_LARGE, SliceTooLargeError, ancestry, collect_slice
from verdict.store.parent_graph import HierarchyLimits
from verdict.store.version_handles import VersionHandles, Vet

DEFAULT_HANDLE_MAX_ENTITIES = 200_000


@dataclass(frozen=True)
class EntityFile:
    """What the composition root hands the store for one policy store: its entities file (if
    any), the schema to check it against, and the name errors show."""

    path: Path | None
    schema: SchemaHandle | None
    shown: str
    hierarchy: HierarchyLimits = DEFAULT_HIERARCHY
    sealed: str = ""  # the digest the store's seal gives the file ("": not sealed)
    version: str = ""  # the entities version the store's load found ("": not checked)


@dataclass(frozen=True)
class HandleSettings:
    """Pre-parsed entity sets for the memory store (see version_handles): the schema of each
    store, how a whole set is judged against the hierarchy limits, the largest store given
    one (a build parses all of it after every write)."""

    schemas: Mapping[str, SchemaHandle | None]
    vet: Vet
    max_entities: int = DEFAULT_HANDLE_MAX_ENTITIES


class MemoryEntityStore:
    """Entities held in process memory, per policy store; reads never block or fail."""

    def __init__(
        self,
        stores: Mapping[str, Mapping[EntityUid, StoredEntity]],
        limits: SliceLimits = DEFAULT_SLICE_LIMITS,
        handles: HandleSettings | None = None,
    ) -> None:
        self._stores = {name: dict(entities) for name, entities in stores.items()}
        self._versions = dict.fromkeys(self._stores, 0)
        self._limits = limits
        self.handles: VersionHandles | None = None
        if handles is not None:
            schemas = {k: v for k, v in handles.schemas.items() if k in self._stores}
            self.handles = VersionHandles(
                self._copy, schemas, limits, handles.vet, handles.max_entities
            )

    def _copy(self, store_id: str) -> tuple[int, list[StoredEntity]]:
        """The store's version and its entities at that version (stored values are immutable)."""
        return self._versions[store_id], list(self._stores[store_id].values())

    @classmethod
    def from_files(
        cls,
        files: Mapping[str, EntityFile],
        limits: SliceLimits = DEFAULT_SLICE_LIMITS,
        vet: Vet | None = None,
        handle_max_entities: int = DEFAULT_HANDLE_MAX_ENTITIES,
    ) -> MemoryEntityStore:
        """Load each store's entities file (validated against its schema); PolicyLoadError
        lists the problems of all of them."""
        stores: dict[str, Mapping[EntityUid, StoredEntity]] = {}
        diagnostics: list[Diagnostic] = []
        changed = False
        for store_id, file in files.items():
            try:
                stores[store_id] = cls.read_file(file)
            except PolicyLoadError as exc:
                diagnostics.extend(exc.diagnostics)
                changed = changed or isinstance(exc, EntitiesChangedError)
        if diagnostics:
            raise (EntitiesChangedError if changed else PolicyLoadError)(diagnostics)
        schemas = {store_id: file.schema for store_id, file in files.items()}
        handles = None if vet is None else HandleSettings(schemas, vet, handle_max_entities)
        return cls(stores, limits, handles)

    @staticmethod
    def read_file(file: EntityFile) -> dict[EntityUid, StoredEntity]:
        """One store's entities from its file ({} without one); PolicyLoadError when broken."""
        if file.path is None:
            return {}
        # A store's entities.json, like its other files, lies inside the store folder, and
        # the store folder inside the stores folder (links resolved): verdict.files.
        try:
            real = resolved_inside(file.path.parent)
        except FileReadError as exc:
            raise PolicyLoadError([Diagnostic(file.shown, 0, str(exc))]) from None
        with confined_reads(real):
            return read_entities_file(
                file.path,
                file.schema,
                file.shown,
                file.hierarchy,
                sealed=file.sealed,
                version=file.version,
            )

    async def install(
        self,
        store_id: str,
        entities: Mapping[EntityUid, StoredEntity],
        schema: SchemaHandle | None,
    ) -> None:
        """Replace a store's entities whole (a reloaded entities.json or schema, or a new
        store), at a new version; entities written through the API since are dropped."""
        self._stores[store_id] = dict(entities)
        self._versions[store_id] = self._versions.get(store_id, 0) + 1
        if self.handles is not None:
            self.handles.set_schema(store_id, schema)
        self._rebuild(store_id)

    async def drop(self, store_id: str) -> None:
        """Forget a store that was removed (reads of it are UNAVAILABLE from now on)."""
        self._stores.pop(store_id, None)
        if self.handles is not None:
            self.handles.forget(store_id)

    def _entities(self, store_id: str) -> dict[EntityUid, StoredEntity]:
        entities = self._stores.get(store_id)
        if entities is None:
            raise StoreUnavailableError(f"no entities loaded for store {store_id!r}")
        return entities

    async def fetch_slice(
        self, store_id: str, roots: Collection[EntityUid], options: ReadOptions = DEFAULT_READ
    ) -> EntitySlice:
        """The closure of ``roots`` within one store; with ``options.prepared``, the version's
        handle too, and no walk at all when every slice of that version is within the limits."""
        entities = self._entities(store_id)
        version = self._versions[store_id]
        if options.min_version > version:
            raise StaleReadError(options.min_version, version)
        handle = None
        if options.prepared and self.handles is not None:
            prepared = self.handles.current(store_id, version, options.schema)
            if prepared is not None:
                if prepared.bounded:
                    # No walk: the roots alone are looked up, to say which do not exist.
                    missing = frozenset(r for r in roots if r not in entities)
                    return EntitySlice(
                        {},
                        version,
                        missing,
                        handle=prepared.entities,
                        ancestry=ancestry(roots, entities.get),
                    )
                handle = prepared.entities
        try:
            found = collect_slice(roots, entities.get, self._limits)
        except SliceTooLargeError:
            # The same refusal, in the same words, as the Redis store's.
            raise EntityDataError(SLICE_TOO_LARGE) from None
        return EntitySlice(
            found.entities, version, found.missing, weights=found.weights, handle=handle
        )

    async def put(
        self,
        store_id: str,
        entities: Sequence[StoredEntity],
        expected_version: int | None = None,
        *,
        require_loaded: bool = False,
    ) -> int:
        """Upsert entities; one new version per call (none if the version moved on).

        Every store is loaded at start, so ``require_loaded`` never refuses. One process holds
        the data and EntityWrites serialises a store's writes, so a conflict cannot happen
        through it; the check keeps the writer contract the same as Redis's.
        """
        target = self._entities(store_id)
        current = self._versions[store_id]
        if expected_version is not None and expected_version != current:
            raise WriteConflictError(current)
        target.update((e.uid, e) for e in entities)
        self._versions[store_id] += 1
        self._rebuild(store_id)
        return self._versions[store_id]

    async def delete(
        self, store_id: str, uids: Collection[EntityUid], *, require_loaded: bool = False
    ) -> tuple[int, int]:
        """Delete entities; one new version per call."""
        target = self._entities(store_id)
        deleted = sum(target.pop(uid, None) is not None for uid in set(uids))
        self._versions[store_id] += 1
        self._rebuild(store_id)
        return self._versions[store_id], deleted

    def _rebuild(self, store_id: str) -> None:
        if self.handles is not None:
            self.handles.changed(store_id, self._versions[store_id])

    async def get(
        self, store_id: str, uids: Sequence[EntityUid]
    ) -> tuple[dict[EntityUid, JsonObject], int]:
        """Exactly the named entities that exist."""
        entities = self._entities(store_id)
        found = {uid: entities[uid].json for uid in uids if uid in entities}
        return found, self._versions[store_id]

    async def prepare(self) -> None:
        """Parse every store's entities once, before serving (off the event loop)."""
        if self.handles is not None:
            await self.handles.settle()

    async def close(self) -> None:
        """Stop building handles."""
        if self.handles is not None:
            await self.handles.close()
