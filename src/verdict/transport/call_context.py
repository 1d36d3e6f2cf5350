"""Per-call context: a request id (the caller's ``x-request-id`` or a new one, echoed back), the
caller's identity once known, log fields bound for the call, and RPC metrics by method and code.

Each grpc.aio call runs in its own task, so context variables set here are the call's alone.
"""

from __future__ import annotations

import contextvars
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias, cast

import grpc
import structlog

from verdict.telemetry import metrics

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Behavior: TypeAlias = "Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]"
REQUEST_ID_KEY = "x-request-id"
MAX_REQUEST_ID = 128  # longer ids are replaced: they end up in every log line and record

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="")


def set_caller(caller: str) -> None:
    """Remember who is calling (the edge check calls this once the caller is identified)."""
    CALLER.set(caller)
    structlog.contextvars.bind_contextvars(caller=caller)


def request_id_from(metadata: Any) -> str:
    """The caller's request id if it is short printable ASCII, else a new random one."""
    for key, value in metadata or ():
        if key == REQUEST_ID_KEY and _acceptable(value):
            return str(value)
    return uuid.uuid4().hex


def _acceptable(value: object) -> bool:
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_REQUEST_ID
        and value.isascii()
        and value.isprintable()
    )


class CallContext(grpc.aio.ServerInterceptor):
    """Outermost interceptor: request id, log context and RPC metrics for every unary call."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        method: str = details.method
        return grpc.unary_unary_rpc_method_handler(
            _with_context(cast(Behavior, handler.unary_unary), method.rpartition("/")[2]),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _with_context(behavior: Behavior, method: str) -> Behavior:
    async def in_context(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        started = time.perf_counter()
        request_id = request_id_from(context.invocation_metadata())
        REQUEST_ID.set(request_id)
        structlog.contextvars.bind_contextvars(request_id=request_id, method=method)
        context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
        code = "OK"
        try:
            return await behavior(request, context)
        except BaseException:
            found = context.code()
            code = found.name if isinstance(found, grpc.StatusCode) else "UNKNOWN"
            raise
        finally:
            elapsed = time.perf_counter() - started
            metrics.RPC_DURATION.labels(method=method, code=code).observe(elapsed)

    return in_context
