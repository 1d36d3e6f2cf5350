"""Issue 7: a burst of cache misses waits for pooled connections instead of failing."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest

from tests.cases import lending_cases
from tests.integration.redis_apps import redis_app
from tests.redis_support import RedisProcess, redis_fixture  # noqa: F401 (fixture)

BURST = 300


@pytest.mark.parametrize("deadline", [5.0, None], ids=["caller-deadline", "no-deadline"])
async def test_300_concurrent_misses_all_get_their_decision(
    redis: RedisProcess, deadline: float | None
) -> None:
    """300 concurrent decisions that all miss the cache, against a healthy Redis and a pool of
    64 connections, all get the expected decision: none is UNAVAILABLE."""
    cases = lending_cases()
    async with redis_app(redis.url, cache_max_entries=0, redis_max_connections=64) as app:
        started = time.monotonic()
        burst = [cases[i % len(cases)] for i in range(BURST)]
        answers = await asyncio.gather(
            *(
                app.authorizer.authorize(
                    replace(c.request, deadline=None if deadline is None else started + deadline)
                )
                for c in burst
            ),
            return_exceptions=True,
        )
    failures = [type(a).__name__ for a in answers if isinstance(a, BaseException)]
    assert failures == []
    decided = [a.decision.value for a in answers if not isinstance(a, BaseException)]
    assert decided == [c.expect for c in burst]
