"""Validate entity writes against limits, the parent graph and the store's schema, then apply.

A 10,000-entity write must not stall decisions. The Python work (JSON, shape, size, graph and
reference checks) runs in a worker thread. Cedar's schema check holds the GIL for a whole call,
and from a worker thread it starved the event loop for 200+ ms at a time (measured in
benchmarks/bench_loop_stall.py), so it runs on the loop instead, at most SCHEMA_CHUNK entities
and SCHEMA_CHUNK_VALUES JSON values per call (~5 ms for lending entities, at most ~20 ms for
the costliest values), giving other requests a turn between calls.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from verdict import cedar
from verdict.cedar import SchemaHandle
from verdict.cedar_json import entity_references, entity_uid, parse_entities_counted
from verdict.engine.hierarchy import HierarchyProblem, check_graph, parents_of
from verdict.engine.limits import DEFAULT_LIMITS, EntityLimits
from verdict.engine.turns import give_turn
from verdict.errors import EntityDataError, RequestError
from verdict.model import EntityUid, JsonObject
from verdict.policy.holder import PolicyHolder
from verdict.store.base import EntityStore, ReadOptions, StoredEntity

SCHEMA_CHUNK = 200  # entities per Cedar call: ~5 ms with the GIL held
# JSON values per Cedar call: Cedar converts up to ~5 us per value (bench_json_values.py), and
# 200 entities of max_entity_values each would hold the loop for a second.
SCHEMA_CHUNK_VALUES = 4_000
ANCESTOR_READ = 100  # parents per read of their stored closure
# The first write to a never-loaded store loads it; its ancestors are just absent.
_ANCESTORS = ReadOptions(require_loaded=False)


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


class EntityWrites:
    """The write path of EntityService: checks every entity, writes all or nothing."""

    def __init__(
        self, policies: PolicyHolder, store: EntityStore, limits: EntityLimits = DEFAULT_LIMITS
    ) -> None:
        self._policies = policies
        self._store = store
        self._limits = limits

    async def put(self, store_id: str, entities_json: str) -> tuple[int, int]:
        """Validate and upsert a Cedar JSON entity array; return (version, count)."""
        store = self._policies.current.resolve(store_id)
        batch = await asyncio.to_thread(_parse_batch, entities_json, self._limits)
        ancestors = await self._stored_ancestors(store.store_id, list(batch.outside_parents()))
        stored = await asyncio.to_thread(_validate, batch, ancestors, self._limits)
        await _check_schema(batch, [e.uid for e in stored], store.schema)
        version = await self._store.put(store.store_id, stored)
        return version, len(stored)

    async def _stored_ancestors(
        self, store_id: str, parents: list[EntityUid]
    ) -> dict[EntityUid, JsonObject]:
        """The stored closure of ``parents``, read in parts so that no read exceeds the slice
        limit merely because a write names many parents; a part that does is split, and one
        parent whose own closure is too large fails the write as it would fail decisions."""
        found: dict[EntityUid, JsonObject] = {}
        parts = [parents[i : i + ANCESTOR_READ] for i in range(0, len(parents), ANCESTOR_READ)]
        while parts:
            part = parts.pop()
            try:
                found.update((await self._store.fetch_slice(store_id, part, _ANCESTORS)).entities)
            except EntityDataError:
                if len(part) == 1:
                    raise
                parts += [part[: len(part) // 2], part[len(part) // 2 :]]
        return found

    async def delete(self, store_id: str, uids: Sequence[EntityUid]) -> tuple[int, int]:
        """Delete entities by uid; return (version, number deleted)."""
        store = self._policies.current.resolve(store_id)
        if not uids:
            raise RequestError("uids", "must name at least one entity")
        return await self._store.delete(store.store_id, uids)

    async def get(
        self, store_id: str, uids: Sequence[EntityUid]
    ) -> tuple[dict[EntityUid, JsonObject], int]:
        """Read entities by uid."""
        store = self._policies.current.resolve(store_id)
        return await self._store.get(store.store_id, uids)


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
        size = len(json.dumps(entity, ensure_ascii=False).encode("utf-8", "surrogatepass"))
        if size > limits.max_entity_bytes:
            raise RequestError(
                f"entities_json[{position}]",
                f"is larger than {limits.max_entity_bytes} bytes of JSON",
            )
    parents = {uid: parents_of(e) for uid, e in zip(index, entities, strict=True)}
    return _Batch(entities, index, parents, values)


def _validate(
    batch: _Batch, ancestors: Mapping[EntityUid, JsonObject], limits: EntityLimits
) -> list[StoredEntity]:
    """The hierarchy with its stored ancestors (before anything reaches Cedar), then the
    stored form of each entity."""
    graph = dict(batch.parents)
    for uid, entity in ancestors.items():
        graph.setdefault(uid, parents_of(entity))
    try:
        check_graph(graph, limits.hierarchy, judged=batch.index.keys(), count_pairs=False)
    except HierarchyProblem as exc:
        position = batch.index.get(exc.uid)
        field = "entities_json" if position is None else f"entities_json[{position}]"
        raise RequestError(field, f"{exc.uid}: {exc.problem}") from None
    uids = list(batch.index)
    return [
        StoredEntity(uid, entity, entity_references(entity))
        for uid, entity in zip(uids, batch.entities, strict=True)
    ]


async def _check_schema(
    batch: _Batch, uids: Sequence[EntityUid], schema: SchemaHandle | None
) -> None:
    """A chunk at once (the common, valid case); one by one only to name the culprit.

    Chunks check the same as the whole: duplicates and cycles, the only checks Cedar makes
    across entities, were refused before.
    """
    entities = batch.entities
    for number, (start, end) in enumerate(schema_chunks(batch.values)):
        if number:
            await give_turn()
        if cedar.entity_problem(entities[start:end], schema) is None:
            continue
        for index in range(start, end):
            problem = cedar.entity_problem([entities[index]], schema)
            if problem is not None:
                raise RequestError(f"entities_json[{index}]", _describe(uids[index], problem))
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


def _describe(uid: EntityUid, problem: cedar.EntityProblem) -> str:
    """A caller-facing reason naming the entity and attribute, without quoting values."""
    if problem.attribute is not None:
        return f"{uid}: attribute `{problem.attribute}` {problem.explanation}"
    return f"{uid}: {problem.explanation}"
