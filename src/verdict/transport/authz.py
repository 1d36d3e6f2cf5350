"""The edge check: who is calling, and may they call this method on these policy stores.

Each method's handler is swapped, once at registration, for a guarded one that receives the
raw request bytes: it identifies the caller (metadata and TLS peer) and checks the method group
before the request is parsed, parses it itself, checks the policy stores it names, and only
then hands it to the servicer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import grpc
import structlog
from google.protobuf.message import DecodeError

from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict.errors import PermissionDeniedError, RequestError, UnauthenticatedError, VerdictError
from verdict.telemetry.log_budget import LogBudget
from verdict.telemetry.metrics import AUTH_REFUSALS
from verdict.transport.call_context import set_caller, set_granted_stores
from verdict.transport.callers import METHOD_GROUPS, OPEN_METHODS, Grant, MethodGroup
from verdict.transport.edge_rules import EdgeRules
from verdict.transport.status import status_for

log = structlog.get_logger(__name__)
Context = grpc.aio.ServicerContext[Any, Any]
StoreResolver = Callable[[str], str | None]
if TYPE_CHECKING:  # generic only in the stubs
    Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]


def stores_named(request: object) -> Iterable[str]:
    """The policy store ids a parsed request names (every batch item's)."""
    if isinstance(request, pb.BatchAuthorizeRequest):
        return {item.policy_store_id for item in request.requests}
    store_id = getattr(request, "policy_store_id", None)
    return () if store_id is None else (store_id,)


class RulesSource(Protocol):
    """Where the current rules are read from (``ReloadingEdgeRules``, or a fixed holder)."""

    @property
    def current(self) -> EdgeRules: ...


@dataclass(frozen=True)
class FixedRules:
    """Rules that never change (tests, benchmarks)."""

    current: EdgeRules


class EdgeGuard:
    """Refuses every call that is not granted: UNAUTHENTICATED or PERMISSION_DENIED.

    ``wrap`` guards a method's handler once (transport/pipeline.py, ``StepsInterceptor``).
    Each call reads the rules once, so its identity and its grant come from one version even
    while the callers file is being reloaded.
    """

    def __init__(self, rules: RulesSource, resolve_store: StoreResolver) -> None:
        self._rules = rules
        self._resolve_store = resolve_store
        self._logs = LogBudget()

    @property
    def rules(self) -> RulesSource:
        """Where each call reads the current caller rules (health's store names too)."""
        return self._rules

    def wrap(self, handler: Handler, method: str) -> Handler | None:
        """``handler`` behind the caller check (health's methods stay open); None for a
        method shape no Verdict method has, which grpc then answers UNIMPLEMENTED."""
        if method in OPEN_METHODS:
            return handler
        return self._guard(handler, method)

    def _guard(self, handler: Handler, method: str) -> Handler | None:
        if handler.unary_unary is not None:
            return self._guard_unary(handler, method)
        if handler.stream_stream is not None:
            return self._guard_stream(handler, method)
        return None  # a shape no Verdict method has: UNIMPLEMENTED, never unguarded

    @staticmethod
    def identify(rules: EdgeRules, context: Context) -> str:
        """The caller's id; UnauthenticatedError when it has none or its token fails."""
        metadata = context.invocation_metadata() or ()
        caller = rules.authenticator.identify(metadata, context.auth_context)
        if caller is None:
            raise UnauthenticatedError("no_identity")
        return caller

    @staticmethod
    def admit(rules: EdgeRules, caller: str, method: str) -> Grant:
        """The caller's grant, if it may call ``method``; PermissionDeniedError otherwise."""
        grant = rules.callers.grant_for(caller)
        if grant is None:
            raise PermissionDeniedError("unknown_caller")
        group: MethodGroup | None = METHOD_GROUPS.get(method)
        if group is None or group not in grant.groups:
            raise PermissionDeniedError("method_not_granted")
        return grant

    @staticmethod
    def check_explain(grant: Grant, request: object) -> None:
        """Raise PermissionDeniedError when ``request`` (or a batch item) asks for an
        explanation and ``grant`` lacks the explain group."""
        if MethodGroup.EXPLAIN in grant.groups:
            return
        items = getattr(request, "requests", None)
        asked = [request] if items is None else list(items)
        if any(getattr(item, "explain", False) for item in asked):
            raise PermissionDeniedError("explain_not_granted")

    def check_stores(self, grant: Grant, request: object) -> None:
        """Raise PermissionDeniedError unless ``grant`` covers every store ``request`` names."""
        if grant.stores is None:
            return
        for store_id in stores_named(request):
            resolved = self._resolve_store(store_id) if store_id == "" else store_id
            if resolved is None or not grant.allows_store(resolved):
                raise PermissionDeniedError("store_not_granted")

    def _guard_unary(self, handler: Handler, method: str) -> Handler:
        # grpc's stubs type behaviours as sync; under grpc.aio they are coroutines.
        inner: Any = handler.unary_unary
        parse = handler.request_deserializer

        async def guarded(raw: bytes, context: Context) -> object:
            caller: str | None = None
            rules = self._rules.current
            try:
                caller = self.identify(rules, context)
                set_caller(caller)
                grant = self.admit(rules, caller, method)
                set_granted_stores(grant.stores)
                request = _parse(parse, raw)
                self.check_stores(grant, request)
                self.check_explain(grant, request)
            except VerdictError as exc:
                await _refuse(context, method, caller, exc, self._logs)
            return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            guarded, request_deserializer=None, response_serializer=handler.response_serializer
        )

    def _guard_stream(self, handler: Handler, method: str) -> Handler:
        inner: Any = handler.stream_stream

        async def guarded(requests: AsyncIterator[object], context: Context) -> AsyncIterator[Any]:
            caller: str | None = None
            rules = self._rules.current
            try:
                caller = self.identify(rules, context)
                set_caller(caller)
                set_granted_stores(self.admit(rules, caller, method).stores)
            except VerdictError as exc:
                await _refuse(context, method, caller, exc, self._logs)
            async for response in inner(requests, context):
                yield response

        return grpc.stream_stream_rpc_method_handler(
            guarded,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _parse(parse: Callable[[bytes], object] | None, raw: bytes) -> object:
    if parse is None:
        return raw
    try:
        return parse(raw)
    except DecodeError:
        raise RequestError("request", "not a valid protobuf message") from None


async def _refuse(
    context: Context, method: str, caller: str | None, exc: VerdictError, logs: LogBudget
) -> None:
    """Count and log a refusal (caller id, never the token), then abort with a fixed text.
    Refusals cost a caller nothing to provoke: their lines are capped by ``logs``; the
    refusal metric counts every one."""
    code, message = status_for(exc)
    if isinstance(exc, UnauthenticatedError | PermissionDeniedError):
        AUTH_REFUSALS.labels(exc.reason).inc()
        if logs.admit("call_refused", log):
            log.warning("call_refused", method=method, reason=exc.reason, caller=caller)
    elif logs.admit("request_rejected", log):
        log.info("request_rejected", rpc=method, code=code.name, error_type=type(exc).__name__)
    await context.abort(code, message)
