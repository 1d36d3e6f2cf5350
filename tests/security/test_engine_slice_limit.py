"""max_slice_entities holds on the memory store too: a larger slice fails closed, clearly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.stores import entity, write_store
from verdict.app import build_app, start, stop
from verdict.client import ALLOW, AsyncVerdictClient
from verdict.config import Settings
from verdict.errors import EntityDataError
from verdict.model import AuthorizationRequest, Decision, EntityUid

# A document whose readers attribute reaches 160 users: its slice holds 162 entities.
READERS = [{"__entity": {"type": "User", "id": f"r{i}"}} for i in range(160)]
STORE: dict[str, str | list[Any]] = {
    "p.cedar": '@id("all") permit(principal, action, resource);\n',
    "entities.json": [
        entity("User", "u"),
        entity("Doc", "big", {"readers": READERS}),
        entity("Doc", "small"),
        *(entity("User", f"r{i}") for i in range(160)),
    ],
}


def ask(resource: str) -> AuthorizationRequest:
    return AuthorizationRequest(
        EntityUid("User", "u"), EntityUid("Action", "read"), EntityUid("Doc", resource)
    )


async def test_memory_store_enforces_the_configured_slice_limit(tmp_path: Path) -> None:
    """With max_slice_entities = 100 a 162-entity slice is refused (under the default limit the
    same request is decided), and a small one is answered."""
    write_store(tmp_path, "s", STORE)
    default = build_app(Settings(stores=tmp_path))
    assert (await default.authorizer.authorize(ask("big"))).decision is Decision.ALLOW
    app = build_app(Settings(stores=tmp_path, max_slice_entities=100, listen="127.0.0.1:0"))
    with pytest.raises(EntityDataError, match="entity slice exceeds the configured maximum"):
        await app.authorizer.authorize(ask("big"))
    assert (await app.authorizer.authorize(ask("small"))).decision is Decision.ALLOW
    server = await start(app)
    try:
        async with AsyncVerdictClient(f"127.0.0.1:{server.port}") as client:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await client.is_authorized("User::u", "Action::read", "Doc::big")
            assert info.value.code() == grpc.StatusCode.INTERNAL
            assert info.value.details() == "entity slice exceeds the configured maximum"
            small = await client.is_authorized("User::u", "Action::read", "Doc::small")
            assert small.decision == ALLOW
    finally:
        await stop(app, 0)
