"""The ``liveness`` health name: SERVING while the process runs, whatever Redis does."""

from __future__ import annotations

import grpc
import pytest

from tests.integration.redis_apps import redis_settings
from tests.processes import free_port
from tests.redis_support import RedisProcess
from tests.security.test_redis_health import NOT_SERVING, SERVING, status
from verdict.app import build_app, start, stop
from verdict.transport.server import LIVENESS_HEALTH_NAME


async def test_liveness_stays_serving_while_redis_is_unreachable(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """With Redis never reachable, "" is NOT_SERVING (readiness keeps the pod out of the
    Service) while ``liveness`` is SERVING on both ports (the kubelet does not restart a pod a
    restart cannot fix); once stopped, the health port answers nothing."""
    redis = RedisProcess(free_port(), tmp_path_factory.mktemp("redis"))  # never started
    settings = redis_settings(
        redis.url, redis_timeout_seconds=0.2, health_listen=f"127.0.0.1:{free_port()}"
    )
    app = build_app(settings)
    server = await start(app)
    assert server.health_port is not None
    try:
        for port in (server.port, server.health_port):
            assert await status(port, "") == NOT_SERVING
            assert await status(port, LIVENESS_HEALTH_NAME) == SERVING
    finally:
        await stop(app, 0)
    with pytest.raises(grpc.aio.AioRpcError):
        await status(server.health_port, LIVENESS_HEALTH_NAME)
