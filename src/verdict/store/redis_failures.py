"""Why a connection to Redis failed, in a few words, told by exception type (never its text)."""

from __future__ import annotations

import socket
from typing import Any, TypeVar

import redis.exceptions
from redis.asyncio.connection import AbstractConnection

_CHAIN_DEPTH = 5  # redis-py wraps a socket's error once or twice; more is not a connect failure


class DatabaseRefusedError(redis.exceptions.ConnectionError):
    """Redis refused to SELECT the URL's database (out of range, or not allowed): raised while
    connecting, so nothing the connection was opened for reached Redis."""

    def __init__(self, db: int, permitted: bool) -> None:
        super().__init__(f"database {db} refused")
        self.db = db
        self.permitted = permitted


class _SelectApart(AbstractConnection):
    """Sends the URL's SELECT on its own, after redis-py's own handshake: redis-py pipelines it
    with other replies and raises a bare ResponseError, the same type as a failed command's, so
    a database that does not exist could not be told from a script's error."""

    async def on_connect_check_health(self, check_health: bool = True) -> None:
        db, self.db = self.db, 0
        try:
            await super().on_connect_check_health(check_health)
        finally:
            self.db = db
        if not db:
            return
        await self.send_command("SELECT", db, check_health=check_health)
        try:
            await self.read_response()
        except redis.exceptions.NoPermissionError:
            raise DatabaseRefusedError(int(db), permitted=False) from None
        except redis.exceptions.ResponseError:
            raise DatabaseRefusedError(int(db), permitted=True) from None


_Connection = TypeVar("_Connection", bound=AbstractConnection)
_made: dict[type[AbstractConnection], type[AbstractConnection]] = {}


def select_apart(connection_class: type[_Connection]) -> type[_Connection]:
    """``connection_class`` whose refused SELECT raises DatabaseRefusedError (one class per
    class)."""
    made = _made.get(connection_class)
    if made is None:
        bases: tuple[type[Any], ...] = (_SelectApart, connection_class)
        made = _made[connection_class] = type(connection_class.__name__, bases, {})
    return made  # type: ignore[return-value]


def connect_failure(exc: BaseException) -> str | None:
    """Why no connection could be made, when ``exc`` (or what it wraps: redis-py raises its
    own ConnectionError while handling the socket's OSError) says so; None for anything else
    (a timeout, a dropped connection, a command's error). Each reason means nothing was sent."""
    seen: BaseException | None = exc
    for _ in range(_CHAIN_DEPTH):
        if seen is None:
            return None
        reason = _reason(seen)
        if reason is not None:
            return reason
        seen = seen.__cause__ or seen.__context__
    return None


def _reason(exc: BaseException) -> str | None:
    if isinstance(exc, redis.exceptions.RedisClusterException):
        # The cluster client found no node to learn the slots from: raised before any command
        # (a single node named with --redis-cluster, or no node of the cluster reachable).
        return "no node answered as a Redis Cluster node"
    if isinstance(exc, redis.exceptions.AuthenticationError):
        return "authentication failed"
    if isinstance(exc, DatabaseRefusedError):
        if not exc.permitted:
            return f"the Redis user may not use database {exc.db}"
        return f"database {exc.db} does not exist on this server"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "host name not found"
    if isinstance(exc, FileNotFoundError):
        return "no such socket"
    return None
