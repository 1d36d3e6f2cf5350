"""Entity versions never go backwards across a Redis data loss; older-epoch versions are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.redis_apps import UMA_SUSPENDED, UMA_VIEW, load_lending, redis_app
from tests.redis_support import RedisProcess, redis_fixture  # noqa: F401 (fixture)
from tests.security.test_redis_read_your_writes import cached_decision
from tests.stores import entity
from verdict.app import App
from verdict.errors import ReplacedVersionError
from verdict.model import AuthorizationRequest, Decision
from verdict.store.redis_keys import StoreKeys


def uma_views(min_version: int) -> AuthorizationRequest:
    """Uma's allowed view, asking for entity data at least ``min_version``."""
    case = UMA_VIEW
    return AuthorizationRequest(
        case.principal,
        case.action,
        case.resource,
        case.context,
        store_id="lending",
        min_entity_version=min_version,
    )


async def write_partners(app: App, count: int) -> int:
    """``count`` writes of one partner each; the last version."""
    version = 0
    for i in range(count):
        partner = entity("Partner", f"p{i}", {"name": "P", "kind": "bank", "active": True})
        version, _ = await app.writes.put("lending", json.dumps([partner]))
    return version


async def test_versions_go_up_across_flushall_and_old_ones_are_refused(
    redis: RedisProcess,
) -> None:
    """After FLUSHALL and a reload, the store's version is above every earlier one, and a
    min_entity_version of the lost epoch is FAILED_PRECONDITION, from the cache or not."""
    async with redis_app(redis.url) as app:
        suspended, _ = await app.writes.put("lending", json.dumps([UMA_SUSPENDED]))
        assert await cached_decision(app, uma_views(suspended)) is Decision.DENY
        redis.cli("FLUSHALL")
        reloaded = await load_lending(app)  # uma is not suspended in entities.json
        assert reloaded > suspended
        again = await write_partners(app, 3)
        assert again > reloaded
        with pytest.raises(ReplacedVersionError):
            await app.authorizer.authorize(uma_views(suspended))
        # The new epoch answers its own versions, from Redis and then from the cache.
        assert await cached_decision(app, uma_views(again)) is Decision.ALLOW
        with pytest.raises(ReplacedVersionError):
            await app.authorizer.authorize(uma_views(suspended))


async def test_versions_go_up_across_a_redis_restarted_empty(
    redis: RedisProcess, tmp_path: Path
) -> None:
    """A Redis killed and restarted without its data hands out versions above every version
    it handed out before, and the old ones are refused."""
    async with redis_app(redis.url, cache_max_entries=0) as app:
        before = await write_partners(app, 5)
        redis.stop()
        redis.start()
        assert redis.cli("EXISTS", StoreKeys.of("lending").marker).strip() == "0"
        reloaded = await load_lending(app)
        assert reloaded > before
        with pytest.raises(ReplacedVersionError):
            await app.authorizer.authorize(uma_views(before))
        assert (await app.authorizer.authorize(uma_views(reloaded))).decision is Decision.ALLOW
