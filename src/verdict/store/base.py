"""The seams between the engine and entity storage: small Protocols and the values they pass."""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping, Sequence
from dataclasses import InitVar, dataclass, field
from typing import Protocol

from verdict.cedar import EntitiesHandle, SchemaHandle
from verdict.cedar_json import parse_uid
from verdict.model import EntityUid, JsonObject
from verdict.store.weight import NO_WEIGHT, Weight, json_weight, text_weight


@dataclass(frozen=True)
class StoredEntity:
    """A Cedar JSON entity, the uids it references (parents, attributes, tags) and its weight
    as stored: ``known_weight`` when given, else computed here (never per request), but for
    an entity with its ``text`` (a bulk load's, which only writes it): weighed on first use."""

    uid: EntityUid
    json: JsonObject
    refs: frozenset[EntityUid]
    known_weight: InitVar[Weight] = NO_WEIGHT
    # ``entity_text(json)`` when the caller made it already (a bulk load serialises each
    # entity once, to write it); None keeps memory stores lean.
    text: str | None = field(default=None, compare=False, repr=False)

    def __post_init__(self, known_weight: Weight) -> None:
        if known_weight is not NO_WEIGHT:
            self.__dict__["weight"] = known_weight
        elif self.text is None:
            self.__dict__["weight"] = json_weight(self.json)

    @classmethod
    def with_text(
        cls, uid: EntityUid, json: JsonObject, refs: frozenset[EntityUid], text: str
    ) -> StoredEntity:
        """``StoredEntity(uid, json, refs, text=text)``, made in a fifth of the time (a bulk
        load makes 300,000: a frozen dataclass sets each field through object.__setattr__)."""
        entity = object.__new__(cls)
        entity.__dict__.update(uid=uid, json=json, refs=refs, text=text)
        return entity

    @functools.cached_property
    def weight(self) -> Weight:
        """Its weight as stored (computed once)."""
        return text_weight(self.text) if self.text is not None else json_weight(self.json)

    @functools.cached_property
    def parents(self) -> tuple[EntityUid, ...]:
        """The uids of its direct parents, parsed on first use and kept (a decision's ancestry
        walk reads them; only entities that decisions reach pay for the tuple)."""
        return tuple(p for raw in self.json.get("parents", ()) if (p := parse_uid(raw)))


@dataclass(frozen=True)
class EntitySlice:
    """Every stored entity reachable from a request's roots, and what each weighs as stored."""

    entities: Mapping[EntityUid, JsonObject]
    # The store's entity version the slice was read at (0 for stores without versions).
    version: int = 0
    missing: frozenset[EntityUid] = field(default_factory=frozenset)
    # The load epoch the slice was read in: the store's version when it was last replaced
    # (0 for stores without epochs, or a store read while not loaded).
    epoch: int = 0
    # Each entity's weight as stored (every store fills it; batch unions are split by it).
    weights: Mapping[EntityUid, Weight] = field(default_factory=dict, kw_only=True)
    # Each entity's references, where the store already computed them (Redis checks them).
    references: Mapping[EntityUid, frozenset[EntityUid]] = field(default_factory=dict, kw_only=True)
    # Set only for a read that asked for one (ReadOptions.prepared): the same entities, already
    # parsed against that schema (a superset that holds every entity reachable from the
    # roots, for the memory store). ``entities`` may then be empty: the read proved that the
    # slice is within every limit without walking it.
    handle: EntitiesHandle | None = field(default=None, kw_only=True)
    # With an empty ``entities`` (the memory store's unwalked slice): each root's ancestors'
    # direct parents, which the policy index selects by. None: read them from ``entities``.
    ancestry: Mapping[EntityUid, tuple[EntityUid, ...]] | None = field(default=None, kw_only=True)


@dataclass(frozen=True)
class SliceLimits:
    """How much one evaluation may read from a store; a larger slice is EntityDataError."""

    max_entities: int = 1_000
    max_bytes: int = 1024 * 1024
    max_values: int = 16_000

    @property
    def weight(self) -> Weight:
        """The byte and value limits as one Weight."""
        return Weight(self.max_bytes, self.max_values)


DEFAULT_SLICE_LIMITS = SliceLimits()


@dataclass(frozen=True)
class ReadOptions:
    """How fresh and how fast a read must be."""

    # Absolute time.monotonic() by which the caller needs the answer; None = store default.
    deadline: float | None = None
    # Read-your-writes: data at least this version, else StaleReadError.
    min_version: int = 0
    # Decisions need a loaded store (else StoreUnavailableError); a write checking stored
    # ancestors may read a store that its own write is about to mark loaded.
    require_loaded: bool = True
    # The caller can evaluate against a pre-parsed entity set parsed against ``schema`` (it has
    # no request entities): the store may answer with one (EntitySlice.handle).
    prepared: bool = False
    schema: SchemaHandle | None = None


DEFAULT_READ = ReadOptions()


class EntityReader(Protocol):
    """Reads entity slices for decisions."""

    async def fetch_slice(
        self, store_id: str, roots: Collection[EntityUid], options: ReadOptions = DEFAULT_READ
    ) -> EntitySlice:
        """Return the entities reachable from ``roots`` through parents and references.

        Raises StoreUnavailableError when the store cannot answer, EntityDataError when the data
        it holds is unusable, StaleReadError when ``min_version`` cannot be met; never returns a
        partial slice silently.
        """
        ...


class EntityWriter(Protocol):
    """Writes entities; every call is atomic and returns the store's new version."""

    async def put(
        self,
        store_id: str,
        entities: Sequence[StoredEntity],
        expected_version: int | None = None,
        *,
        require_loaded: bool = False,
    ) -> int:
        """Upsert ``entities`` (already validated) and return the new version.

        With ``expected_version`` (the version the write was checked at), write only if the
        store's version is still that, else raise WriteConflictError with the current version:
        what the checks read may have changed (optimistic concurrency across replicas).
        ``require_loaded``: refuse (StoreNotLoadedError) a store that is not loaded, instead of
        letting this first write declare it loaded.
        """
        ...

    async def delete(
        self, store_id: str, uids: Collection[EntityUid], *, require_loaded: bool = False
    ) -> tuple[int, int]:
        """Delete ``uids``; return (new version, number deleted)."""
        ...

    async def get(
        self, store_id: str, uids: Sequence[EntityUid]
    ) -> tuple[dict[EntityUid, JsonObject], int]:
        """Read exactly ``uids`` (no closure); return the found ones and the current version."""
        ...


class EntityStore(EntityReader, EntityWriter, Protocol):
    """A store that can both serve decisions and take writes."""

    async def prepare(self) -> None:
        """Warm up before serving (e.g. load server-side scripts); may raise if unreachable."""
        ...

    async def close(self) -> None:
        """Release connections and background tasks."""
        ...
