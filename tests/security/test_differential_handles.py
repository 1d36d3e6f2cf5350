"""Differential test: decisions with pre-parsed entity handles against the listed slice.

Random entity graphs and requests (tests/security/cedar_gen), written, decided, replaced by
another graph and decided again, on the memory store (a handle per store version) and on Redis
(handles of cached slices). Each store runs twice, handles on and off, and every answer
(alone and in a batch) must be identical: decision, determining policies, errors and, on the
memory store, the entity version. Memory decisions are compared both before the handle of a
new version has been built (list path) and after (handle path). The CI profile runs 150
examples per schema; VERDICT_DIFF_EXAMPLES scales it.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.processes import free_port
from tests.redis_support import RedisProcess
from tests.security.cedar_corpus import PLAIN_STORE, TYPED_STORE
from tests.security.cedar_gen import Example, JsonObject, examples
from tests.security.differential import LoopThread, _domain
from tests.stores import write_store
from verdict.app import App, build_app
from verdict.config import Settings
from verdict.errors import RequestError, VerdictError
from verdict.model import AuthorizationRequest, AuthorizationResult, EntityUid
from verdict.store.memory import MemoryEntityStore
from verdict.store.redis_store import RedisEntityStore

EXAMPLES = max(20, int(os.environ.get("VERDICT_DIFF_EXAMPLES", "1000")) * 3 // 20)
PROFILE = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("VERDICT_DIFF_RANDOM") != "1",
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# A comparable answer: (decision, determining, (policy, category) errors, version) or an error.
Compared = tuple[object, ...] | str


@dataclass
class Pair:
    """One store technology, with and without handles; ``redis`` apps share one Redis."""

    handles: App
    listed: App
    redis: bool
    stored: dict[str, list[EntityUid]]
    # The version of each store's last write, which Redis decisions ask for (read-your-writes).
    written: dict[str, int] = field(default_factory=dict)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LoopThread, list[Pair]]]:
    """Memory apps and Redis apps, handles on and off, on one background loop."""
    stores = tmp_path_factory.mktemp("stores")
    write_store(stores, "typed", dict(TYPED_STORE))
    write_store(stores, "plain", dict(PLAIN_STORE))
    redis = RedisProcess(free_port(), Path(tmp_path_factory.mktemp("redis")))
    redis.start()
    loop = LoopThread()
    base = Settings(stores=stores, default_store="plain")
    fast = {"redis_url": redis.url, "invalidation_ping_seconds": 0.02, "listen": "127.0.0.1:0"}
    memory = Pair(
        build_app(base), build_app(base.model_copy(update={"entity_handles": False})), False, {}
    )
    on = build_app(base.model_copy(update=fast))
    off = build_app(base.model_copy(update={**fast, "slice_handle_cache_entries": 0}))
    remote = Pair(on, off, True, {})
    apps = [memory.handles, memory.listed, on, off]
    try:
        loop.run(_start(apps))
        yield loop, [memory, remote]
        # Both handle paths were exercised, not only the list path they fall back to.
        memory_store, redis_store = memory.handles.entities, on.entities
        assert isinstance(memory_store, MemoryEntityStore)
        assert memory_store.handles is not None
        assert isinstance(redis_store, RedisEntityStore)
        assert memory_store.handles.builds > 0
        assert redis_store.slice_handles.parsed > 0
        loop.run(_stop(apps))
    finally:
        loop.close()
        redis.stop()


async def _start(apps: list[App]) -> None:
    for app in apps:
        await app.entities.prepare()
        if app.listener is not None:
            app.listener.start()
            await asyncio.wait_for(app.listener.subscribed.wait(), 10)


async def _stop(apps: list[App]) -> None:
    for app in apps:
        if app.listener is not None:
            await app.listener.stop()
        await app.entities.close()


async def _write(pair: Pair, store: str, entities: list[JsonObject]) -> bool:
    """Replace the store's entities (through EntityWrites); False when refused."""
    writers = [pair.handles] if pair.redis else [pair.handles, pair.listed]
    accepted = set()
    old = pair.stored.pop(store, [])
    for app in writers:
        if old:
            pair.written[store], _ = await app.writes.delete(store, old)
        try:
            if entities:
                pair.written[store], _ = await app.writes.put(store, json.dumps(entities))
            accepted.add(True)
        except RequestError:
            accepted.add(False)
    assert len(accepted) == 1, "the two memory stores disagree on a write"
    if True in accepted:
        pair.stored[store] = [EntityUid(e["uid"]["type"], e["uid"]["id"]) for e in entities]
    return True in accepted


def _compare(answer: AuthorizationResult | VerdictError, versions: bool) -> Compared:
    if isinstance(answer, VerdictError):
        return type(answer).__name__
    errors = tuple(sorted((e.policy_id, e.message) for e in answer.errors))
    version = answer.entity_version if versions else -1
    return (answer.decision, tuple(sorted(answer.determining_policies)), errors, version)


async def _decide(app: App, requests: list[AuthorizationRequest], versions: bool) -> list[Compared]:
    answers: list[Compared] = []
    for request in requests:
        try:
            answers.append(_compare(await app.authorizer.authorize(request), versions))
        except VerdictError as exc:
            answers.append(_compare(exc, versions))
    batch = await app.authorizer.authorize_batch(list(requests))
    assert [_compare(a, versions) for a in batch] == answers, "batch differs from single"
    return answers


async def _check(pair: Pair, store: str, requests: list[AuthorizationRequest]) -> None:
    versions = not pair.redis  # two Redis replicas may have applied different versions
    if pair.redis:
        # The listed app hears of the write by pub/sub: without read-your-writes its cache may
        # answer the previous graph for up to cache_grace_seconds (by design, docs/redis.md),
        # and on a busy machine it did, failing this test at random. Both must answer for
        # the written version at least: what is compared is handles against lists.
        version = pair.written.get(store, 0)
        requests = [replace(r, min_entity_version=version) for r in requests]
        for _ in range(2):  # the second round is served from the settled cache
            await pair.handles.authorizer.authorize_batch(list(requests))
            await asyncio.sleep(0.03)
    with_handles = await _decide(pair.handles, requests, versions)
    listed = await _decide(pair.listed, requests, versions)
    assert with_handles == listed
    if not pair.redis:
        entities = pair.handles.entities
        assert isinstance(entities, MemoryEntityStore)
        assert entities.handles is not None
        await entities.handles.settle()
        assert await _decide(pair.handles, requests, versions) == listed


def _requests(store: str, example: Example) -> list[AuthorizationRequest]:
    requests = []
    for request in example.requests:
        try:
            requests.append(_domain(store, request))
        except RequestError:
            continue
    return requests


def _run(loop: LoopThread, pairs: list[Pair], first: Example, second: Example) -> None:
    store = first.store

    async def scenario() -> None:
        for pair in pairs:
            for example in (first, second):  # the second write replaces the first graph
                if await _write(pair, store, example.entities):
                    requests = _requests(store, first) + _requests(store, second)
                    await _check(pair, store, requests)

    loop.run(scenario(), timeout=120)


@pytest.mark.timeout(max(900, EXAMPLES * 4))
@PROFILE
@given(data=st.data())
def test_handles_decide_like_the_listed_slice_without_schema(
    pairs: tuple[LoopThread, list[Pair]], data: st.DataObject
) -> None:
    """Schema-free store: handles change no answer, across writes, on either store."""
    _run(*pairs, data.draw(examples("plain")), data.draw(examples("plain")))


@pytest.mark.timeout(max(900, EXAMPLES * 4))
@PROFILE
@given(data=st.data())
def test_handles_decide_like_the_listed_slice_with_a_schema(
    pairs: tuple[LoopThread, list[Pair]], data: st.DataObject
) -> None:
    """Namespaced schema (actions from the schema only): handles change no answer."""
    _run(*pairs, data.draw(examples("typed")), data.draw(examples("typed")))
