"""Validate entity writes against the store's schema and parent graph, then apply them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from verdict import cedar
from verdict.cedar import SchemaHandle
from verdict.cedar_json import entity_references, entity_uid, parse_entities_json, parse_uid
from verdict.errors import RequestError
from verdict.model import EntityUid, JsonObject
from verdict.policy.holder import PolicyHolder
from verdict.store.base import EntityStore, ReadOptions, StoredEntity

MAX_WRITE_ENTITIES = 10_000
_ANCESTORS = ReadOptions(require_loaded=False)


class EntityWrites:
    """The write path of EntityService: checks every entity, writes all or nothing."""

    def __init__(self, policies: PolicyHolder, store: EntityStore) -> None:
        self._policies = policies
        self._store = store

    async def put(self, store_id: str, entities_json: str) -> tuple[int, int]:
        """Validate and upsert a Cedar JSON entity array; return (version, count)."""
        store = self._policies.current.resolve(store_id)
        entities = parse_entities_json(entities_json, max_depth=64)
        if not entities:
            raise RequestError("entities_json", "must contain at least one entity")
        if len(entities) > MAX_WRITE_ENTITIES:
            raise RequestError("entities_json", f"holds more than {MAX_WRITE_ENTITIES} entities")
        uids = _unique_uids(entities)
        _check_schema(entities, uids, store.schema)
        await self._check_acyclic(store.store_id, dict(zip(uids, entities, strict=True)))
        stored = [
            StoredEntity(uid, entity, entity_references(entity))
            for uid, entity in zip(uids, entities, strict=True)
        ]
        version = await self._store.put(store.store_id, stored)
        return version, len(stored)

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

    async def _check_acyclic(self, store_id: str, new: Mapping[EntityUid, JsonObject]) -> None:
        """Reject a write whose parents, together with stored ancestors, form a cycle."""
        parents = {uid: _parents(entity) for uid, entity in new.items()}
        outside = {p for ps in parents.values() for p in ps} - set(new)
        if outside:
            # The first write to a never-loaded store loads it; its ancestors are just absent.
            ancestors = await self._store.fetch_slice(store_id, outside, _ANCESTORS)
            for uid, entity in ancestors.entities.items():
                parents.setdefault(uid, _parents(entity))
        for index, uid in enumerate(new):
            if _reaches(parents, start=uid):
                raise RequestError(
                    f"entities_json[{index}]", f"{uid}: its parents form a cycle back to itself"
                )


def _check_schema(
    entities: Sequence[JsonObject], uids: Sequence[EntityUid], schema: SchemaHandle | None
) -> None:
    """All entities at once (the common, valid case); one by one only to name the culprit."""
    if cedar.entity_problem(entities, schema) is None:
        return
    for index, entity in enumerate(entities):
        problem = cedar.entity_problem([entity], schema)
        if problem is not None:
            raise RequestError(f"entities_json[{index}]", _describe(uids[index], problem))
    raise RequestError("entities_json", "the entities do not conform to the schema together")


def _unique_uids(entities: Sequence[JsonObject]) -> list[EntityUid]:
    seen: dict[EntityUid, int] = {}
    for index, entity in enumerate(entities):
        uid = entity_uid(entity)
        if uid in seen:
            raise RequestError(f"entities_json[{index}]", f"repeats the uid of item {seen[uid]}")
        seen[uid] = index
    return list(seen)


def _parents(entity: JsonObject) -> list[EntityUid]:
    return [u for p in entity.get("parents", []) if (u := parse_uid(p)) is not None]


def _reaches(parents: Mapping[EntityUid, list[EntityUid]], start: EntityUid) -> bool:
    """Whether ``start`` is its own ancestor."""
    stack, seen = list(parents.get(start, [])), set()
    while stack:
        uid = stack.pop()
        if uid == start:
            return True
        if uid not in seen:
            seen.add(uid)
            stack.extend(parents.get(uid, []))
    return False


def _describe(uid: EntityUid, problem: cedar.EntityProblem) -> str:
    """A caller-facing reason naming the entity and attribute, without quoting values."""
    if problem.attribute is not None:
        return f"{uid}: attribute `{problem.attribute}` {problem.explanation}"
    return f"{uid}: {problem.explanation}"
