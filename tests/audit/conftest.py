"""Fixtures for the audit tests: a real redis-server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.redis_support import RedisProcess, redis_server


@pytest.fixture
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """A fresh redis-server on a free loopback port, killed after the test."""
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server
