"""Wrap each method handler once with the edge's per-call steps (call context, caller check,
admission), instead of rebuilding it on every call as Verdict's three interceptors did.

The server uses ``StepsInterceptor``: one interceptor that wraps a method's handler on its first
call and keeps it. ``WrappingRegistrar`` wraps at registration with no interceptor at all; it is
kept for benchmarks/bench_edge.py. (The in-flight calls once lost at SIGTERM with it were not its
doing: grpc core cancels the calls queued in it at shutdown, whatever the pipeline; see
``ConcurrencyLimit.close``.)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import grpc

if TYPE_CHECKING:  # generic only in the stubs
    Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]
else:
    Handler: TypeAlias = grpc.RpcMethodHandler

# (handler, full method name "/package.Service/Method") -> the handler to serve, or None to
# refuse the method (grpc then answers UNIMPLEMENTED).
Wrap: TypeAlias = "Callable[[Handler, str], Handler | None]"
# What a unary handler runs for one call: (request, context) -> response.
Behavior: TypeAlias = "Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]"


def around_unary(handler: Handler, step: Callable[[Behavior], Behavior]) -> Handler:
    """``handler`` with its behavior passed through ``step``, if it is a unary method (a
    stream's handler is returned as it is); its (de)serializers kept."""
    if handler.unary_unary is None:
        return handler
    return grpc.unary_unary_rpc_method_handler(
        step(cast(Behavior, handler.unary_unary)),
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class PassThrough(grpc.aio.ServerInterceptor):
    """An interceptor that changes nothing: benchmarks/bench_edge.py measures registration-time
    wrapping behind it, to separate the cost of having an interceptor from that of the steps."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        return await continuation(handler_call_details)


class StepsInterceptor(grpc.aio.ServerInterceptor):
    """Applies ``wrap`` to a method's handler on the method's first call and keeps the result:
    per call, one dict lookup (names a caller invents are not kept). How the server applies
    its edge steps: it also covers handlers registered by code that bypasses a registrar."""

    def __init__(self, wrap: Wrap) -> None:
        self._wrap = wrap
        self._wrapped: dict[str, Handler | None] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        method: str = handler_call_details.method
        try:
            return self._wrapped[method]
        except KeyError:
            pass
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        wrapped = self._wrap(handler, method)
        self._wrapped[method] = wrapped
        return wrapped


class WrappingRegistrar:
    """Stands in for the server in the generated ``add_*Servicer_to_server`` functions (and
    reflection's and health's): every handler they register reaches the server wrapped."""

    def __init__(self, server: grpc.aio.Server, wrap: Wrap) -> None:
        self._server = server
        self._wrap = wrap

    def as_server(self) -> grpc.aio.Server:
        """This registrar, typed as the generated functions' stubs expect (they call nothing
        but the two methods below)."""
        return cast(grpc.aio.Server, self)

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        """Register ``handlers``, each behind a lookup that wraps what it returns."""
        self._server.add_generic_rpc_handlers(
            tuple(_WrappedLookup(handler, self._wrap) for handler in handlers)
        )

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, Handler]) -> None:
        """Register a service's method handlers, wrapped (a refused method is left out)."""
        wrapped: dict[str, Handler] = {}
        for name, handler in handlers.items():
            found = self._wrap(handler, f"/{service}/{name}")
            if found is not None:
                wrapped[name] = found
        self._server.add_registered_method_handlers(service, wrapped)


class _WrappedLookup(grpc.GenericRpcHandler):
    """A generic handler whose answers are wrapped, once per method."""

    def __init__(self, inner: grpc.GenericRpcHandler, wrap: Wrap) -> None:
        self._inner = inner
        self._wrap = wrap
        # Only methods the inner handler serves are kept: names a caller makes up are not.
        self._wrapped: dict[str, Handler | None] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler | None:
        method: str = handler_call_details.method
        try:
            return self._wrapped[method]
        except KeyError:
            pass
        handler = self._inner.service(handler_call_details)
        if handler is None:
            return None
        wrapped = self._wrap(handler, method)
        self._wrapped[method] = wrapped
        return wrapped
