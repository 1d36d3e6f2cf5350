"""Admission control: past the concurrency limit a call is refused at once, never queued."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import Any, TypeAlias, cast

import grpc

from verdict.telemetry import metrics

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
Behavior: TypeAlias = "Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]"


def overload_message(limit: int) -> str:
    """The status text of a refused call: the setting that bounds it, and what to do."""
    return f"max_concurrent_calls: the server is at its limit of {limit} calls; retry later"


class ConcurrencyLimit:
    """Admit at most ``limit`` unary calls of ``services`` at once; the rest get RESOURCE_EXHAUSTED.

    grpc.aio would otherwise accept every call and queue its work on the event loop, so under a
    flood every caller waits longer and longer. Health and reflection are not counted: a
    Kubernetes probe must still get through while decisions are saturated.
    """

    def __init__(self, limit: int, services: Collection[str], worker: int = 0) -> None:
        self.limit = limit
        self.active = 0
        self._prefixes = tuple(f"/{service}/" for service in services)
        # Bound once: looking a labelled child up costs more than counting into it.
        self._admitted = metrics.WORKER_CALLS.labels(worker=str(worker))

    def wrap(self, handler: Handler, method: str) -> Handler:
        """``handler`` behind the limit, if it is a unary method of the limited services."""
        if handler.unary_unary is None or not method.startswith(self._prefixes):
            return handler
        return grpc.unary_unary_rpc_method_handler(
            self._admit(cast(Behavior, handler.unary_unary)),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _admit(self, behavior: Behavior) -> Behavior:
        async def limited(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if self.active >= self.limit:
                # Counted, not logged: a flood must not turn into a flood of log lines.
                metrics.CALLS_REFUSED.labels(reason="concurrency").inc()
                await context.abort(EXHAUSTED, overload_message(self.limit))
            self.active += 1
            self._admitted.inc()
            try:
                return await behavior(request, context)
            finally:
                self.active -= 1

        return limited
