"""Issue 14.3: a revocation is never served stale longer than the grace, stall or silence."""

from __future__ import annotations

import asyncio
import json
import threading
import time

from structlog.testing import capture_logs

from tests.integration.redis_apps import UMA_SUSPENDED, UMA_VIEW, redis_app
from tests.redis_support import RedisProcess, SubscriberDelay
from tests.security.test_redis_read_your_writes import cached_decision
from verdict.cedar_json import entity_references
from verdict.config import Settings
from verdict.model import Decision, EntityUid
from verdict.store.base import StoredEntity
from verdict.store.entity_cache import EntityCache
from verdict.store.redis_connect import make_client
from verdict.store.redis_store import RedisEntityStore

GRACE = 0.5


def suspend_uma_from_another_replica(url: str) -> None:
    """Write the suspension through a store of its own, on an event loop of its own."""

    async def write() -> None:
        store = RedisEntityStore(make_client(Settings(redis_url=url)), EntityCache(0, 0))
        uma = StoredEntity(
            EntityUid("Employee", "uma"), UMA_SUSPENDED, entity_references(UMA_SUSPENDED)
        )
        try:
            await store.put("lending", [uma])
        finally:
            await store.close()

    asyncio.run(write())


async def test_after_a_stall_the_first_decision_is_not_served_stale(redis: RedisProcess) -> None:
    """The event loop blocks longer than the grace while another replica suspends uma; the
    first decision after the stall is DENY, and the queued invalidation is applied, not lost."""
    async with redis_app(redis.url, cache_grace_seconds=GRACE) as app:
        assert await cached_decision(app, UMA_VIEW.request) is Decision.ALLOW
        writer = threading.Thread(target=suspend_uma_from_another_replica, args=(redis.url,))
        with capture_logs() as logs:
            writer.start()
            # The whole event loop stalls (deliberately); the write lands meanwhile.
            time.sleep(2 * GRACE + 0.5)  # noqa: ASYNC251
            writer.join(10)
            assert not writer.is_alive()
            first = await app.authorizer.authorize(UMA_VIEW.request)
            assert first.decision is Decision.DENY
            assert await cached_decision(app, UMA_VIEW.request) is Decision.DENY
        assert "invalidation_lost" not in [entry["event"] for entry in logs]


async def test_a_silent_channel_serves_a_revocation_stale_at_most_the_grace(
    redis: RedisProcess, delay: SubscriberDelay
) -> None:
    """When a replica's channel goes silent (nothing delivered, nothing closed), a suspension
    written elsewhere is no longer answered from its cache once the grace has passed."""
    async with (
        redis_app(redis.url) as writer,
        redis_app(delay.url(), load=False, cache_grace_seconds=GRACE) as app,
    ):
        assert await cached_decision(app, UMA_VIEW.request) is Decision.ALLOW
        delay.hold()
        await writer.writes.put("lending", json.dumps([UMA_SUSPENDED]))
        await asyncio.sleep(GRACE + 0.3)
        assert (await app.authorizer.authorize(UMA_VIEW.request)).decision is not Decision.ALLOW
