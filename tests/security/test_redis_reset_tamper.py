"""Store keys lost or tampered with one by one never make entities look merely absent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.redis_support import RedisProcess, redis_fixture  # noqa: F401 (fixture)
from tests.security.redis_reset_stores import (
    CAROL_SUSPENDED,
    NEW_DOC,
    app_on,
    carol_views,
    load_seeded,
    redis_of,
)
from verdict.errors import EntityDataError, StoreUnavailableError
from verdict.store.redis_keys import StoreKeys

SEEDED = StoreKeys.of("seeded")


@pytest.mark.parametrize("lost", [[SEEDED.entities, SEEDED.refs], [SEEDED.entities], [SEEDED.refs]])
async def test_hashes_lost_under_a_marker_are_not_loaded(
    tmp_path: Path, redis: RedisProcess, lost: list[str]
) -> None:
    """Both hashes of a store evicted (or deleted) while its marker stays: carol is UNAVAILABLE,
    never ALLOW; so is a store that lost one of them."""
    async with app_on(tmp_path, redis.url, cache_max_entries=0) as app:
        await load_seeded(app)
        redis.cli("DEL", *lost)
        assert redis.cli("EXISTS", SEEDED.marker).strip() == "1"
        assert await carol_views(app) == "StoreNotLoadedError"
        assert not await redis_of(app).ready("seeded")


async def test_a_marker_that_does_not_match_the_data_is_not_loaded(
    tmp_path: Path, redis: RedisProcess
) -> None:
    """A marker set to garbage is "not loaded" for decisions, health and writes; a reload
    repairs it."""
    async with app_on(tmp_path, redis.url, cache_max_entries=0) as app:
        await load_seeded(app)
        redis.cli("SET", SEEDED.marker, "garbage")
        assert await carol_views(app) == "StoreNotLoadedError"
        assert not await redis_of(app).ready("seeded")
        with pytest.raises(StoreUnavailableError):
            await app.writes.put("seeded", NEW_DOC)
        await load_seeded(app)
        assert await carol_views(app) == "deny"


@pytest.mark.parametrize(
    "tamper",
    [["SET", SEEDED.version, "garbage"], ["SET", SEEDED.version, "5"], ["DEL", SEEDED.version]],
)
async def test_a_version_key_that_is_unusable_or_went_back_fails_closed(
    tmp_path: Path, redis: RedisProcess, tamper: list[str]
) -> None:
    """A version key that is not a number, lies below the store's epoch (set back) or is gone
    is corrupt data: decisions and writes are INTERNAL, never a version that went backwards;
    a reload repairs it."""
    async with app_on(tmp_path, redis.url, cache_max_entries=0) as app:
        before = await load_seeded(app)
        redis.cli(*tamper)
        assert await carol_views(app) == "EntityDataError"
        with pytest.raises(EntityDataError):
            await app.writes.put("seeded", NEW_DOC)
        assert await load_seeded(app) > before
        assert await carol_views(app) == "deny"


async def test_a_store_key_of_the_wrong_type_is_corrupt_data(
    tmp_path: Path, redis: RedisProcess
) -> None:
    """A store's version key holding a hash (WRONGTYPE inside the scripts) is counted corrupt
    data: INTERNAL for decisions and writes, health NOT_SERVING for that store alone; a write
    to an API store does not mask it."""
    async with app_on(tmp_path, redis.url, cache_max_entries=0) as app:
        await load_seeded(app)
        await app.writes.put("api", json.dumps([CAROL_SUSPENDED]))
        for store_id in ("seeded", "api"):
            keys = StoreKeys.of(store_id)
            redis.cli("DEL", keys.version)
            redis.cli("HSET", keys.version, "x", "1")
            assert await carol_views(app, store_id) == "EntityDataError"
            with pytest.raises(EntityDataError):
                await app.writes.put(store_id, NEW_DOC)
            assert not await redis_of(app).ready(store_id)  # that store only, not all of Redis
