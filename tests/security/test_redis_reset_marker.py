"""After Redis lost a store's data, a loan service's write must not make it "loaded" again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.redis_support import RedisProcess, redis_fixture  # noqa: F401 (fixture)
from tests.security.redis_reset_stores import (
    CAROL_SUSPENDED,
    NEW_DOC,
    POLICY,
    app_on,
    carol_views,
    load_seeded,
    redis_of,
    stores,
)
from tests.stores import write_store
from verdict.errors import PolicyLoadError, StoreNotLoadedError
from verdict.model import EntityUid
from verdict.policy.loader import load_store
from verdict.policy.snapshot import EntitiesSource


async def test_a_write_after_flushall_does_not_reload_a_seeded_store(
    tmp_path: Path, redis: RedisProcess
) -> None:
    """After FLUSHALL, a loan service's write to a store loaded from entities.json is refused
    as "not loaded", and suspended carol stays UNAVAILABLE instead of ALLOW."""
    async with app_on(tmp_path, redis.url, cache_max_entries=0) as app:
        await load_seeded(app)
        assert await carol_views(app, "seeded") == "deny"
        redis.cli("FLUSHALL")
        with pytest.raises(StoreNotLoadedError):
            await app.writes.put("seeded", NEW_DOC)
        with pytest.raises(StoreNotLoadedError):
            await app.writes.delete("seeded", [EntityUid("Doc", "new")])
        assert await carol_views(app, "seeded") == "StoreNotLoadedError"
        await load_seeded(app)
        assert await carol_views(app, "seeded") == "deny"
        await app.writes.put("seeded", NEW_DOC)  # loaded again: writes are welcome


async def test_an_api_store_declared_load_waits_for_the_operator(
    tmp_path: Path, redis: RedisProcess
) -> None:
    """A store without entities.json but with entities_source = "load" takes writes only once
    `verdict entities load` marked it, and again only after a re-mark following FLUSHALL."""
    async with app_on(tmp_path, redis.url, cache_max_entries=0) as app:
        with pytest.raises(StoreNotLoadedError):
            await app.writes.put("api_load", json.dumps([CAROL_SUSPENDED]))
        assert await redis_of(app).mark_loaded("api_load")
        await app.writes.put("api_load", json.dumps([CAROL_SUSPENDED]))
        assert await carol_views(app, "api_load") == "deny"
        redis.cli("FLUSHALL")
        with pytest.raises(StoreNotLoadedError):
            await app.writes.put("api_load", NEW_DOC)
        assert await carol_views(app, "api_load") == "StoreNotLoadedError"


async def test_an_api_store_is_loaded_by_its_first_write(
    tmp_path: Path, redis: RedisProcess
) -> None:
    """A store without entities.json defaults to entities_source = "writes": its first write
    marks it loaded, as before."""
    async with app_on(tmp_path, redis.url, cache_max_entries=0) as app:
        assert await carol_views(app, "api") == "StoreNotLoadedError"
        await app.writes.put("api", json.dumps([CAROL_SUSPENDED]))
        assert await carol_views(app, "api") == "deny"


def test_entities_source_defaults_and_diagnostics(tmp_path: Path) -> None:
    """entities_source defaults to "load" with an entities.json and "writes" without; an
    unknown value is a load error at its store.toml line."""
    root = stores(tmp_path)
    assert load_store(root / "seeded").settings.entities_source is EntitiesSource.LOAD
    assert load_store(root / "api").settings.entities_source is EntitiesSource.WRITES
    assert load_store(root / "api_load").settings.entities_source is EntitiesSource.LOAD
    bad: dict[str, Any] = {"p.cedar": POLICY, "store.toml": '\nentities_source = "file"\n'}
    with pytest.raises(PolicyLoadError) as info:
        load_store(write_store(tmp_path, "bad", bad))
    assert [str(d) for d in info.value.diagnostics] == [
        'bad/store.toml:2: entities_source must be "load" | "writes"'
    ]
