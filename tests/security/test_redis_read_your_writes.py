"""Issue 7.3: min_entity_version is met only by invalidations a replica has actually applied."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.cases import lending_cases
from tests.conftest import POLICIES
from tests.integration.redis_apps import redis_app
from tests.redis_support import RedisProcess, SubscriberDelay
from verdict.app import App
from verdict.model import AuthorizationRequest, Decision
from verdict.store.redis_store import RedisEntityStore

ADAM_UPDATES = next(c for c in lending_cases() if c.principal.id == "adam")
# Nothing of erin's slice is reachable from adam's: deciding it reads Redis.
ERIN_VIEWS = next(c for c in lending_cases() if c.principal.id == "erin")


def adam_without_admin() -> dict[str, object]:
    """Adam as stored, with his admin role revoked."""
    stored = json.loads((POLICIES / "lending" / "entities.json").read_text())
    adam = next(e for e in stored if e["uid"] == {"type": "Employee", "id": "adam"})
    return {**adam, "parents": []}


async def cached_decision(app: App, request: AuthorizationRequest) -> Decision:
    """Decide until the answer comes from the local cache (no Redis call), then return it."""
    store = app.entities
    assert isinstance(store, RedisEntityStore)
    for _ in range(500):
        before = store.round_trips
        decision = (await app.authorizer.authorize(request)).decision
        if store.round_trips == before:
            return decision
        await asyncio.sleep(0.002)
    pytest.fail("the decision never came from the cache")


async def test_a_read_does_not_vouch_for_invalidations_in_flight(
    redis: RedisProcess, delay: SubscriberDelay
) -> None:
    """Replica B reads Redis at version v while the invalidation for v is still in flight to
    it; a request asking for version v must not then be answered from B's stale cache."""
    async with redis_app(redis.url) as a, redis_app(delay.url(), load=False) as b:
        assert await cached_decision(b, ADAM_UPDATES.request) is Decision.ALLOW
        delay.hold()
        version, _ = await a.writes.put("lending", json.dumps([adam_without_admin()]))
        # A cache miss on B reads Redis at the new version.
        assert (await b.authorizer.authorize(ERIN_VIEWS.request)).entity_version >= version
        fresh = AuthorizationRequest(
            ADAM_UPDATES.principal,
            ADAM_UPDATES.action,
            ADAM_UPDATES.resource,
            ADAM_UPDATES.context,
            store_id="lending",
            min_entity_version=version,
        )
        assert (await b.authorizer.authorize(fresh)).decision is Decision.DENY
        delay.release()
        assert await cached_decision(b, ADAM_UPDATES.request) is Decision.DENY
