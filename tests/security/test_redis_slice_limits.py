"""Issues 14.4 and 14.5 (Redis side): the slice limit holds on cache hits; floods of unknown
uids cannot flush the cache."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.integration.redis_apps import UMA_VIEW, redis_app
from tests.redis_support import RedisProcess, redis_fixture  # noqa: F401 (fixture)
from tests.security.test_redis_namespaces import decide_counting_trips
from tests.security.test_redis_read_your_writes import cached_decision
from tests.stores import entity, write_store
from verdict.app import build_app
from verdict.cedar_json import entity_references
from verdict.config import Settings
from verdict.errors import EntityDataError
from verdict.model import AuthorizationRequest, Decision, EntityUid
from verdict.store.base import StoredEntity
from verdict.store.bulk import load_entities
from verdict.store.redis_store import RedisEntityStore

TOP = 160  # Group::"0" .. Group::"160": a chain of 161 groups
LIMIT = 100


def group(i: int) -> EntityUid:
    return EntityUid("Group", str(i))


def chain_entities() -> list[StoredEntity]:
    """User u in the chain's bottom group; the chain is cut between groups 79 and 80."""
    items = [entity("User", "u", parents=[("Group", "0")])]
    for i in range(TOP + 1):
        parents = [("Group", str(i + 1))] if i < TOP and i != 79 else []
        items.append(entity("Group", str(i), parents=parents))
    return [
        StoredEntity(EntityUid(e["uid"]["type"], e["uid"]["id"]), e, entity_references(e))
        for e in items
    ]


async def test_a_warmed_cache_does_not_let_a_slice_past_the_limit(
    tmp_path: Path, redis: RedisProcess
) -> None:
    """Warming the cache with parts of a 162-entity chain, each under a limit of 100, does not
    let the whole chain through a cache hit: the decision fails closed as a read would."""
    policy = f'@id("top") permit(principal in Group::"{TOP}", action, resource);'
    write_store(tmp_path, "chain", {"p.cedar": policy})
    app = build_app(Settings(stores=tmp_path, redis_url=redis.url, max_slice_entities=LIMIT))
    store = app.entities
    assert isinstance(store, RedisEntityStore)
    assert app.listener is not None
    app.listener.start()
    try:
        await asyncio.wait_for(app.listener.subscribed.wait(), 10)
        await load_entities(store, "chain", chain_entities())
        # 81 entities, and the request's action and resource (known missing).
        await store.fetch_slice(
            "chain", {group(80), EntityUid("Action", "a"), EntityUid("Doc", "d")}
        )
        await store.fetch_slice("chain", {EntityUid("User", "u")})  # 81 entities
        linked = entity("Group", "79", parents=[("Group", "80")])
        version, _ = await app.writes.put("chain", json.dumps([linked]))
        await store.fetch_slice("chain", {group(79)})  # 82 entities, the last piece
        for _ in range(500):  # until the listener has settled these reads
            if store.cache.version("chain") >= version:
                break
            await asyncio.sleep(0.002)
        request = AuthorizationRequest(
            EntityUid("User", "u"),
            EntityUid("Action", "a"),
            EntityUid("Doc", "d"),
            store_id="chain",
        )
        with pytest.raises(EntityDataError):
            await app.authorizer.authorize(request)
    finally:
        await app.listener.stop()
        await store.close()


async def test_unknown_uids_named_by_callers_do_not_flush_the_cache(redis: RedisProcess) -> None:
    """Thousands of distinct uids the store does not hold are remembered apart, in a bounded
    LRU of their own: the entities real decisions need stay cached."""
    async with redis_app(redis.url, cache_max_entries=500) as app:
        store = app.entities
        assert isinstance(store, RedisEntityStore)
        assert await cached_decision(app, UMA_VIEW.request) is Decision.ALLOW
        for start in range(0, 20_000, 5_000):
            unknown = {EntityUid("User", f"ghost-{i}") for i in range(start, start + 5_000)}
            assert (await store.fetch_slice("lending", unknown)).missing == unknown
        assert await decide_counting_trips(app, UMA_VIEW.request) == (Decision.ALLOW, 0)
        assert len(store.cache) <= 500 + app.settings.cache_max_missing
