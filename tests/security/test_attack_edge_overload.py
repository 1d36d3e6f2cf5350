"""Floods at the edge: unauthenticated and bad-token calls mixed with granted ones, past the
concurrency and pending-call limits, never get a refused call through, and leave health and
later calls answering."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.cases import lending_cases
from tests.security.authn_support import token_sha256, verdict_app, write_callers
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc
from verdict.client import bearer, build_request

CASE = lending_cases()[0]
REQUEST = build_request(CASE.principal, CASE.action, CASE.resource, context=CASE.context)
CALLERS = (
    '[[callers]]\nid = "decider"\nmethods = ["decisions"]\nstores = ["lending"]\n'
    f'token_sha256 = ["{token_sha256("s3cret")}"]\n'
)
# What a refused caller may see: its refusal, or a load-shedding status; never OK.
SHED = {grpc.StatusCode.CANCELLED, grpc.StatusCode.RESOURCE_EXHAUSTED}


async def test_a_flood_never_lets_a_refused_call_through(tmp_path: Path) -> None:
    """1,000 calls (a fifth granted, the rest without identity or with a wrong token) against
    max_concurrent_calls 4: no refused call succeeds, and afterwards health and a granted call
    answer normally."""
    callers = write_callers(tmp_path, CALLERS)
    async with verdict_app(callers_file=callers, max_concurrent_calls=4) as app:
        assert app.server is not None
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") for _ in range(4)]
        stubs = [pb_grpc.AuthorizationServiceStub(ch) for ch in channels]
        gate = asyncio.Semaphore(150)
        refused: list[grpc.StatusCode] = []

        async def one(index: int) -> None:
            kind = index % 5
            metadata = bearer("s3cret") if kind == 0 else bearer("wrong") if kind == 1 else ()
            async with gate:
                try:
                    await stubs[index % 4].IsAuthorized(REQUEST, metadata=metadata, timeout=30)
                    code = grpc.StatusCode.OK
                except grpc.aio.AioRpcError as exc:
                    code = exc.code()
            if kind != 0:
                refused.append(code)

        await asyncio.gather(*(one(i) for i in range(1_000)))
        assert set(refused) <= {grpc.StatusCode.UNAUTHENTICATED, *SHED}
        health = health_pb2_grpc.HealthStub(channels[0])
        serving = await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert serving.status == health_pb2.HealthCheckResponse.SERVING
        await stubs[0].IsAuthorized(REQUEST, metadata=bearer("s3cret"), timeout=10)
        for channel in channels:
            await channel.close()
