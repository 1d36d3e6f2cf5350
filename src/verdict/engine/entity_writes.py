"""Validate entity writes against limits, the parent graph and the store's schema, then apply.

A 10,000-entity write must not stall decisions. The Python work (JSON, shape, size, graph and
reference checks) runs in a worker thread. Cedar's schema check holds the GIL for a whole call,
and from a worker thread it starved the event loop for 200+ ms at a time (measured in
benchmarks/bench_loop_stall.py), so it runs on the loop instead, at most SCHEMA_CHUNK entities
and SCHEMA_CHUNK_VALUES JSON values per call (~5 ms for lending entities, at most ~20 ms for
the costliest values), giving other requests a turn between calls.

Concurrent writes are checked one after another per store (see EntityWrites).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from verdict import cedar
from verdict.cedar_json import entity_references, entity_uid, parse_entities_counted
from verdict.daemon_pool import DaemonPool
from verdict.engine.hierarchy import HierarchyProblem, check_graph, parents_of
from verdict.engine.limits import DEFAULT_LIMITS, EntityLimits
from verdict.engine.request_problems import nearest_name
from verdict.engine.turns import give_turn
from verdict.errors import EntityDataError, RequestError, WriteConflictError, WritesRefusedError
from verdict.model import EntityUid, JsonObject
from verdict.policy.holder import PolicyHolder
from verdict.policy.snapshot import EntitiesSource, StoreSnapshot
from verdict.schema_shape import SchemaShape
from verdict.store.base import EntityStore, ReadOptions, StoredEntity
from verdict.store.weight import entity_text
from verdict.telemetry import metrics

SCHEMA_CHUNK = 200  # entities per Cedar call: ~5 ms with the GIL held
# JSON values per Cedar call: Cedar converts up to ~5 us per value (bench_json_values.py), and
# 200 entities of max_entity_values each would hold the loop for a second.
SCHEMA_CHUNK_VALUES = 4_000
ANCESTOR_READ = 100  # parents per read of their stored closure
WRITE_ATTEMPTS = 5  # checks against a store that other replicas keep changing, then ABORTED
# A write's parse and checks (pure CPU, the GIL held: more threads would not go faster).
WRITE_WORK = DaemonPool(2, "verdict-entity-writes")


@dataclass(frozen=True)
class _Batch:
    """A parsed write: entities in call order, their uids and parents."""

    entities: tuple[JsonObject, ...]
    index: Mapping[EntityUid, int]
    parents: Mapping[EntityUid, list[EntityUid]]
    values: Sequence[int]  # JSON values of each entity

    def outside_parents(self) -> set[EntityUid]:
        """Parents this write does not itself define: their ancestors are stored ones."""
        return {p for ps in self.parents.values() for p in ps} - self.index.keys()


@dataclass(frozen=True)
class _Ancestors:
    """The stored closure of a write's outside parents and the versions it was read at."""

    found: Mapping[EntityUid, JsonObject]
    versions: frozenset[int]

    @property
    def version(self) -> int | None:
        """The version to write at: None when nothing was read (a write that names no stored
        parent cannot close a cycle through stored data); the oldest if parts disagree, which
        can only conflict."""
        return min(self.versions) if self.versions else None


class EntityWrites:
    """The write path of EntityService: checks every entity, writes all or nothing.

    A write is checked against the stored ancestors of its parents, so two writes checked at
    once could each pass and together store a cycle (``a -> b`` and ``b -> a``). Within this
    process a lock per store serialises check and write; across replicas the write is applied
    only if the store's version is still the one its ancestors were read at, else they are read
    again and the hierarchy re-checked, up to WRITE_ATTEMPTS times.

    ``refusal``, when given, refuses every put and delete before any work, with that reason
    (reads go on): an in-memory store written in one of several worker processes would change
    that process alone, and decisions would differ by the connection they came in on.
    """

    def __init__(
        self,
        policies: PolicyHolder,
        store: EntityStore,
        limits: EntityLimits = DEFAULT_LIMITS,
        refusal: str | None = None,
    ) -> None:
        self._policies = policies
        self._store = store
        self._limits = limits
        self._refusal = refusal
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    def _check_allowed(self) -> None:
        if self._refusal is not None:
            metrics.CALLS_REFUSED.labels(reason="writes_refused").inc()
            raise WritesRefusedError(self._refusal)

    async def put(self, store_id: str, entities_json: str) -> tuple[int, int]:
        """Validate and upsert a Cedar JSON entity array; return (version, count)."""
        self._check_allowed()
        store = self._policies.current.resolve(store_id)
        batch = await WRITE_WORK.run(_parse_batch, entities_json, self._limits)
        async with self._locks[store.store_id]:
            return await self._put_checked(store, batch)

    async def _put_checked(self, store: StoreSnapshot, batch: _Batch) -> tuple[int, int]:
        store_id, load_only = store.store_id, _load_only(store)
        parents = list(batch.outside_parents())
        stored: list[StoredEntity] | None = None
        fresher = 0  # the version a retry must read at least
        for _ in range(WRITE_ATTEMPTS):
            ancestors = await self._stored_ancestors(store_id, parents, fresher, load_only)
            if len(ancestors.versions) > 1:  # parts read at different versions: read again
                fresher = max(ancestors.versions)
                continue
            await WRITE_WORK.run(_check_hierarchy, batch, ancestors.found, self._limits)
            if stored is None:  # the schema check needs no stored data: once is enough
                stored = await WRITE_WORK.run(_stored_form, batch)
                await _check_schema(batch, [e.uid for e in stored], store)
            try:
                version = await self._store.put(
                    store_id, stored, ancestors.version, require_loaded=load_only
                )
            except WriteConflictError as conflict:
                metrics.WRITE_CONFLICTS.inc()
                fresher = conflict.current
                continue
            return version, len(stored)
        raise WriteConflictError(
            fresher,
            f"the entity store changed during each of {WRITE_ATTEMPTS} attempts to check this "
            "write against it (concurrent writes); retry",
        )

    async def _stored_ancestors(
        self, store_id: str, parents: list[EntityUid], min_version: int, load_only: bool
    ) -> _Ancestors:
        """The stored closure of ``parents``, read in parts so that no read exceeds the slice
        limit merely because a write names many parents; a part that does is split, and one
        parent whose own closure is too large fails the write as it would fail decisions.
        Every part must be read at the same version for the closure to be one state."""
        found: dict[EntityUid, JsonObject] = {}
        versions: set[int] = set()
        # The first write to a never-loaded "writes" store loads it: its ancestors are just
        # absent. A "load" store must be loaded before anything is written to it.
        options = ReadOptions(min_version=min_version, require_loaded=load_only)
        parts = [parents[i : i + ANCESTOR_READ] for i in range(0, len(parents), ANCESTOR_READ)]
        while parts:
            part = parts.pop()
            try:
                read = await self._store.fetch_slice(store_id, part, options)
            except EntityDataError:
                if len(part) == 1:
                    raise
                parts += [part[: len(part) // 2], part[len(part) // 2 :]]
                continue
            found.update(read.entities)
            versions.add(read.version)
        return _Ancestors(found, frozenset(versions))

    async def delete(self, store_id: str, uids: Sequence[EntityUid]) -> tuple[int, int]:
        """Delete entities by uid; return (version, number deleted)."""
        self._check_allowed()
        store = self._policies.current.resolve(store_id)
        if not uids:
            raise RequestError("uids", "must name at least one entity")
        return await self._store.delete(store.store_id, uids, require_loaded=_load_only(store))

    async def get(
        self, store_id: str, uids: Sequence[EntityUid]
    ) -> tuple[dict[EntityUid, JsonObject], int]:
        """Read entities by uid."""
        store = self._policies.current.resolve(store_id)
        return await self._store.get(store.store_id, uids)


def _load_only(store: StoreSnapshot) -> bool:
    """Whether only a load may declare the store's data complete: writes need it loaded."""
    return store.settings.entities_source is EntitiesSource.LOAD


def _parse_batch(entities_json: str, limits: EntityLimits) -> _Batch:
    """Parse and check what needs no stored data: count, shape, uids and size. JSON values
    are counted while parsing: an entity with too many is refused before it is built."""
    entities, values = parse_entities_counted(
        entities_json, "entities_json", 64, limits.max_entity_values
    )
    if not entities:
        raise RequestError("entities_json", "must contain at least one entity")
    if len(entities) > limits.max_write_entities:
        raise RequestError("entities_json", f"holds more than {limits.max_write_entities} entities")
    index = _unique_uids(entities)
    for position, entity in enumerate(entities):
        # As stored (UTF-8); surrogatepass so that measuring never raises (input parsing
        # decides whether such text is acceptable at all).
        size = len(entity_text(entity).encode("utf-8", "surrogatepass"))
        if size > limits.max_entity_bytes:
            raise RequestError(
                f"entities_json[{position}]",
                f"is larger than {limits.max_entity_bytes} bytes of JSON",
            )
    parents = {uid: parents_of(e) for uid, e in zip(index, entities, strict=True)}
    return _Batch(entities, index, parents, values)


def _check_hierarchy(
    batch: _Batch, ancestors: Mapping[EntityUid, JsonObject], limits: EntityLimits
) -> None:
    """The hierarchy with its stored ancestors, before anything reaches Cedar."""
    graph = dict(batch.parents)
    for uid, entity in ancestors.items():
        graph.setdefault(uid, parents_of(entity))
    try:
        check_graph(graph, limits.hierarchy, judged=batch.index.keys(), count_pairs=False)
    except HierarchyProblem as exc:
        position = batch.index.get(exc.uid)
        field = "entities_json" if position is None else f"entities_json[{position}]"
        raise RequestError(field, f"{exc.uid}: {exc.problem}") from None


def _stored_form(batch: _Batch) -> list[StoredEntity]:
    """Each entity as the store keeps it, with the uids it references."""
    return [
        StoredEntity(uid, entity, entity_references(entity))
        for uid, entity in zip(batch.index, batch.entities, strict=True)
    ]


async def _check_schema(batch: _Batch, uids: Sequence[EntityUid], store: StoreSnapshot) -> None:
    """A chunk at once (the common, valid case); one by one only to name the culprit.

    Chunks check the same as the whole: duplicates and cycles, the only checks Cedar makes
    across entities, were refused before.
    """
    entities, schema = batch.entities, store.schema
    for number, (start, end) in enumerate(schema_chunks(batch.values)):
        if number:
            await give_turn()
        if cedar.entity_problem(entities[start:end], schema) is None:
            continue
        for index in range(start, end):
            problem = cedar.entity_problem([entities[index]], schema)
            if problem is not None:
                described = _describe(uids[index], problem, store.schema_shape)
                raise RequestError(f"entities_json[{index}]", described)
        raise RequestError("entities_json", "the entities do not conform to the schema together")


def schema_chunks(values: Sequence[int]) -> list[tuple[int, int]]:
    """[start, end) ranges of at most SCHEMA_CHUNK entities and SCHEMA_CHUNK_VALUES values
    (an entity of more values than that, up to max_entity_values, is a chunk of its own)."""
    chunks: list[tuple[int, int]] = []
    start, total = 0, 0
    for index, count in enumerate(values):
        if index > start and (index - start >= SCHEMA_CHUNK or total + count > SCHEMA_CHUNK_VALUES):
            chunks.append((start, index))
            start, total = index, 0
        total += count
    if start < len(values):
        chunks.append((start, len(values)))
    return chunks


def _unique_uids(entities: Sequence[JsonObject]) -> dict[EntityUid, int]:
    seen: dict[EntityUid, int] = {}
    for index, entity in enumerate(entities):
        uid = entity_uid(entity)
        if uid in seen:
            raise RequestError(f"entities_json[{index}]", f"repeats the uid of item {seen[uid]}")
        seen[uid] = index
    return seen


def _describe(uid: EntityUid, problem: cedar.EntityProblem, shape: SchemaShape | None) -> str:
    """A caller-facing reason naming the entity and attribute, without quoting values; for a
    type the schema lacks, the nearest declared one (a typo is the usual cause)."""
    if (
        problem.explanation == cedar.UNDECLARED_ENTITY_TYPE
        and shape is not None
        and uid.type not in shape.entity_types
    ):
        nearest = nearest_name(uid.type, shape.entity_types)
        hint = f"; did you mean {nearest}?" if nearest else ""
        return f"{uid}: entity type {uid.type} is not declared in the schema{hint}"
    if problem.attribute is not None:
        return f"{uid}: attribute `{problem.attribute}` {problem.explanation}"
    return f"{uid}: {problem.explanation}"
