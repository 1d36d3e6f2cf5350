"""The plaintext health port and open health on the main port, attacked by callers with no
identity: nothing but health answers there, and floods of it do not starve decisions."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from tests.cases import lending_cases
from tests.conftest import POLICIES
from tests.processes import free_port
from tests.security.authn_support import token_sha256, verdict_app, write_callers
from tests.security.serve_process import running_server
from tests.security.test_server_connections import (
    FLOOD,
    LIMITS,
    NOFILE,
    STALLED_PREFACE,
    closed_by_server,
    disburse,
    open_sockets,
)
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc
from verdict._gen.verdict.v1 import entities_pb2 as epb
from verdict._gen.verdict.v1 import entities_pb2_grpc as epb_grpc
from verdict.client import bearer, build_request

CASE = lending_cases()[0]
REQUEST = build_request(CASE.principal, CASE.action, CASE.resource, context=CASE.context)
CALLERS = (
    '[[callers]]\nid = "decider"\nmethods = ["decisions"]\nstores = ["*"]\n'
    f'token_sha256 = ["{token_sha256("s3cret")}"]\n'
)
UNIMPLEMENTED = grpc.StatusCode.UNIMPLEMENTED
REFLECTION_INFO = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"


async def status_of(call: object) -> grpc.StatusCode:
    """The status code a call ends with (OK when it succeeds)."""
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_the_health_port_serves_health_alone(tmp_path: Path) -> None:
    """On the plaintext health port decisions, entity calls and reflection are UNIMPLEMENTED,
    even with a valid token: only grpc.health.v1 is there."""
    callers = write_callers(tmp_path, CALLERS)
    async with verdict_app(callers_file=callers, health_listen="127.0.0.1:0") as app:
        assert app.server is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.health_port}") as channel:
            md = bearer("s3cret")
            decide = pb_grpc.AuthorizationServiceStub(channel).IsAuthorized(REQUEST, metadata=md)
            assert await status_of(decide) is UNIMPLEMENTED
            batch = pb.BatchAuthorizeRequest(requests=[REQUEST])
            batched = pb_grpc.AuthorizationServiceStub(channel).BatchAuthorize(batch, metadata=md)
            assert await status_of(batched) is UNIMPLEMENTED
            put = epb.PutEntitiesRequest(policy_store_id="lending", entities_json="[]")
            written = epb_grpc.EntityServiceStub(channel).PutEntities(put, metadata=md)
            assert await status_of(written) is UNIMPLEMENTED
            # Asked as a unary call: grpc core answers an unregistered method before any
            # handler, and a stream's late write can mask that status with INTERNAL.
            ask = reflection_pb2.ServerReflectionRequest(list_services="").SerializeToString()
            listing: Any = channel.unary_unary(REFLECTION_INFO)
            assert await status_of(listing(ask, metadata=md, timeout=5)) is UNIMPLEMENTED
            check = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert await status_of(check) is grpc.StatusCode.OK


async def test_a_flood_of_open_health_watches_does_not_starve_decisions(tmp_path: Path) -> None:
    """Health is open on the main port: 300 Watch streams held by a caller with no identity
    leave decisions and health checks answering."""
    callers = write_callers(tmp_path, CALLERS)
    async with verdict_app(callers_file=callers) as app:
        assert app.server is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            watches = [health.Watch(health_pb2.HealthCheckRequest()) for _ in range(300)]

            async def first(watch: grpc.aio.UnaryStreamCall[object, object]) -> None:
                async for _ in watch:
                    return

            await asyncio.gather(*(first(w) for w in watches), return_exceptions=True)
            stub = pb_grpc.AuthorizationServiceStub(channel)
            for _ in range(20):
                decide = stub.IsAuthorized(REQUEST, metadata=bearer("s3cret"), timeout=10)
                assert await status_of(decide) is grpc.StatusCode.OK
            check = health.Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert await status_of(check) is grpc.StatusCode.OK
            for watch in watches:
                watch.cancel()


def test_a_flood_of_stalled_handshakes_on_the_health_port_leaves_calls_working() -> None:
    """300 sockets stalled mid-preface on the health port under a 256-descriptor limit: the
    main port still answers and the health port closes them. The health port had no
    connection limit and grpc's 120 s handshake: main-port calls timed out."""
    health_port = free_port()
    args = ("--default-store", "lending", "--health-listen", f"127.0.0.1:{health_port}")
    with (
        running_server(POLICIES, *args, env=LIMITS, nofile=NOFILE) as (process, port),
        open_sockets(health_port, FLOOD, STALLED_PREFACE) as flood,
    ):
        assert disburse(port) == pb.DECISION_ALLOW
        assert all(closed_by_server(sock, within=10) for sock in flood)
        assert process.poll() is None
