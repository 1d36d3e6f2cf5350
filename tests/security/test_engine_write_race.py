"""Concurrent entity writes never store a parent cycle, within one replica or across replicas."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
from prometheus_client import REGISTRY

from tests.redis_support import RedisProcess, redis_fixture  # noqa: F401
from tests.stores import entity, write_store
from verdict.app import App, build_app
from verdict.config import Settings
from verdict.engine.entity_writes import WRITE_ATTEMPTS, EntityWrites
from verdict.errors import RequestError, VerdictError, WriteConflictError
from verdict.model import EntityUid, JsonObject
from verdict.store.base import DEFAULT_READ, EntitySlice, EntityStore, ReadOptions, StoredEntity
from verdict.store.memory import MemoryEntityStore
from verdict.store.redis_store import RedisEntityStore
from verdict.transport.status import status_for

ROUNDS = 100
G_STORE: dict[str, str | list[object]] = {
    "p.cedar": '@id("top") permit(principal in G::"top", action, resource);\n',
    "entities.json": [],
    # Filled by the racing writes themselves (no `verdict entities load` in this test).
    "store.toml": 'entities_source = "writes"\n',
}


@asynccontextmanager
async def replica(stores: Path, url: str) -> AsyncIterator[App]:
    """One Verdict replica on the Redis at ``url``, listening for invalidations."""
    app = build_app(Settings(stores=stores, redis_url=url, listen="127.0.0.1:0"))
    assert isinstance(app.entities, RedisEntityStore)
    assert app.listener is not None
    await app.entities.prepare()
    app.listener.start()
    await asyncio.wait_for(app.listener.subscribed.wait(), 10)
    try:
        yield app
    finally:
        await app.listener.stop()
        await app.entities.close()


def link(child: str, parent: str) -> str:
    return json.dumps([entity("G", child, parents=[("G", parent)])])


def conflicts() -> float:
    """Writes re-checked so far in this process (verdict_entity_write_conflicts_total)."""
    return REGISTRY.get_sample_value("verdict_entity_write_conflicts_total") or 0.0


async def stored_cycle(app: App, ids: Sequence[str]) -> list[str] | None:
    """A parent cycle among the stored ``G::<id>`` entities, if any (the graph is tiny)."""
    stored, _ = await app.writes.get("s", [EntityUid("G", i) for i in ids])
    parents = {u.id: [p["id"] for p in e["parents"]] for u, e in stored.items()}
    for start in parents:
        path, node = [start], start
        while parents.get(node):
            node = parents[node][0]
            if node in path:
                return [*path, node]
            path.append(node)
    return None


async def test_two_replicas_racing_opposite_parents_never_store_a_cycle(
    tmp_path: Path, redis: RedisProcess
) -> None:
    """G::a -> G::b through one replica and G::b -> G::a through another, sent together many
    times: at most one of each pair is stored, the other is refused, never a cycle."""
    write_store(tmp_path, "s", G_STORE)
    before = conflicts()
    async with replica(tmp_path, redis.url) as one, replica(tmp_path, redis.url) as two:
        for round_ in range(ROUNDS):
            a, b = f"a{round_}", f"b{round_}"
            results = await asyncio.gather(
                one.writes.put("s", link(a, b)),
                two.writes.put("s", link(b, a)),
                return_exceptions=True,
            )
            refused = [r for r in results if isinstance(r, BaseException)]
            assert len(refused) == 1, f"round {round_}: {results}"
            assert isinstance(refused[0], RequestError | WriteConflictError), refused[0]
            assert await stored_cycle(one, [a, b]) is None
    # The race was run, not avoided: writes were checked at a version that then moved.
    assert conflicts() > before


class Interfering:
    """A real store whose ancestor reads are each followed by another replica's write, as if
    that replica's write landed between this write's check and its put."""

    def __init__(self, store: EntityStore, writes: list[tuple[EntityWrites, str]]) -> None:
        self.store = store
        self.writes = writes  # (other replica's writes, entities_json), one per read

    async def fetch_slice(
        self, store_id: str, roots: Collection[EntityUid], options: ReadOptions = DEFAULT_READ
    ) -> EntitySlice:
        found = await self.store.fetch_slice(store_id, roots, options)
        if self.writes:
            other, text = self.writes.pop(0)
            await other.put(store_id, text)
        return found

    async def put(
        self,
        store_id: str,
        entities: Sequence[StoredEntity],
        expected_version: int | None = None,
        *,
        require_loaded: bool = False,
    ) -> int:
        return await self.store.put(
            store_id, entities, expected_version, require_loaded=require_loaded
        )

    async def delete(
        self, store_id: str, uids: Collection[EntityUid], *, require_loaded: bool = False
    ) -> tuple[int, int]:
        return await self.store.delete(store_id, uids, require_loaded=require_loaded)

    async def get(
        self, store_id: str, uids: Sequence[EntityUid]
    ) -> tuple[dict[EntityUid, JsonObject], int]:
        return await self.store.get(store_id, uids)

    async def prepare(self) -> None:
        await self.store.prepare()

    async def close(self) -> None:
        await self.store.close()


async def test_a_write_that_lost_the_race_is_checked_again(
    tmp_path: Path, redis: RedisProcess
) -> None:
    """A write whose ancestors changed before its put is re-read and refused for the cycle
    the other replica's write now makes, on the exact interleaving of the attack."""
    write_store(tmp_path, "s", G_STORE)
    before = conflicts()
    async with replica(tmp_path, redis.url) as one, replica(tmp_path, redis.url) as two:
        racing = Interfering(one.entities, [(two.writes, link("b", "a"))])
        writes = EntityWrites(one.policies, racing)
        with pytest.raises(RequestError) as info:
            await writes.put("s", link("a", "b"))
        assert info.value.field == "entities_json[0]"
        assert "cycle" in info.value.problem
        assert await stored_cycle(one, ["a", "b"]) is None
    assert conflicts() == before + 1


async def test_a_write_that_keeps_losing_is_aborted(tmp_path: Path, redis: RedisProcess) -> None:
    """Checked WRITE_ATTEMPTS times against a store that moved each time, a write is refused
    with ABORTED and writes nothing; one attempt fewer of interference and it succeeds."""
    write_store(tmp_path, "s", G_STORE)
    async with replica(tmp_path, redis.url) as one, replica(tmp_path, redis.url) as two:
        noise = [(two.writes, link(f"n{i}", "top")) for i in range(WRITE_ATTEMPTS)]
        with pytest.raises(WriteConflictError) as info:
            await EntityWrites(one.policies, Interfering(one.entities, noise)).put(
                "s", link("a", "top")
            )
        code, message = status_for(info.value)
        assert code is grpc.StatusCode.ABORTED
        assert "retry" in message
        assert (await one.writes.get("s", [EntityUid("G", "a")]))[0] == {}
        noise = [(two.writes, link(f"m{i}", "top")) for i in range(WRITE_ATTEMPTS - 1)]
        await EntityWrites(one.policies, Interfering(one.entities, noise)).put(
            "s", link("a", "top")
        )
        assert EntityUid("G", "a") in (await one.writes.get("s", [EntityUid("G", "a")]))[0]


async def test_both_stores_refuse_a_put_at_a_moved_version(
    tmp_path: Path, redis: RedisProcess
) -> None:
    """The writer contract: put at an expected version that moved raises WriteConflictError
    carrying the current version and writes nothing, in memory and on Redis alike."""
    write_store(tmp_path, "s", G_STORE)
    item = StoredEntity(EntityUid("G", "x"), entity("G", "x"), frozenset())
    async with replica(tmp_path, redis.url) as on_redis:
        for store in (MemoryEntityStore({"s": {}}), on_redis.entities):
            version = await store.put("s", [item])
            with pytest.raises(WriteConflictError) as info:
                await store.put("s", [item], expected_version=version - 1)
            assert info.value.current == version
            assert await store.put("s", [item], expected_version=version) > version


async def test_one_replica_serialises_writes_to_a_store(tmp_path: Path) -> None:
    """On the memory store, opposite parents written together many times never both succeed,
    and the per-store lock orders them so that none even needs a second check."""
    write_store(tmp_path, "s", G_STORE)
    app = build_app(Settings(stores=tmp_path, listen="127.0.0.1:0"))
    before = conflicts()
    for round_ in range(ROUNDS):
        a, b = f"a{round_}", f"b{round_}"
        results = await asyncio.gather(
            app.writes.put("s", link(a, b)),
            app.writes.put("s", link(b, a)),
            return_exceptions=True,
        )
        assert sum(isinstance(r, VerdictError) for r in results) == 1, results
        assert await stored_cycle(app, [a, b]) is None
    assert conflicts() == before
