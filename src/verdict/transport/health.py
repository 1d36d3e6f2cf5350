"""grpc.health.v1 whose status changes never wait for a Watch caller (unlike grpc's own)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeAlias

import grpc
from grpc_health.v1 import health_pb2

Context = grpc.aio.ServicerContext[Any, Any]
Status: TypeAlias = health_pb2.HealthCheckResponse.ServingStatus.ValueType
# Whether the caller of one call may be told about a health name.
Shows: TypeAlias = Callable[[str], bool]
# Per call, what its caller may be told about; a name it may not is answered as unknown.
Visibility: TypeAlias = Callable[[Context], Shows]
_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


def _shows_all(name: str) -> bool:
    return True


class _Table:
    """The statuses, shared by every view of one health service (both ports)."""

    def __init__(self) -> None:
        self.status: dict[str, Status] = {}
        self.changed = asyncio.Event()  # replaced (after being set) on every wake
        self.closed = False

    def wake(self) -> None:
        """Let every Watch look again."""
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()


class HealthService:
    """Check and Watch over a name -> status table that ``set`` changes at once (added to a
    server with ``health_pb2_grpc.add_HealthServicer_to_server``).

    grpc's asyncio HealthServicer writes to each Watch stream while holding the lock that
    ``set`` needs for that name: a caller that never lets the server send (an HTTP/2 receive
    window of zero) held it for good, and every later ``set`` of the name waited forever:
    health froze, a drain never turned NOT_SERVING, SIGTERM never stopped the server. Here
    ``set`` takes no lock; a stalled watcher stalls only its own stream, and sees only the
    newest status once it can receive again.

    ``scoped`` gives a view of the same table that answers a name its caller may not see
    exactly as a name never set: NOT_FOUND for Check, SERVICE_UNKNOWN for Watch.
    """

    def __init__(self, visibility: Visibility | None = None, table: _Table | None = None) -> None:
        self._visibility = visibility
        self._table = table or _Table()

    def scoped(self, visibility: Visibility) -> HealthService:
        """A servicer over these same statuses that tells each caller only the names
        ``visibility`` shows it."""
        return HealthService(visibility, self._table)

    def close(self) -> None:
        """End every Watch stream once it has sent the newest status (the server is stopping:
        a Watch never ends by itself, and the stop would wait its whole grace for them)."""
        self._table.closed = True
        self._table.wake()

    def recheck(self) -> None:
        """Make every Watch ask again what its caller may see (the caller rules changed)."""
        self._table.wake()

    async def set(self, service: str, status: Status) -> None:
        """Report ``status`` for ``service`` (never waits)."""
        if self._table.status.get(service) != status:
            self._table.status[service] = status
            self._table.wake()

    def _shows(self, context: Context) -> Shows:
        return _shows_all if self._visibility is None else self._visibility(context)

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: Context
    ) -> health_pb2.HealthCheckResponse:
        # A hidden name is never looked up: hidden and missing take the same path.
        shown = self._shows(context)(request.service)
        status = self._table.status.get(request.service) if shown else None
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND)
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: Context) -> None:
        shows = self._shows(context)
        table = self._table
        last: Status | None = None
        while True:
            changed = table.changed
            shown = shows(request.service)  # again at every wake: a reload may change it
            status = table.status.get(request.service, _UNKNOWN) if shown else _UNKNOWN
            if status != last:
                await context.write(health_pb2.HealthCheckResponse(status=status))
                last = status
            if table.closed:
                return
            await changed.wait()

    async def List(self, request: health_pb2.HealthListRequest, context: Context) -> None:
        # As grpc's servicer: not offered (it would list every store's name to anyone).
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!")
