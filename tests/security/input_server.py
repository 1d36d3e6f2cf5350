"""A real Verdict server (memory backend, loopback gRPC) over test stores, for the input tests."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
