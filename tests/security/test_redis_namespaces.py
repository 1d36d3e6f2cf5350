"""Issue 14.11: deployments sharing one Redis (other database or namespace) never meet."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.integration.redis_apps import UMA_SUSPENDED, UMA_VIEW, redis_app
from tests.redis_support import RedisProcess, redis_fixture  # noqa: F401 (fixture)
from tests.security.test_redis_read_your_writes import cached_decision
from verdict.app import App
from verdict.errors import StaleReadError
from verdict.model import AuthorizationRequest, Decision
from verdict.store.redis_store import RedisEntityStore


async def decide_counting_trips(app: App, request: AuthorizationRequest) -> tuple[Decision, int]:
    """The decision and how many Redis calls it took."""
    store = app.entities
    assert isinstance(store, RedisEntityStore)
    before = store.round_trips
    decision = (await app.authorizer.authorize(request)).decision
    return decision, store.round_trips - before


@pytest.mark.parametrize(("db", "settings"), [(1, {}), (0, {"redis_namespace": "tenant-b"})])
async def test_another_deployments_writes_do_not_reach_this_one(
    redis: RedisProcess, db: int, settings: dict[str, Any]
) -> None:
    """Writes of a deployment on database 1 (or under another namespace) of the same Redis
    neither drop this deployment's cache entries nor satisfy its min_entity_version."""
    other_url = redis.url.removesuffix("/0") + f"/{db}"
    async with (
        redis_app(redis.url) as ours,
        redis_app(other_url, **settings) as theirs,
    ):
        assert await cached_decision(ours, UMA_VIEW.request) is Decision.ALLOW
        for _ in range(3):
            version, _ = await theirs.writes.put("lending", json.dumps([UMA_SUSPENDED]))
        assert (await theirs.authorizer.authorize(UMA_VIEW.request)).decision is Decision.DENY
        await asyncio.sleep(0.2)  # their invalidations have long been published
        assert await decide_counting_trips(ours, UMA_VIEW.request) == (Decision.ALLOW, 0)
        ahead = AuthorizationRequest(
            UMA_VIEW.principal,
            UMA_VIEW.action,
            UMA_VIEW.resource,
            UMA_VIEW.context,
            store_id="lending",
            min_entity_version=version,
        )
        with pytest.raises(StaleReadError):
            await ours.authorizer.authorize(ahead)
