"""Issue 7.2: a Redis without a store's data never decides as if the entities did not exist."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.cases import BASE_CONTEXT
from tests.conftest import POLICIES
from tests.redis_support import RedisProcess, redis_fixture  # noqa: F401 (fixture)
from tests.stores import entity, write_store
from verdict.app import App, build_app
from verdict.cedar_json import entity_references
from verdict.config import Settings
from verdict.errors import VerdictError
from verdict.model import AuthorizationRequest, EntityUid
from verdict.store.base import StoredEntity
from verdict.store.bulk import load_entities
from verdict.store.entity_file import read_entities_file
from verdict.store.redis_keys import StoreKeys, uid_key
from verdict.store.redis_store import RedisEntityStore

CAROL = EntityUid("Borrower", "carol")
CAROL_SUSPENDED = entity(
    "Borrower",
    "carol",
    {
        "name": "Carol Chen",
        "partner": {"__entity": {"type": "Partner", "id": "harbor-credit-union"}},
        "kyc_verified": True,
        "suspended": True,
    },
)
# A deny-list written the careful way: the forbid guards its attribute with `has`, so a
# principal Verdict cannot find raises no error, and the forbid simply does not fire.
GUARDED: dict[str, str | list[Any]] = {
    "p.cedar": '@id("view-anything") permit(principal, action == Action::"view", resource);\n'
    '@id("forbid-suspended") forbid(principal, action, resource)\n'
    "when { principal has suspended && principal.suspended };",
    "entities.json": [
        entity("Borrower", "carol", {"suspended": True}),
        entity("Doc", "d"),
        entity("Doc", "extra"),
    ],
    # Seeded from a file and maintained through writes: its first write may mark it loaded.
    "store.toml": 'entities_source = "writes"\n',
}
CAROL_ASKS = {
    "lending": [
        ("view", EntityUid("Loan", "loan-2001")),
        ("view_document", EntityUid("Document", "doc-2001-paystub")),
        ("upload_document", EntityUid("Loan", "loan-2001")),
    ],
    "guarded": [("view", EntityUid("Doc", "d"))],
}


def stores(tmp_path: Path) -> Path:
    """The lending sample and the guarded store side by side."""
    shutil.copytree(POLICIES / "lending", tmp_path / "lending")
    write_store(tmp_path, "guarded", GUARDED)
    return tmp_path


def redis_app(tmp_path: Path, url: str, **overrides: Any) -> App:
    """An app on both stores, reading Redis on every decision (no local cache)."""
    settings = Settings(
        stores=stores(tmp_path),
        default_store="lending",
        redis_url=url,
        cache_max_entries=0,
        **overrides,
    )
    return build_app(settings)


async def load(app: App, store_id: str) -> int:
    """Load the store's entities.json as ``verdict entities load`` does."""
    store = app.policies.current.resolve(store_id)
    assert store.entities_file is not None
    entities = read_entities_file(store.entities_file, store.schema)
    return await load_entities(app.entities, store_id, list(entities.values()))


async def load_all_with_carol_suspended(app: App) -> None:
    await load(app, "lending")
    await load(app, "guarded")
    await app.writes.put("lending", json.dumps([CAROL_SUSPENDED]))


async def carol_outcomes(app: App) -> set[str]:
    """What carol gets for each of her requests, on both stores: a decision or an error."""
    outcomes = set()
    for store_id, asks in CAROL_ASKS.items():
        for action, resource in asks:
            request = AuthorizationRequest(
                CAROL, EntityUid("Action", action), resource, BASE_CONTEXT, store_id=store_id
            )
            try:
                outcomes.add((await app.authorizer.authorize(request)).decision.value)
            except VerdictError as exc:
                outcomes.add(type(exc).__name__)
    return outcomes


async def test_a_store_never_loaded_answers_unavailable(
    tmp_path: Path, redis: RedisProcess
) -> None:
    """A store whose data was never loaded into Redis answers UNAVAILABLE, never a decision."""
    app = redis_app(tmp_path, redis.url)
    try:
        assert await carol_outcomes(app) == {"StoreNotLoadedError"}
    finally:
        await app.entities.close()


async def test_after_flushall_decisions_are_unavailable(
    tmp_path: Path, redis: RedisProcess
) -> None:
    """Once Redis lost the data (FLUSHALL), suspended carol is UNAVAILABLE, never ALLOW."""
    app = redis_app(tmp_path, redis.url)
    try:
        await load_all_with_carol_suspended(app)
        assert await carol_outcomes(app) == {"deny"}
        redis.cli("FLUSHALL")
        assert await carol_outcomes(app) == {"StoreNotLoadedError"}
    finally:
        await app.entities.close()


@pytest.mark.parametrize("lost", ["refs", "entities"])
async def test_entities_and_refs_must_agree(tmp_path: Path, redis: RedisProcess, lost: str) -> None:
    """An entity without its refs field (or refs without the entity) is corrupt data: the
    decision fails closed, never ALLOW."""
    app = redis_app(tmp_path, redis.url)
    try:
        await load_all_with_carol_suspended(app)
        for store_id in CAROL_ASKS:
            keys = StoreKeys.of(store_id)
            redis.cli("HDEL", keys.refs if lost == "refs" else keys.entities, uid_key(CAROL))
        assert await carol_outcomes(app) == {"EntityDataError"}
    finally:
        await app.entities.close()


async def test_the_first_write_marks_a_store_loaded(tmp_path: Path, redis: RedisProcess) -> None:
    """A store maintained only through writes becomes available with its first write, even one
    naming a parent that is not stored."""
    app = redis_app(tmp_path, redis.url)
    try:
        carol = entity("Borrower", "carol", {"suspended": True}, parents=[("Team", "t")])
        await app.writes.put("guarded", json.dumps([carol]))
        request = AuthorizationRequest(
            CAROL, EntityUid("Action", "view"), EntityUid("Doc", "d"), store_id="guarded"
        )
        assert (await app.authorizer.authorize(request)).decision.value == "deny"
    finally:
        await app.entities.close()


def generation(gen: str, count: int) -> list[StoredEntity]:
    """``count`` documents all stamped with ``gen``."""
    docs = [entity("Doc", f"d{i}", {"gen": gen}) for i in range(count)]
    return [
        StoredEntity(EntityUid("Doc", f"d{i}"), d, entity_references(d)) for i, d in enumerate(docs)
    ]


async def generations_seen(store: RedisEntityStore, count: int) -> set[str]:
    """The generations of the first and last document, read in one slice."""
    first, last = EntityUid("Doc", "d0"), EntityUid("Doc", f"d{count - 1}")
    found = await store.fetch_slice("guarded", {first, last})
    return {found.entities[uid]["attrs"]["gen"] for uid in (first, last)}


async def test_a_bulk_load_is_never_seen_half_done(tmp_path: Path, redis: RedisProcess) -> None:
    """Readers during a load see all of the old entities or all of the new; an interrupted load
    changes nothing; entities missing from the new load are gone; no staging key is left."""
    app = redis_app(tmp_path, redis.url)
    store = app.entities
    assert isinstance(store, RedisEntityStore)
    count = 400
    try:
        await load(app, "guarded")  # holds Doc::"extra"
        await load_entities(store, "guarded", generation("A", count))
        seen: list[set[str]] = []
        loading = asyncio.create_task(
            load_entities(
                store, "guarded", generation("B", count), chunk=1, pipeline=1, in_flight=1
            )
        )
        while not loading.done():
            seen.append(await generations_seen(store, count))
        await loading
        assert all(len(s) == 1 for s in seen), "a reader saw two generations at once"
        assert await generations_seen(store, count) == {"B"}
        interrupted = asyncio.create_task(
            load_entities(
                store, "guarded", generation("C", count), chunk=1, pipeline=1, in_flight=1
            )
        )
        await asyncio.sleep(0.05)
        interrupted.cancel()
        with pytest.raises(asyncio.CancelledError):
            await interrupted
        assert await generations_seen(store, count) == {"B"}
        gone = await store.fetch_slice("guarded", {EntityUid("Doc", "extra")})
        assert gone.entities == {}
        assert "staging" not in redis.cli("KEYS", "*")
    finally:
        await store.close()
