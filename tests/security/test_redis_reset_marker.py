"""After Redis lost a store's data, a loan service's write must not make it "loaded" again."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.redis_support import RedisProcess, redis_fixture  # noqa: F401 (fixture)
from tests.stores import entity, write_store
from verdict.app import App, build_app
from verdict.config import Settings
from verdict.errors import PolicyLoadError, StoreNotLoadedError, VerdictError
from verdict.model import AuthorizationRequest, EntityUid
from verdict.policy.loader import load_store
from verdict.policy.snapshot import EntitiesSource
from verdict.store.bulk import load_entities
from verdict.store.entity_file import read_entities_file
from verdict.store.redis_store import RedisEntityStore

CAROL = EntityUid("User", "carol")
# The careful deny-list: a principal Verdict cannot find raises no error, so the forbid simply
# does not fire. Only "not loaded" (UNAVAILABLE) keeps a suspended user out after data loss.
POLICY = (
    '@id("view") permit(principal, action == Action::"view", resource);\n'
    '@id("suspended") forbid(principal, action, resource)\n'
    "when { principal has suspended && principal.suspended };\n"
)
CAROL_SUSPENDED = entity("User", "carol", {"suspended": True})
NEW_DOC = json.dumps([entity("Doc", "new")])


def stores(tmp_path: Path) -> Path:
    """``seeded`` has an entities.json (a "load" store by default), ``api`` has none."""
    root = tmp_path / "stores"
    write_store(root, "seeded", {"p.cedar": POLICY, "entities.json": [CAROL_SUSPENDED]})
    write_store(root, "api", {"p.cedar": POLICY})
    write_store(
        root,
        "api_load",
        {"p.cedar": POLICY, "store.toml": 'entities_source = "load"\n'},
    )
    return root


@asynccontextmanager
async def app_on(tmp_path: Path, url: str) -> AsyncIterator[App]:
    """An app on the three stores, reading Redis on every decision (no local cache)."""
    settings = Settings(stores=stores(tmp_path), redis_url=url, cache_max_entries=0)
    app = build_app(settings)
    try:
        yield app
    finally:
        await app.entities.close()


def redis_of(app: App) -> RedisEntityStore:
    assert isinstance(app.entities, RedisEntityStore)
    return app.entities


async def load_seeded(app: App) -> int:
    """``verdict entities load`` of the seeded store."""
    snapshot = app.policies.current.resolve("seeded")
    assert snapshot.entities_file is not None
    entities = read_entities_file(snapshot.entities_file, snapshot.schema)
    return await load_entities(app.entities, "seeded", list(entities.values()))


async def carol_views(app: App, store_id: str) -> str:
    """Carol's decision on a document, or the name of the error that refused it."""
    request = AuthorizationRequest(
        CAROL, EntityUid("Action", "view"), EntityUid("Doc", "d"), store_id=store_id
    )
    try:
        return (await app.authorizer.authorize(request)).decision.value
    except VerdictError as exc:
        return type(exc).__name__


async def test_a_write_after_flushall_does_not_reload_a_seeded_store(
    tmp_path: Path, redis: RedisProcess
) -> None:
    """After FLUSHALL, a loan service's write to a store loaded from entities.json is refused
    as "not loaded", and suspended carol stays UNAVAILABLE instead of ALLOW."""
    async with app_on(tmp_path, redis.url) as app:
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
    async with app_on(tmp_path, redis.url) as app:
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
    async with app_on(tmp_path, redis.url) as app:
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
