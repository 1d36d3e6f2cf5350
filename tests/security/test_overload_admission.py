"""Overload: past max_concurrent_calls a call is refused at once; a late call is not evaluated."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from dataclasses import replace

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.cases import lending_cases
from tests.conftest import POLICIES
from tests.integration.redis_apps import redis_app
from tests.redis_support import RedisProcess
from verdict.app import build_app
from verdict.client import ALLOW, AsyncVerdictClient
from verdict.config import Settings
from verdict.engine.authorizer import Authorizer
from verdict.errors import DeadlineExceededError, StoreUnavailableError
from verdict.model import EntityUid
from verdict.store.base import DEFAULT_READ, EntityReader, EntitySlice, ReadOptions
from verdict.transport.server import start_server

ALLOWED = next(c for c in lending_cases() if c.expect == "allow")


class GatedStore:
    """The real in-memory store, whose reads wait until the test opens the gate."""

    def __init__(self, inner: EntityReader) -> None:
        self.inner = inner
        self.gate = asyncio.Event()
        self.waiting = 0
        self.reads = 0
        self.abandoned = 0

    async def fetch_slice(
        self, store_id: str, roots: Collection[EntityUid], options: ReadOptions = DEFAULT_READ
    ) -> EntitySlice:
        self.reads += 1
        self.waiting += 1
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.abandoned += 1
            raise
        finally:
            self.waiting -= 1
        return await self.inner.fetch_slice(store_id, roots, options)


@asynccontextmanager
async def gated_server(
    limit: int, client_timeout: float
) -> AsyncIterator[tuple[GatedStore, int, AsyncVerdictClient]]:
    """A real server over a GatedStore, and a client to it with ``client_timeout``."""
    app = build_app(Settings(stores=POLICIES, default_store="lending"))
    store = GatedStore(app.entities)
    authorizer = Authorizer(app.policies, store)
    server = await start_server(
        authorizer,
        "127.0.0.1:0",
        max_message_bytes=1 << 20,
        max_context_depth=32,
        max_concurrent_calls=limit,
    )
    await server.mark_serving(["lending"])
    try:
        async with AsyncVerdictClient(f"127.0.0.1:{server.port}", timeout=client_timeout) as client:
            yield store, server.port, client
    finally:
        store.gate.set()
        await server.stop(0)


async def ask(client: AsyncVerdictClient) -> int:
    case = ALLOWED
    reply = await client.is_authorized(
        case.principal, case.action, case.resource, context=case.context
    )
    return int(reply.decision)


async def until(condition: object, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_calls_past_the_concurrency_limit_are_refused_at_once() -> None:
    """With max_concurrent_calls = 2 and two calls in progress, a third is RESOURCE_EXHAUSTED
    naming the setting without waiting, health still answers, and the two admitted calls
    complete; once they have, calls are admitted again."""
    async with gated_server(limit=2, client_timeout=10) as (store, port, client):
        held = [asyncio.create_task(ask(client)) for _ in range(2)]
        await until(lambda: store.waiting == 2)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await asyncio.wait_for(ask(client), 5)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (info.value.details() or "").startswith("max_concurrent_calls: ")
        assert store.reads == 2  # the refused call read nothing
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        store.gate.set()
        assert await asyncio.gather(*held) == [ALLOW, ALLOW]
        assert await ask(client) == ALLOW


async def test_a_call_whose_deadline_passes_while_waiting_is_abandoned() -> None:
    """A call whose deadline passes while its entities are read is DEADLINE_EXCEEDED, and the
    server abandons its work there (the read is cancelled, nothing is evaluated)."""
    async with gated_server(limit=8, client_timeout=0.3) as (store, _, client):
        late = asyncio.create_task(ask(client))
        await until(lambda: store.waiting == 1)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await late
        await until(lambda: store.abandoned == 1)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert store.reads == 1


async def test_a_request_past_its_deadline_reads_nothing() -> None:
    """The engine refuses a request whose deadline has passed before reading any entity, for
    IsAuthorized and for every item of a batch."""
    app = build_app(Settings(stores=POLICIES, default_store="lending"))
    store = GatedStore(app.entities)
    store.gate.set()
    authorizer = Authorizer(app.policies, store)
    late = replace(ALLOWED.request, deadline=time.monotonic() - 0.001)
    with pytest.raises(DeadlineExceededError):
        await authorizer.authorize(late)
    answers = await authorizer.authorize_batch([late, late])
    assert all(isinstance(a, DeadlineExceededError) for a in answers)
    assert store.reads == 0
    on_time = replace(ALLOWED.request, deadline=time.monotonic() + 5)
    assert (await authorizer.authorize(on_time)).allowed


async def test_redis_reads_use_only_the_remaining_time(redis: RedisProcess) -> None:
    """With a stalled Redis and a 2 s operation timeout (3 attempts), a request with 0.3 s
    left gives up when its deadline passes, not after the store's own timeouts."""
    async with redis_app(redis.url, cache_max_entries=0, redis_timeout_seconds=2.0) as app:
        assert redis.process is not None
        os.kill(redis.process.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            request = replace(ALLOWED.request, deadline=started + 0.3)
            with pytest.raises((StoreUnavailableError, DeadlineExceededError)):
                await app.authorizer.authorize(request)
            assert time.monotonic() - started < 1.5
        finally:
            os.kill(redis.process.pid, signal.SIGCONT)
