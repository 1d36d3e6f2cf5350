"""grpc.health.v1 whose status changes never wait for a Watch caller (unlike grpc's own)."""

from __future__ import annotations

import asyncio
from typing import Any, TypeAlias

import grpc
from grpc_health.v1 import health_pb2

Context = grpc.aio.ServicerContext[Any, Any]
Status: TypeAlias = health_pb2.HealthCheckResponse.ServingStatus.ValueType
_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class HealthService:
    """Check and Watch over a name -> status table that ``set`` changes at once (added to a
    server with ``health_pb2_grpc.add_HealthServicer_to_server``).

    grpc's asyncio HealthServicer writes to each Watch stream while holding the lock that
    ``set`` needs for that name: a caller that never lets the server send (an HTTP/2 receive
    window of zero) held it for good, and every later ``set`` of the name waited forever:
    health froze, a drain never turned NOT_SERVING, SIGTERM never stopped the server. Here
    ``set`` takes no lock; a stalled watcher stalls only its own stream, and sees only the
    newest status once it can receive again.
    """

    def __init__(self) -> None:
        self._status: dict[str, Status] = {}
        self._changed = asyncio.Event()  # replaced (after being set) on every change
        self._closed = False

    def close(self) -> None:
        """End every Watch stream once it has sent the newest status (the server is stopping:
        a Watch never ends by itself, and the stop would wait its whole grace for them)."""
        self._closed = True
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def set(self, service: str, status: Status) -> None:
        """Report ``status`` for ``service`` (never waits)."""
        if self._status.get(service) != status:
            self._status[service] = status
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: Context
    ) -> health_pb2.HealthCheckResponse:
        status = self._status.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND)
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: Context) -> None:
        last: Status | None = None
        while True:
            changed = self._changed
            status = self._status.get(request.service, _UNKNOWN)
            if status != last:
                await context.write(health_pb2.HealthCheckResponse(status=status))
                last = status
            if self._closed:
                return
            await changed.wait()

    async def List(self, request: health_pb2.HealthListRequest, context: Context) -> None:
        # As grpc's servicer: not offered (it would list every store's name to anyone).
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!")
