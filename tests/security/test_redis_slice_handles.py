"""Parsed handles of hot cached Redis slices: never served once their entries changed."""

from __future__ import annotations

import asyncio
import json

from tests.integration.redis_apps import UMA_SUSPENDED, UMA_VIEW, redis_app
from tests.redis_support import RedisProcess
from verdict.app import App
from verdict.model import AuthorizationRequest, AuthorizationResult
from verdict.store.redis_store import RedisEntityStore


def store_of(app: App) -> RedisEntityStore:
    """The app's Redis store."""
    assert isinstance(app.entities, RedisEntityStore)
    return app.entities


async def hit_with_handle(app: App, request: AuthorizationRequest) -> AuthorizationResult:
    """Decide until the answer is a cache hit evaluated with an already parsed handle."""
    store = store_of(app)
    for _ in range(1000):
        trips, parsed = store.round_trips, store.slice_handles.parsed
        result = await app.authorizer.authorize(request)
        if store.round_trips == trips and store.slice_handles.parsed == parsed:
            return result
        await asyncio.sleep(0.005)
    raise AssertionError("the decision never reused a parsed handle")


async def test_a_handle_is_dropped_when_another_replica_writes(redis: RedisProcess) -> None:
    """Replica A reuses a parsed slice until replica B's write reaches it; from then on A's
    answers reflect the write (a new handle is parsed) and never the old handle's."""
    async with redis_app(redis.url) as a, redis_app(redis.url, load=False) as b:
        assert (await hit_with_handle(a, UMA_VIEW.request)).allowed
        parsed = store_of(a).slice_handles.parsed
        version, _ = await b.writes.put("lending", json.dumps([UMA_SUSPENDED]))
        for _ in range(1000):  # until A has applied the invalidation
            result = await a.authorizer.authorize(UMA_VIEW.request)
            if result.entity_version >= version:
                break
            assert result.allowed  # the old state, at its own old version
            await asyncio.sleep(0.005)
        assert not result.allowed
        denied = await hit_with_handle(a, UMA_VIEW.request)
        assert not denied.allowed
        assert denied.entity_version >= version
        assert store_of(a).slice_handles.parsed > parsed


async def test_a_reused_handle_answers_like_the_listed_slice(redis: RedisProcess) -> None:
    """With and without slice handles, replicas give the same answers to the lending cases."""
    async with (
        redis_app(redis.url) as with_handles,
        redis_app(redis.url, load=False, slice_handle_cache_entries=0) as without,
    ):
        from tests.cases import lending_cases

        for case in lending_cases():
            one = await hit_with_handle(with_handles, case.request)
            other = await without.authorizer.authorize(case.request)
            assert (one.decision, one.determining_policies, one.errors) == (
                other.decision,
                other.determining_policies,
                other.errors,
            )
        assert len(store_of(without).slice_handles) == 0


async def test_the_handle_cache_is_bounded(redis: RedisProcess) -> None:
    """No more handles are kept than slice_handle_cache_entries."""
    async with redis_app(redis.url, slice_handle_cache_entries=3) as app:
        from tests.cases import lending_cases

        for case in lending_cases():
            await hit_with_handle(app, case.request)
        assert len(store_of(app).slice_handles) <= 3
