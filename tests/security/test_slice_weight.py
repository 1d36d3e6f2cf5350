"""Issue 14.4 (slice weight): one evaluation's stored entity slice is bounded in bytes and in JSON
values, not only in entities, on the memory store, on a Redis read and on a Redis cache hit."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tests.redis_support import RedisProcess, redis_fixture  # noqa: F401 (fixture)
from tests.stores import entity, write_store
from verdict.app import App, build_app
from verdict.cedar_json import entity_references
from verdict.config import Settings
from verdict.engine.authorizer import _Prepared, _shared_groups
from verdict.engine.limits import EntityLimits
from verdict.errors import EntityDataError
from verdict.model import AuthorizationRequest, Decision, EntityUid
from verdict.store.base import EntitySlice, StoredEntity
from verdict.store.bulk import load_entities
from verdict.store.redis_store import RedisEntityStore
from verdict.store.weight import Weight

# Small limits keep the tests fast; each heavy group weighs 60% of the limit it tests.
MAX_BYTES, MAX_VALUES = 20_000, 2_000
PADDING: dict[str, Any] = {"bytes": {"note": "x" * 12_000}, "values": {"tags": [0] * 1_200}}
POLICY = '@id("top") permit(principal in Group::"g2", action, resource);'
TOO_LARGE = "entity slice exceeds the configured maximum"


def chain(kind: str, *, linked: bool = True) -> list[dict[str, Any]]:
    """User u in g0, g0 in g1, g1 in g2 (unless not ``linked``); g0 and g2 are heavy, so u's
    slice weighs 120% of the limit while g1's, and u's without g2, stay under it. User light
    is in no group: its slice of one entity is decided (DENY)."""
    pad = PADDING[kind]
    return [
        entity("User", "u", parents=[("Group", "g0")]),
        entity("User", "light"),
        entity("Group", "g0", pad, parents=[("Group", "g1")]),
        entity("Group", "g1", parents=[("Group", "g2")] if linked else []),
        entity("Group", "g2", pad),
    ]


def ask(principal: str) -> AuthorizationRequest:
    return AuthorizationRequest(
        EntityUid("User", principal), EntityUid("Action", "a"), EntityUid("Doc", "d"), store_id="w"
    )


def stored(items: list[dict[str, Any]]) -> list[StoredEntity]:
    return [
        StoredEntity(EntityUid(e["uid"]["type"], e["uid"]["id"]), e, entity_references(e))
        for e in items
    ]


@pytest.mark.parametrize("kind", ["bytes", "values"])
async def test_memory_store_refuses_a_slice_over_the_weight_limits(
    tmp_path: Path, kind: str
) -> None:
    """On the memory store a slice over max_slice_bytes or max_slice_values (each entity well
    under both) fails closed like an over-count slice, and a light slice is still decided."""
    write_store(tmp_path, "w", {"p.cedar": POLICY, "entities.json": chain(kind)})
    roomy = build_app(Settings(stores=tmp_path))
    assert (await roomy.authorizer.authorize(ask("u"))).decision is Decision.ALLOW
    app = build_app(
        Settings(stores=tmp_path, max_slice_bytes=MAX_BYTES, max_slice_values=MAX_VALUES)
    )
    with pytest.raises(EntityDataError, match=TOO_LARGE):
        await app.authorizer.authorize(ask("u"))
    assert (await app.authorizer.authorize(ask("light"))).decision is Decision.DENY


@pytest.mark.parametrize("kind", ["bytes", "values"])
async def test_default_limits_refuse_a_heavy_slice_of_light_entities(
    tmp_path: Path, kind: str
) -> None:
    """With the default settings, 20 groups each under the per-entity limits (60 KB of text,
    or 900 values) make a slice over 1 MiB or over 16,000 values: refused, not decided."""
    pad = {"note": "x" * 60_000} if kind == "bytes" else {"tags": [0] * 900}
    groups = [entity("Group", f"h{i}", pad) for i in range(20)]
    user = entity("User", "u", parents=[("Group", f"h{i}") for i in range(20)])
    write_store(tmp_path, "w", {"p.cedar": POLICY, "entities.json": [user, *groups]})
    app = build_app(Settings(stores=tmp_path))
    with pytest.raises(EntityDataError, match=TOO_LARGE):
        await app.authorizer.authorize(ask("u"))


async def redis_weight_app(tmp_path: Path, redis: RedisProcess) -> App:
    write_store(tmp_path, "w", {"p.cedar": POLICY})
    app = build_app(
        Settings(
            stores=tmp_path,
            redis_url=redis.url,
            max_slice_bytes=MAX_BYTES,
            max_slice_values=MAX_VALUES,
            # The cache answers only within the grace of its last proof from Redis; a slow CI
            # machine must not turn the cache hit this test needs into a read.
            cache_grace_seconds=60.0,
        )
    )
    assert isinstance(app.entities, RedisEntityStore)
    assert app.listener is not None
    app.listener.start()
    await asyncio.wait_for(app.listener.subscribed.wait(), 10)
    return app


@pytest.mark.parametrize("kind", ["bytes", "values"])
async def test_redis_slice_script_refuses_a_slice_over_the_weight_limits(
    tmp_path: Path, redis: RedisProcess, kind: str
) -> None:
    """A cache miss on Redis: the slice script refuses a slice over max_slice_bytes or
    max_slice_values (the same error as over max_slice_entities); a light slice is decided."""
    app = await redis_weight_app(tmp_path, redis)
    store = app.entities
    assert isinstance(store, RedisEntityStore)
    assert app.listener is not None
    try:
        await load_entities(store, "w", stored(chain(kind)))
        before = store.round_trips
        with pytest.raises(EntityDataError, match=TOO_LARGE):
            await app.authorizer.authorize(ask("u"))
        assert store.round_trips == before + 1  # refused by the script, not by the cache
        assert (await app.authorizer.authorize(ask("light"))).decision is Decision.DENY
    finally:
        await app.listener.stop()
        await store.close()


async def settled(store: RedisEntityStore, version: int) -> None:
    """Wait until the listener has applied every invalidation up to ``version``."""
    for _ in range(2_500):
        if store.cache.version("w") >= version:
            return
        await asyncio.sleep(0.002)
    pytest.fail("the cache never settled")


@pytest.mark.parametrize("kind", ["bytes", "values"])
async def test_a_warmed_cache_does_not_let_a_heavy_slice_through(
    tmp_path: Path, redis: RedisProcess, kind: str
) -> None:
    """Cache entries read in pieces each under the weight limits do not add up to a heavy
    slice on a cache hit: the decision fails closed (no Redis call) as a read would."""
    app = await redis_weight_app(tmp_path, redis)
    store = app.entities
    assert isinstance(store, RedisEntityStore)
    assert app.listener is not None
    try:
        loaded = await load_entities(store, "w", stored(chain(kind, linked=False)))
        await settled(store, loaded)  # else the load's reset may drop what is read next
        request = ask("u")
        await store.fetch_slice("w", {request.principal, request.action, request.resource})
        await store.fetch_slice("w", {EntityUid("Group", "g2")})
        linked = chain(kind)[3]
        version, _ = await app.writes.put("w", json.dumps([linked]))
        await store.fetch_slice("w", {EntityUid("Group", "g1")})  # g1 and g2: 60%
        await settled(store, version)
        before = store.round_trips
        with pytest.raises(EntityDataError, match=TOO_LARGE):
            await app.authorizer.authorize(request)
        assert store.round_trips == before  # the cache answered, and refused
        assert (await app.authorizer.authorize(ask("light"))).decision is Decision.DENY
    finally:
        await app.listener.stop()
        await store.close()


def test_a_batch_union_is_split_by_weight(tmp_path: Path) -> None:
    """Batch items whose stored slices are each under the weight limits but together over them
    are evaluated in separate Cedar calls; a shared entity is weighed once per union."""
    write_store(tmp_path, "w", {"p.cedar": POLICY})
    store = build_app(Settings(stores=tmp_path)).policies.current.resolve("w")
    shared = EntityUid("Group", "shared")

    def item(name: str, bytes_: int, values: int) -> _Prepared:
        uid = EntityUid("User", name)
        weights = {uid: Weight(bytes_, values), shared: Weight(100, 10)}
        entities = {u: entity(u.type, u.id) for u in weights}
        return _Prepared(ask(name), store, EntitySlice(entities, 1, weights=weights))

    limits = EntityLimits(max_slice_bytes=MAX_BYTES, max_slice_values=MAX_VALUES)
    heavy_bytes = [item(f"b{i}", 12_000, 10) for i in range(3)]
    assert _shared_groups(heavy_bytes, limits) == [[0], [1], [2]]
    heavy_values = [item(f"v{i}", 100, 1_200) for i in range(3)]
    assert _shared_groups(heavy_values, limits) == [[0], [1], [2]]
    light = [item(f"l{i}", 6_000, 600) for i in range(3)]  # 18,100 bytes, 1,810 values
    assert _shared_groups(light, limits) == [[0, 1, 2]]
