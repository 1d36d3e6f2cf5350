"""The edge steps are wrapped around each handler at registration (transport/pipeline.py): no
method the server serves is reachable around them, whichever lookup grpc uses, and names a
caller invents are neither served nor remembered."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import FileDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from benchmarks.noop_server import NoopAuthorizationServicer
from tests.security.authn_support import refusal_code, token_sha256, verdict_app, write_callers
from verdict._gen.verdict.v1 import admin_pb2, authorization_pb2, entities_pb2
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc
from verdict.transport.pipeline import Handler, WrappingRegistrar

GUARDED_FILES: tuple[FileDescriptor, ...] = (
    authorization_pb2.DESCRIPTOR,
    entities_pb2.DESCRIPTOR,
    admin_pb2.DESCRIPTOR,
    reflection_pb2.DESCRIPTOR,
)
CALLERS = (
    '[[callers]]\nid = "admin"\nmethods = ["decisions", "entity-reads", "entity-writes", '
    f'"admin", "explain"]\nstores = ["*"]\ntoken_sha256 = ["{token_sha256("admin-token")}"]\n'
)


def served_methods() -> list[tuple[str, bool]]:
    """Every method of Verdict's services and of reflection: (full name, streams requests)."""
    found = []
    for file in GUARDED_FILES:
        for service in file.services_by_name.values():
            for method in service.methods:
                found.append((f"/{service.full_name}/{method.name}", method.client_streaming))
    return found


@pytest.fixture
async def channel(tmp_path: Path) -> AsyncIterator[grpc.aio.Channel]:
    """A server with a callers file (one all-powerful token caller), entity writes on."""
    callers = write_callers(tmp_path, CALLERS)
    async with (
        verdict_app(callers_file=callers) as app,
        grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as ch,  # type: ignore[union-attr]
    ):
        yield ch


async def code_of(channel: grpc.aio.Channel, method: str, streaming: bool) -> grpc.StatusCode:
    """The status an anonymous call of ``method`` with an empty request ends with (a stream's
    refusal the client's late write masked counts as refused: refusal_code)."""

    async def call() -> tuple[grpc.StatusCode, Any]:
        try:
            if streaming:
                streams: Any = channel.stream_stream(method)
                async for _ in streams(iter([b""]), timeout=5):
                    pass
            else:
                unary: Any = channel.unary_unary(method)
                await unary(b"", timeout=5)
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.details()
        return grpc.StatusCode.OK, None

    return await refusal_code(call(), grpc.StatusCode.UNAUTHENTICATED)


async def test_no_served_method_answers_an_anonymous_caller(channel: grpc.aio.Channel) -> None:
    """Every method of every service (admin and reflection too) refuses a caller without a
    token before its request is read; only health answers."""
    codes = {
        method: await code_of(channel, method, streaming) for method, streaming in served_methods()
    }
    assert len(codes) >= 8
    assert set(codes.values()) <= {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNIMPLEMENTED}
    refused = [m for m, code in codes.items() if code is grpc.StatusCode.UNAUTHENTICATED]
    assert "/verdict.v1.AuthorizationService/IsAuthorized" in refused
    assert "/verdict.v1.EntityService/PutEntities" in refused
    assert "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo" in refused
    health = health_pb2_grpc.HealthStub(channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_invented_method_names_are_unimplemented(channel: grpc.aio.Channel) -> None:
    """Spellings next to real methods reach nothing."""
    for method in (
        "/verdict.v1.AuthorizationService/isauthorized",
        "/verdict.v1.AuthorizationService/IsAuthorized/",
        "/verdict.v1.authorizationservice/IsAuthorized",
        "//verdict.v1.AuthorizationService/IsAuthorized",
        "/grpc.health.v1.Health/Check/../../verdict.v1.AuthorizationService/IsAuthorized",
    ):
        assert await code_of(channel, method, False) is grpc.StatusCode.UNIMPLEMENTED, method


class _Counting:
    """A wrap that refuses every call with PERMISSION_DENIED and counts what it wrapped."""

    def __init__(self) -> None:
        self.wrapped: list[str] = []

    def __call__(self, handler: Handler, method: str) -> Handler:
        self.wrapped.append(method)

        async def refuse(request: object, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "refused by the wrap")

        return grpc.unary_unary_rpc_method_handler(
            refuse,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


async def three_refused_calls(server: grpc.aio.Server, unknown: str | None = None) -> None:
    """Start ``server``; three IsAuthorized calls must each be refused by the wrap
    (PERMISSION_DENIED), and ``unknown``, if given, be UNIMPLEMENTED each time; stop it."""
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.AuthorizationServiceStub(channel)
            for _ in range(3):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.IsAuthorized(pb.IsAuthorizedRequest(), timeout=5)
                assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
                if unknown is not None:
                    code = await code_of(channel, unknown, False)
                    assert code is grpc.StatusCode.UNIMPLEMENTED
    finally:
        await server.stop(0)


async def test_registered_handlers_are_served_only_wrapped() -> None:
    """A real server fed through the registrar: both registration paths (the generic lookup
    and grpc's registered methods) carry the wrapped handler, so the servicer never runs."""
    wrap = _Counting()
    server = grpc.aio.server()
    registrar = WrappingRegistrar(server, wrap).as_server()
    pb_grpc.add_AuthorizationServiceServicer_to_server(NoopAuthorizationServicer(), registrar)
    await three_refused_calls(server, unknown="/verdict.v1.AuthorizationService/Nope")
    # Wrapped at registration (both methods) and at most once more per method on first lookup;
    # never for a name that does not exist, and not again per call.
    method = "/verdict.v1.AuthorizationService/IsAuthorized"
    assert 1 <= wrap.wrapped.count(method) <= 2
    assert "/verdict.v1.AuthorizationService/Nope" not in wrap.wrapped


async def test_generic_only_registrations_are_served_only_wrapped() -> None:
    """A service registered through the generic lookup alone (as older generated code and
    hand-written handlers do) is wrapped too; grpc prefers registered methods when there are
    any, so this path needs its own test."""
    wrap = _Counting()
    server = grpc.aio.server()
    servicer = NoopAuthorizationServicer()
    handlers = {
        "IsAuthorized": grpc.unary_unary_rpc_method_handler(
            servicer.IsAuthorized,
            request_deserializer=pb.IsAuthorizedRequest.FromString,
            response_serializer=pb.IsAuthorizedResponse.SerializeToString,
        )
    }
    generic = grpc.method_handlers_generic_handler("verdict.v1.AuthorizationService", handlers)
    WrappingRegistrar(server, wrap).add_generic_rpc_handlers((generic,))
    await three_refused_calls(server)
    assert wrap.wrapped == ["/verdict.v1.AuthorizationService/IsAuthorized"]
