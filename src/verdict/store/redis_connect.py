"""Build redis-py asyncio clients (single node or cluster) from settings."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlparse

import redis.asyncio as aioredis

from verdict.config import Settings


def make_client(settings: Settings) -> aioredis.Redis | aioredis.RedisCluster:
    """The pooled client used for reads and writes; retries are ours, not redis-py's."""
    assert settings.redis_url is not None
    timeout = settings.redis_timeout_seconds
    if settings.redis_cluster:
        return aioredis.RedisCluster.from_url(
            settings.redis_url,
            decode_responses=True,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )
    return aioredis.Redis.from_url(
        settings.redis_url,
        decode_responses=True,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry_on_timeout=False,
        max_connections=settings.redis_max_connections,
    )


def pubsub_connector(settings: Settings) -> Callable[[], aioredis.Redis]:
    """A factory of single-node clients for pub/sub.

    In a cluster, PUBLISH reaches every node, so subscribing on the seed node hears all writes.
    """
    url = settings.redis_url
    assert url is not None
    if settings.redis_cluster:
        parsed = urlparse(url)
        scheme = "rediss" if parsed.scheme == "rediss" else "redis"
        url = f"{scheme}://{parsed.netloc}/0"

    def connect() -> aioredis.Redis:
        return aioredis.Redis.from_url(
            url, decode_responses=True, socket_connect_timeout=settings.redis_timeout_seconds
        )

    return connect
