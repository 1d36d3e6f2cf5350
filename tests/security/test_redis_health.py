"""Issue 7: gRPC health tells the truth about Redis and about each store's entities."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.integration.redis_apps import load_lending, redis_settings
from tests.processes import free_port
from tests.redis_support import RedisProcess
from verdict.app import build_app, start, stop
from verdict.transport.health_scope import store_health_name
from verdict.transport.server import SERVICE_NAME

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
LENDING = store_health_name("lending")


async def status(port: int, service: str) -> int:
    """What grpc.health.v1 Health/Check says for ``service``."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=2
        )
        return int(reply.status)


async def reaches(port: int, service: str, wanted: int) -> None:
    """Wait (bounded) until ``service`` reports ``wanted``."""
    for _ in range(200):
        if await status(port, service) == wanted:
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"health of {service!r} never became {wanted}")


async def test_health_follows_redis_and_each_stores_data(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """NOT_SERVING while Redis is unreachable at start; SERVING once it answers, with the
    store NOT_SERVING until its entities are loaded; NOT_SERVING after an outage longer than
    the grace; SERVING again on recovery (the store only once reloaded)."""
    redis = RedisProcess(free_port(), tmp_path_factory.mktemp("redis"))  # not started yet
    settings = redis_settings(
        redis.url,
        cache_grace_seconds=0.5,
        redis_timeout_seconds=0.2,
        health_interval_seconds=0.05,
    )
    app = build_app(settings)
    server = await start(app)
    port = server.port
    try:
        for service in ("", SERVICE_NAME, LENDING):
            assert await status(port, service) == NOT_SERVING
        redis.start()
        await reaches(port, "", SERVING)
        assert await status(port, SERVICE_NAME) == SERVING
        assert await status(port, LENDING) == NOT_SERVING  # this Redis holds no lending data
        await load_lending(app)
        await reaches(port, LENDING, SERVING)
        redis.stop()
        await reaches(port, "", NOT_SERVING)
        assert await status(port, LENDING) == NOT_SERVING
        redis.start()  # back, but empty
        await reaches(port, "", SERVING)
        assert await status(port, LENDING) == NOT_SERVING
        await load_lending(app)
        await reaches(port, LENDING, SERVING)
    finally:
        await stop(app, 0)
        redis.stop()
