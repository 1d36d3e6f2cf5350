"""A refused write must not teach a replica's cache "missing" answers for a store not loaded."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.redis_support import RedisProcess, redis_fixture  # noqa: F401 (fixture)
from tests.security.redis_reset_stores import (
    CAROL_SUSPENDED,
    NAMES_ROOTS_THEN_FAILS,
    app_on,
    carol_views,
    load_seeded,
    redis_of,
)
from verdict.errors import RequestError, StoreUnavailableError


@pytest.mark.parametrize("store_id", ["seeded", "api"])
async def test_a_refused_write_does_not_fill_the_cache_of_an_unloaded_store(
    tmp_path: Path, redis: RedisProcess, store_id: str
) -> None:
    """After FLUSHALL, a write naming every root of carol's decision as a parent, refused for
    its cycle, leaves the decision UNAVAILABLE: what the write's ancestor read found in the
    unloaded store ("all missing") never answers decisions from the cache."""
    async with app_on(tmp_path, redis.url) as app:
        await load_seeded(app)
        await app.writes.put("api", json.dumps([CAROL_SUSPENDED]))
        redis.cli("FLUSHALL")
        store = redis_of(app)
        assert not await store.ready(store_id)  # the health monitor's poll saw the loss
        assert await carol_views(app, store_id) in {"StoreUnavailableError", "StoreNotLoadedError"}
        with pytest.raises((RequestError, StoreUnavailableError)):
            await app.writes.put(store_id, NAMES_ROOTS_THEN_FAILS)
        for _ in range(10):  # long enough for any fill to settle
            await asyncio.sleep(0.02)
            assert await carol_views(app, store_id) != "allow"
