"""The memory store's pre-parsed entity sets: used at their own version only, never mixed."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.cases import lending_cases
from tests.conftest import POLICIES
from tests.integration.redis_apps import UMA_SUSPENDED, UMA_VIEW
from verdict.app import App, build_app, entity_files
from verdict.config import Settings
from verdict.engine.authorizer import Authorizer
from verdict.engine.hierarchy import entity_set_vet
from verdict.engine.limits import DEFAULT_LIMITS
from verdict.errors import EntityDataError
from verdict.model import AuthorizationRequest, Decision, EntityUid
from verdict.policy.holder import PolicyHolder
from verdict.policy.loader import load_policy_stores
from verdict.store.base import ReadOptions, StoredEntity
from verdict.store.memory import MemoryEntityStore

UMA = EntityUid("Employee", "uma")


def memory_app(**overrides: Any) -> App:
    """The sample policies on the memory store."""
    return build_app(Settings(stores=POLICIES, default_store="lending", **overrides))


def store_of(app: App) -> MemoryEntityStore:
    """The app's memory store (with handles)."""
    assert isinstance(app.entities, MemoryEntityStore)
    assert app.entities.handles is not None
    return app.entities


async def handle_read(app: App, min_version: int = 0) -> tuple[bool, int]:
    """Whether a decision's read at ``min_version`` would get a handle, and its version."""
    schema = app.policies.current.resolve("lending").schema
    options = ReadOptions(min_version=min_version, prepared=True, schema=schema)
    entity_slice = await store_of(app).fetch_slice("lending", {UMA}, options)
    return entity_slice.handle is not None, entity_slice.version


def with_version(request: AuthorizationRequest, version: int) -> AuthorizationRequest:
    """``request`` demanding read-your-writes at ``version``."""
    return AuthorizationRequest(
        request.principal,
        request.action,
        request.resource,
        request.context,
        request.store_id,
        min_entity_version=version,
    )


async def test_the_handle_rebuilt_after_a_write_is_used_for_read_your_writes() -> None:
    """After a write, decisions at its version use a handle of that version and see it."""
    app = memory_app()
    await app.entities.prepare()
    assert await handle_read(app) == (True, 0)
    assert (await app.authorizer.authorize(UMA_VIEW.request)).allowed
    version, _ = await app.writes.put("lending", json.dumps([UMA_SUSPENDED]))
    # Before the rebuild lands: the list path, at the written version, already sees the write.
    first = await app.authorizer.authorize(with_version(UMA_VIEW.request, version))
    assert (first.decision, first.entity_version) == (Decision.DENY, version)
    await store_of(app).handles.settle()  # type: ignore[union-attr]
    assert await handle_read(app, version) == (True, version)
    again = await app.authorizer.authorize(with_version(UMA_VIEW.request, version))
    assert (again.decision, again.entity_version) == (Decision.DENY, version)
    await app.entities.close()


async def test_a_handle_is_never_used_with_another_schema() -> None:
    """A read for a schema other than the one a handle was parsed against gets no handle."""
    app = memory_app()
    await app.entities.prepare()
    options = ReadOptions(prepared=True, schema=None)  # the lending store has a schema
    entity_slice = await store_of(app).fetch_slice("lending", {UMA}, options)
    assert entity_slice.handle is None
    assert UMA in entity_slice.entities
    await app.entities.close()


async def test_a_write_whose_handle_build_fails_leaves_the_old_handle() -> None:
    """Data the schema refuses as a whole builds no handle: the old one stays installed, and
    decisions at the new version take the list path, failing closed where they reach it."""
    snapshot = load_policy_stores(POLICIES, "lending")
    loaded = MemoryEntityStore.from_files(
        entity_files(snapshot), vet=entity_set_vet(DEFAULT_LIMITS)
    )
    await loaded.prepare()
    handles = loaded.handles
    assert handles is not None
    old = handles.installed("lending")
    assert old is not None
    assert old.version == 0
    # Written past EntityWrites (which would refuse it): uma with an undeclared attribute.
    bad = {**UMA_SUSPENDED, "attrs": {**UMA_SUSPENDED["attrs"], "undeclared": 1}}
    version = await loaded.put("lending", [StoredEntity(UMA, bad, frozenset())])
    await handles.settle()
    assert handles.installed("lending") is old
    authorizer = Authorizer(PolicyHolder(snapshot), loaded)
    try:
        await authorizer.authorize(UMA_VIEW.request)
        raise AssertionError("a slice holding uma must fail closed")
    except EntityDataError:
        pass
    others = [c for c in lending_cases() if c.principal != UMA and c.resource != UMA]
    for case in others[:10]:
        result = await authorizer.authorize(case.request)
        assert result.allowed == (case.expect == "allow")
        assert result.entity_version == version
    await loaded.close()


async def test_concurrent_decisions_during_rebuilds_never_see_a_mixed_state() -> None:
    """While writes toggle uma and handles are rebuilt, every answer is the one of the state at
    the version it reports (a handle of another version never answers for it)."""
    app = memory_app()
    await app.entities.prepare()
    stored = json.loads((POLICIES / "lending" / "entities.json").read_text())
    uma = next(e for e in stored if e["uid"] == {"type": "Employee", "id": "uma"})
    allowed_at: dict[int, bool] = {0: True}
    answers: list[tuple[int, bool]] = []
    done = asyncio.Event()

    async def writer() -> None:
        for round_ in range(40):
            suspended = round_ % 2 == 0
            version, _ = await app.writes.put(
                "lending", json.dumps([UMA_SUSPENDED if suspended else uma])
            )
            allowed_at[version] = not suspended
            if round_ % 4 == 3:  # let some rebuilds land between writes
                await store_of(app).handles.settle()  # type: ignore[union-attr]
            await asyncio.sleep(0)
        done.set()

    async def reader() -> None:
        while not done.is_set():
            result = await app.authorizer.authorize(UMA_VIEW.request)
            answers.append((result.entity_version, result.allowed))
            batch = await app.authorizer.authorize_batch([UMA_VIEW.request] * 3)
            for item in batch:
                assert not isinstance(item, Exception)
                answers.append((item.entity_version, item.allowed))
            await asyncio.sleep(0)

    await asyncio.gather(writer(), reader(), reader())
    assert store_of(app).handles.builds > 5  # type: ignore[union-attr]
    assert len(answers) > 40
    for version, allowed in answers:
        assert allowed == allowed_at[version], f"version {version}"
    await app.entities.close()


async def test_handles_can_be_turned_off() -> None:
    """With entity_handles off the memory store parses nothing and answers as before."""
    app = memory_app(entity_handles=False)
    assert isinstance(app.entities, MemoryEntityStore)
    assert app.entities.handles is None
    await app.entities.prepare()
    assert (await app.authorizer.authorize(UMA_VIEW.request)).allowed


def test_a_store_over_the_size_cap_gets_no_handle() -> None:
    """A store with more entities than entity_handle_max_entities is never parsed whole."""
    snapshot = load_policy_stores(POLICIES, "lending")
    store = MemoryEntityStore.from_files(
        entity_files(snapshot), vet=entity_set_vet(DEFAULT_LIMITS), handle_max_entities=10
    )

    async def check() -> None:
        await store.prepare()
        assert store.handles is not None
        assert store.handles.installed("lending") is None

    asyncio.run(check())
