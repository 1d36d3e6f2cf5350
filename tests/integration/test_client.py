"""The Python client covers the whole API against a live server: decisions, entity writes and
reads with read-your-writes, retries on UNAVAILABLE, and the sync twin."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Collection
from pathlib import Path

import grpc
import pytest

from tests.cases import BASE_CONTEXT
from tests.conftest import POLICIES
from tests.security.authn_support import token_sha256, verdict_app
from verdict.app import build_app
from verdict.client import ALLOW, DENY, AsyncVerdictClient, VerdictClient, bearer
from verdict.config import Settings
from verdict.engine.authorizer import Authorizer
from verdict.errors import StoreUnavailableError
from verdict.model import EntityUid
from verdict.store.base import DEFAULT_READ, EntityReader, EntitySlice, ReadOptions
from verdict.transport.server import start_server

UMA = EntityUid("Employee", "uma")


def uma(suspended: bool) -> dict[str, object]:
    """Uma's stored entity with ``suspended`` set."""
    entities = json.loads((POLICIES / "lending" / "entities.json").read_text())
    entity: dict[str, object] = next(e for e in entities if e["uid"] == UMA.to_json())
    attrs = dict(entity["attrs"])  # type: ignore[call-overload]
    return {**entity, "attrs": {**attrs, "suspended": suspended}}


async def test_entity_round_trip_with_read_your_writes() -> None:
    """put (suspend uma) -> a decision at that version denies; get returns her as written and
    names the missing uid; delete removes her; the decision then denies (no such employee)."""
    async with verdict_app() as app, AsyncVerdictClient(f"127.0.0.1:{app.server.port}") as client:  # type: ignore[union-attr]
        ask = {"context": BASE_CONTEXT}
        assert (
            await client.is_authorized(UMA, "Action::view", 'Loan::"loan-1001"', **ask)
        ).decision == ALLOW
        written = await client.put_entities([uma(True)])
        assert written.count == 1
        assert written.version > 0
        after = await client.is_authorized(
            UMA, "Action::view", 'Loan::"loan-1001"', min_entity_version=written.version, **ask
        )
        assert (after.decision, list(after.determining_policies)) == (
            DENY,
            ["forbid-suspended-principal"],
        )
        read = await client.get_entities([UMA, EntityUid("Employee", "ghost")])
        assert read.entities[0]["attrs"]["suspended"] is True
        assert read.missing == [EntityUid("Employee", "ghost")]
        assert read.version >= written.version
        deleted = await client.delete_entities([UMA])
        assert deleted.count == 1
        assert deleted.version > written.version
        assert (await client.get_entities([UMA])).missing == [UMA]
        await client.close()


async def test_the_sync_client_has_the_same_methods() -> None:
    """VerdictClient writes, reads and decides the same way (called from a worker thread, as
    the server runs on this test's event loop)."""
    async with verdict_app() as app:
        assert app.server is not None
        target = f"127.0.0.1:{app.server.port}"

        def use() -> tuple[int, bool, int]:
            with VerdictClient(target) as client:
                written = client.put_entities(json.dumps([uma(True)]))
                read = client.get_entities(['Employee::"uma"'])
                reply = client.is_authorized(
                    UMA,
                    "Action::view",
                    'Loan::"loan-1001"',
                    context=BASE_CONTEXT,
                    min_entity_version=written.version,
                )
                return written.count, read.entities[0]["attrs"]["suspended"], reply.decision

        assert await asyncio.to_thread(use) == (1, True, DENY)


class FlakyStore:
    """The real in-memory store, whose first ``failures`` reads answer "unavailable" (as a
    Redis store does while Redis restarts)."""

    def __init__(self, inner: EntityReader, failures: int) -> None:
        self.inner = inner
        self.failures = failures
        self.reads = 0

    async def fetch_slice(
        self, store_id: str, roots: Collection[EntityUid], options: ReadOptions = DEFAULT_READ
    ) -> EntitySlice:
        self.reads += 1
        if self.reads <= self.failures:
            raise StoreUnavailableError("restarting")
        return await self.inner.fetch_slice(store_id, roots, options)


@pytest.mark.parametrize(("retries", "answered"), [(3, True), (0, False)])
async def test_decisions_are_retried_on_unavailable(retries: int, answered: bool) -> None:
    """Two UNAVAILABLE answers in a row: with retries (default 3) the third attempt answers;
    with retries=0 the caller gets the first UNAVAILABLE."""
    app = build_app(Settings(stores=POLICIES, default_store="lending"))
    store = FlakyStore(app.entities, failures=2)
    server = await start_server(
        Authorizer(app.policies, store),
        "127.0.0.1:0",
        max_message_bytes=1 << 20,
        max_context_depth=32,
    )
    await server.mark_serving(["lending"])
    try:
        target = f"127.0.0.1:{server.port}"
        async with AsyncVerdictClient(target, retries=retries, timeout=5) as client:
            call = client.is_authorized(
                UMA, "Action::view", 'Loan::"loan-1001"', context=BASE_CONTEXT
            )
            if answered:
                assert (await call).decision == ALLOW
                assert store.reads == 3
            else:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await call
                assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
                assert store.reads == 1
    finally:
        await server.stop(0)


async def test_writes_need_the_entity_writes_group(tmp_path: Path) -> None:
    """With a callers file, the client's metadata authenticates; a decisions-only caller's
    put_entities is PERMISSION_DENIED while its decisions pass."""
    callers = tmp_path / "callers.toml"
    callers.write_text(
        '[[callers]]\nid = "decider"\nmethods = ["decisions"]\nstores = ["*"]\n'
        f'token_sha256 = ["{token_sha256("t0ken")}"]\n'
    )
    async with verdict_app(callers_file=callers) as app:
        assert app.server is not None
        target = f"127.0.0.1:{app.server.port}"
        async with AsyncVerdictClient(target, metadata=bearer("t0ken")) as client:
            reply = await client.is_authorized(
                UMA, "Action::view", 'Loan::"loan-1001"', context=BASE_CONTEXT
            )
            assert reply.decision == ALLOW
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await client.put_entities([uma(True)])
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
