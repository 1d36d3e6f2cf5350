"""The fault suite's proxy does what the table claims: adds latency, cuts, keeps pub/sub out."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
import redis.exceptions

from tests.cases import lending_cases
from tests.faults.load import Oracle, Outcome, Revocation
from tests.faults.proxy import FaultProxy
from tests.redis_support import RedisProcess, redis_fixture
from verdict.model import EntityUid

__all__ = ["redis_fixture"]


@pytest.fixture
async def proxy(redis: RedisProcess) -> AsyncIterator[FaultProxy]:
    """A FaultProxy in front of a real redis-server."""
    fault_proxy = FaultProxy(redis.port)
    await fault_proxy.start()
    yield fault_proxy
    await fault_proxy.stop()


def client(proxy: FaultProxy) -> aioredis.Redis:
    return aioredis.Redis.from_url(proxy.url, socket_timeout=2, retry_on_timeout=False)


async def test_latency_delays_replies(proxy: FaultProxy) -> None:
    """With 0.2 s latency a PING through the proxy takes at least 0.2 s, then none again."""
    conn = client(proxy)
    assert await conn.ping()
    proxy.latency = 0.2
    started = time.monotonic()
    assert await conn.ping()
    assert time.monotonic() - started >= 0.2
    proxy.latency = 0.0
    await conn.aclose()


async def test_cut_breaks_open_connections(proxy: FaultProxy) -> None:
    """A cut connection fails its next command; a new connection works."""
    conn = aioredis.Redis.from_url(proxy.url, socket_timeout=2, retry=None)
    assert await conn.ping()
    assert proxy.cut() >= 1
    with pytest.raises(redis.exceptions.ConnectionError):
        await conn.ping()
    assert await conn.ping()  # the pool opens a fresh connection
    await conn.aclose()


async def test_blocked_subscribers_cannot_subscribe(proxy: FaultProxy) -> None:
    """While subscribers are blocked, a PSUBSCRIBE loses its connection; commands still work."""
    proxy.block_subscribers = True
    conn = client(proxy)
    pubsub = conn.pubsub()

    async def subscribe() -> None:
        await pubsub.psubscribe("x:*")
        await pubsub.get_message(timeout=1)

    with pytest.raises(redis.exceptions.ConnectionError):
        await subscribe()
    assert await conn.ping()
    await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]
    await conn.aclose()


def test_the_oracle_only_tolerates_allows_within_the_grace() -> None:
    """After a revocation an ALLOW is tolerated within the grace, and wrong after it."""
    cases = lending_cases()
    uma = EntityUid("Employee", "uma")
    index = next(i for i, c in enumerate(cases) if c.principal == uma and c.expect == "allow")
    oracle = Oracle(cases, grace=1.0)
    oracle.revocations.append(Revocation(uma, 10.0, 10.1, 20.0, 20.1))

    def allowed(at: float) -> str:
        return oracle.verdict(Outcome(index, at, at + 0.01, "OK", True))

    assert allowed(9.0) == "answered"
    assert allowed(10.5) == "answered"  # within the grace
    assert allowed(12.0) == "wrongly_allowed"
    assert allowed(22.0) == "answered"  # restored
