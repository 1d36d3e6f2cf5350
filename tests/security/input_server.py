"""A real Verdict server (memory backend, loopback gRPC) over test stores, for the input tests."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc

from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc
from verdict._gen.verdict.v1 import entities_pb2_grpc as epb_grpc
from verdict.app import build_app, start, stop
from verdict.config import Settings

DEADLINE = 5.0
OK = grpc.StatusCode.OK


@dataclass
class Served:
    """Stubs of both services of one running server."""

    authz: pb_grpc.AuthorizationServiceAsyncStub
    entities: epb_grpc.EntityServiceAsyncStub
    channel: grpc.aio.Channel


@asynccontextmanager
async def serve_stores(stores: Path, **settings: Any) -> AsyncIterator[Served]:
    """Build the app from ``stores`` exactly as ``verdict serve`` does and serve it."""
    app = build_app(Settings(stores=stores, listen="127.0.0.1:0", **settings))
    server = await start(app)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield Served(
                pb_grpc.AuthorizationServiceStub(channel),
                epb_grpc.EntityServiceStub(channel),
                channel,
            )
    finally:
        await stop(app, 0)


async def outcome(call: Any) -> tuple[grpc.StatusCode, Any]:
    """(OK, reply) or (status code, details) of an awaited call."""
    try:
        return OK, await call
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details()


def uid(text: str) -> pb.EntityUid:
    """``TYPE::ID`` (split at the last ``::``) as a proto uid."""
    type_, _, id_ = text.rpartition("::")
    return pb.EntityUid(type=type_, id=id_)


def ask(
    store: str,
    principal: str,
    resource: str,
    context: Any = None,
    entities: Any = None,
    action: str = "Action::view",
) -> pb.IsAuthorizedRequest:
    """An IsAuthorizedRequest; context and entities are JSON text or values to dump."""
    return pb.IsAuthorizedRequest(
        policy_store_id=store,
        principal=uid(principal),
        action=uid(action),
        resource=uid(resource),
        context_json=context if isinstance(context, str) else json.dumps(context or {}),
        entities_json=entities if isinstance(entities, str) else json.dumps(entities or []),
    )


T = TypeVar("T")


async def loop_held_while(work: Awaitable[T]) -> tuple[float, T]:
    """The longest the event loop was held (beyond a 2 ms sleep) while ``work`` ran, and its
    result: a task sleeping 2 ms at a time measures each late wake-up."""
    done = False
    worst = 0.0

    async def lag_monitor() -> None:
        nonlocal worst
        while not done:
            started = time.perf_counter()
            await asyncio.sleep(0.002)
            worst = max(worst, time.perf_counter() - started - 0.002)

    task = asyncio.create_task(lag_monitor())
    await asyncio.sleep(0.05)
    try:
        result = await work
    finally:
        done = True
        await task
    return worst, result
