"""Issue 7: Cedar's empty entity id (``User::""``) is a uid like any other in the Redis layout."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import pytest

from tests.integration.redis_apps import UMA_VIEW, redis_app
from tests.redis_support import RedisProcess, redis_fixture  # noqa: F401 (fixture)
from tests.security.test_redis_namespaces import decide_counting_trips
from tests.security.test_redis_read_your_writes import cached_decision
from tests.stores import entity
from verdict.model import Decision, EntityUid
from verdict.store.redis_keys import StoreKeys, key_uid, uid_key
from verdict.store.redis_store import RedisEntityStore

NOBODY = EntityUid("Employee", "")


def test_the_empty_id_has_a_uid_key_and_back() -> None:
    """``Type::""`` round-trips through its uid-key; a uid-key without a type is refused."""
    assert key_uid(uid_key(NOBODY)) == NOBODY
    for bad in ('["",""]', '["","x"]', '["User"]', '"User"'):
        with pytest.raises(ValueError, match="not a uid key"):
            key_uid(bad)


async def test_a_slice_naming_the_empty_id_reads_it_as_missing(redis: RedisProcess) -> None:
    """A request naming an unstored ``Employee::""`` gets a slice that reports it missing,
    not a corrupt-data failure."""
    async with redis_app(redis.url) as app:
        store = app.entities
        assert isinstance(store, RedisEntityStore)
        found = await store.fetch_slice("lending", {NOBODY})
        assert (found.entities, found.missing) == ({}, frozenset({NOBODY}))


async def test_an_invalidation_naming_the_empty_id_drops_only_that_entry(
    redis: RedisProcess,
) -> None:
    """A write to ``Employee::""`` announced by another replica drops that uid alone: it is
    not mistaken for an unreadable message that empties the whole cache."""
    async with redis_app(redis.url) as app:
        assert await cached_decision(app, UMA_VIEW.request) is Decision.ALLOW
        keys = StoreKeys.of("lending")
        version = redis.cli("GET", keys.version).strip()
        redis.cli("PUBLISH", keys.channel, f"{version}\n{uid_key(NOBODY)}")
        await asyncio.sleep(0.1)  # delivery is sub-millisecond; this is generous
        assert await decide_counting_trips(app, UMA_VIEW.request) == (Decision.ALLOW, 0)


async def test_an_entity_with_the_empty_id_is_written_read_and_decided(
    redis: RedisProcess,
) -> None:
    """``Employee::""`` written through EntityService is read back, found in slices (also as
    a parent of another entity), and decided like any other uid."""
    nobody = entity(
        "Employee",
        "",
        {
            "name": "No One",
            "partner": {"__entity": {"type": "Partner", "id": "first-river-bank"}},
            "department": "credit",
            "approval_limit": 0,
            "suspended": True,
        },
        parents=[("Role", "underwriter")],
    )
    async with redis_app(redis.url) as app:
        store = app.entities
        assert isinstance(store, RedisEntityStore)
        await app.writes.put("lending", json.dumps([nobody]))
        found, _ = await app.writes.get("lending", [NOBODY])
        assert found == {NOBODY: nobody}
        sliced = await store.fetch_slice("lending", {NOBODY})
        assert sliced.entities[NOBODY] == nobody
        assert EntityUid("Role", "underwriter") in sliced.entities
        request = replace(UMA_VIEW.request, principal=NOBODY)
        result = await app.authorizer.authorize(request)
        assert (result.decision, result.determining_policies) == (
            Decision.DENY,
            ("forbid-suspended-principal",),
        )
