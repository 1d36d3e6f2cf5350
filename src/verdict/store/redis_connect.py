"""Build redis-py asyncio clients (single node or cluster) and the key layout from settings."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from verdict.config import Settings
from verdict.store.cluster_nodes import ClusterMasters, ClusterNodes
from verdict.store.redis_failures import select_apart
from verdict.store.redis_keys import KeyLayout
from verdict.store.redis_packing import hiredis_packing
from verdict.store.subscriptions import SingleNode, Subscriptions


def _no_retry() -> Retry:
    """Retries are ours (bounded by the caller's deadline), never redis-py's."""
    return Retry(NoBackoff(), 0)


def make_client(settings: Settings) -> aioredis.Redis | aioredis.RedisCluster:
    """The pooled client used for reads and writes.

    A burst of cache misses waits for a free connection instead of failing: the pool blocks
    without a timeout of its own, and every call is bounded by the caller's deadline instead.
    """
    assert settings.redis_url is not None
    timeout = settings.redis_timeout_seconds
    if settings.redis_cluster:
        return aioredis.RedisCluster.from_url(
            settings.redis_url,
            decode_responses=True,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        timeout=None,
        decode_responses=True,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=_no_retry(),
    )
    pool.connection_class = select_apart(hiredis_packing(pool.connection_class))
    return aioredis.Redis.from_pool(pool)


def key_layout(settings: Settings) -> KeyLayout:
    """This deployment's names: its namespace and database (always 0 on a cluster)."""
    assert settings.redis_url is not None
    db = 0 if settings.redis_cluster else int(parse_url(settings.redis_url).get("db", 0))
    return KeyLayout(settings.redis_namespace, db)


def pubsub_connector(settings: Settings) -> Subscriptions:
    """Where the invalidation listener subscribes: the one Redis, or every cluster master.

    redis-py must not reconnect behind the listener's back: a silent resubscription would hide
    that messages were missed. Replies stay bytes: redis-py reads a pong's payload correctly
    only then. No socket timeout: silence is the listener's to judge, and redis-py's timed
    send (``asyncio.wait_for``) can swallow the listener's cancellation on Python 3.11.
    """
    url = settings.redis_url
    assert url is not None
    if settings.redis_cluster:
        nodes = ClusterNodes(url, settings.redis_timeout_seconds)
        return ClusterMasters(nodes, key_layout(settings))

    def connect() -> aioredis.Redis:
        return aioredis.Redis.from_url(
            url,
            socket_timeout=None,
            socket_connect_timeout=settings.redis_timeout_seconds,
            retry=_no_retry(),
        )

    return SingleNode(connect)
