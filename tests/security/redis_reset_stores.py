"""Guarded policy stores on a real Redis for the data-loss tests: suspended carol must not ALLOW."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from tests.stores import entity, write_store
from verdict.app import App, build_app
from verdict.config import Settings
from verdict.errors import VerdictError
from verdict.model import AuthorizationRequest, EntityUid
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
# Every root of carol's decision (principal, action, resource) named as a parent of an entity
# that is its own parent: a write that reads those uids, then is refused for the cycle.
NAMES_ROOTS_THEN_FAILS = json.dumps(
    [
        entity(
            "Doc",
            "x",
            parents=[("User", "carol"), ("Action", "view"), ("Doc", "d"), ("Doc", "x")],
        )
    ]
)


def stores(tmp_path: Path) -> Path:
    """``seeded`` has an entities.json (a "load" store by default); ``api`` has none (a
    "writes" store); ``api_load`` has none but is declared "load"."""
    root = tmp_path / "stores"
    write_store(root, "seeded", {"p.cedar": POLICY, "entities.json": [CAROL_SUSPENDED]})
    write_store(root, "api", {"p.cedar": POLICY})
    write_store(root, "api_load", {"p.cedar": POLICY, "store.toml": 'entities_source = "load"\n'})
    return root


@asynccontextmanager
async def app_on(tmp_path: Path, url: str, **overrides: Any) -> AsyncIterator[App]:
    """An app on the stores; subscribed to invalidations unless the cache is off."""
    settings = Settings(stores=stores(tmp_path), redis_url=url, **overrides)
    app = build_app(settings)
    listener = app.listener if settings.cache_max_entries else None
    if listener is not None:
        listener.start()
        await asyncio.wait_for(listener.subscribed.wait(), 10)
    try:
        yield app
    finally:
        if listener is not None:
            await listener.stop()
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


async def carol_views(app: App, store_id: str = "seeded") -> str:
    """Carol's decision on a document, or the name of the error that refused it."""
    request = AuthorizationRequest(
        CAROL, EntityUid("Action", "view"), EntityUid("Doc", "d"), store_id=store_id
    )
    try:
        return (await app.authorizer.authorize(request)).decision.value
    except VerdictError as exc:
        return type(exc).__name__
