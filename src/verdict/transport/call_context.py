"""Per-call context: a request id (the caller's ``x-request-id`` or a new one, echoed back), the
caller's identity once known, log fields bound for the call, and RPC metrics by method and code.

Each grpc.aio call runs in its own task, so context variables set here are the call's alone.
"""

from __future__ import annotations

import contextvars
import secrets
import time
from typing import Any

import grpc
import structlog

from verdict.telemetry import metrics
from verdict.transport.pipeline import Behavior, Handler, around_unary

REQUEST_ID_KEY = "x-request-id"
MAX_REQUEST_ID = 128  # longer ids are replaced: they end up in every log line and record

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="")
# The policy stores the caller's grant covers (None: every store, as without a callers file).
GRANTED_STORES: contextvars.ContextVar[frozenset[str] | None] = contextvars.ContextVar(
    "granted_stores", default=None
)


def set_caller(caller: str) -> None:
    """Remember who is calling (the edge check calls this once the caller is identified)."""
    CALLER.set(caller)
    structlog.contextvars.bind_contextvars(caller=caller)


def set_granted_stores(stores: frozenset[str] | None) -> None:
    """Remember which policy stores the caller may see (the edge check, once it admitted the
    call); replies listing stores show only these."""
    GRANTED_STORES.set(stores)


def granted_stores() -> frozenset[str] | None:
    """The policy stores this call's caller is granted; None for every store."""
    return GRANTED_STORES.get()


def request_id_from(metadata: Any) -> str:
    """The caller's request id if it is short printable ASCII, else a new random one."""
    for key, value in metadata or ():
        if key == REQUEST_ID_KEY and _acceptable(value):
            return str(value)
    return secrets.token_hex(16)  # the form of uuid4().hex, without building a UUID


def _acceptable(value: object) -> bool:
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_REQUEST_ID
        and value.isascii()
        and value.isprintable()
    )


def with_call_context(handler: Handler, method: str) -> Handler:
    """``handler`` with a request id, log context and RPC metrics for each call (unary
    methods; the health Watch stream and reflection keep their own)."""
    name = method.rpartition("/")[2]
    return around_unary(handler, lambda behavior: _with_context(behavior, name))


def _with_context(behavior: Behavior, method: str) -> Behavior:
    # Bound once: looking a labelled child up on every call costs more than observing into it.
    answered = metrics.RPC_DURATION.labels(method=method, code="OK")

    async def in_context(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        started = time.perf_counter()
        request_id = request_id_from(context.invocation_metadata())
        REQUEST_ID.set(request_id)
        structlog.contextvars.bind_contextvars(request_id=request_id, method=method)
        context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
        try:
            reply = await behavior(request, context)
        except BaseException:
            found = context.code()
            code = found.name if isinstance(found, grpc.StatusCode) else "UNKNOWN"
            elapsed = time.perf_counter() - started
            metrics.RPC_DURATION.labels(method=method, code=code).observe(elapsed)
            raise
        answered.observe(time.perf_counter() - started)
        return reply

    return in_context
