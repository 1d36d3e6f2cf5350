"""Fixtures shared by the security tests: a real Redis, and a proxy that delays what it sends."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.redis_support import RedisProcess, SubscriberDelay, redis_fixture

__all__ = ["delay", "redis_fixture"]


@pytest.fixture
async def delay(redis: RedisProcess) -> AsyncIterator[SubscriberDelay]:
    """A proxy in front of ``redis`` that can hold back or silence what a listener hears."""
    proxy = SubscriberDelay(redis.port)
    await proxy.start()
    yield proxy
    proxy.release()
    await proxy.stop()
