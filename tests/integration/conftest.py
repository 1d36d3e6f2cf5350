"""Fixtures that run real Redis servers for the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.redis_support import RedisProcess, redis_cluster, redis_server


@pytest.fixture
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """A fresh redis-server on a free loopback port, killed after the test."""
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RedisProcess]]:
    """A real 3-master Redis Cluster shared by a module's tests."""
    with redis_cluster(tmp_path_factory.mktemp("cluster")) as nodes:
        yield nodes
