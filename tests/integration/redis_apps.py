"""Build Verdict apps on a real Redis for tests, with the lending entities loaded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from tests.cases import lending_cases
from tests.conftest import POLICIES
from tests.stores import entity
from verdict.app import App, build_app, start, stop
from verdict.config import Settings
from verdict.store.bulk import load_entities
from verdict.store.entity_file import read_entities_file
from verdict.store.redis_store import RedisEntityStore

UMA_VIEW = next(c for c in lending_cases() if c.principal.id == "uma" and c.expect == "allow")
# Uma as stored, but suspended: a write that turns UMA_VIEW into a DENY.
UMA_SUSPENDED = entity(
    "Employee",
    "uma",
    {
        "name": "Uma",
        "suspended": True,
        "approval_limit": 50000,
        "department": "credit",
        "partner": {"__entity": {"type": "Partner", "id": "first-river-bank"}},
    },
    parents=[("Role", "underwriter")],
)


async def load_lending(app: App) -> int:
    """Write the lending store's entities.json into the app's Redis; return the version."""
    store = app.policies.current.resolve("lending")
    assert store.entities_file is not None
    entities = read_entities_file(store.entities_file, store.schema)
    return await load_entities(app.entities, "lending", list(entities.values()))


def redis_settings(url: str, **overrides: Any) -> Settings:
    """Settings for the sample policies on Redis at ``url``."""
    return Settings(
        stores=POLICIES, default_store="lending", redis_url=url, listen="127.0.0.1:0", **overrides
    )


@asynccontextmanager
async def redis_app(
    url: str, *, load: bool = True, serve: bool = False, **overrides: Any
) -> AsyncIterator[App]:
    """An app on Redis, subscribed to invalidations (and serving gRPC when ``serve``)."""
    app = build_app(redis_settings(url, **overrides))
    assert isinstance(app.entities, RedisEntityStore)
    await app.entities.prepare()
    if load:
        await load_lending(app)
    if serve:
        await start(app)
    else:
        assert app.listener is not None
        app.listener.start()
    assert app.listener is not None
    await asyncio.wait_for(app.listener.subscribed.wait(), 10)
    try:
        yield app
    finally:
        if serve:
            await stop(app, 0)
        else:
            await app.listener.stop()
            await app.entities.close()
