"""End-to-end tests of AuthorizationService over a real gRPC port on loopback."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from structlog.testing import capture_logs

from tests.cases import BASE_CONTEXT, DecisionCase, lending_cases
from tests.conftest import POLICIES
from tests.stores import entity, write_store
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict.app import App, build_app
from verdict.client import AsyncVerdictClient, build_request
from verdict.config import Settings
from verdict.engine.authorizer import Authorizer
from verdict.model import TYPE_NAME_PROBLEM, EntityUid
from verdict.store.base import DEFAULT_READ, EntityReader, EntitySlice, ReadOptions
from verdict.transport.server import start_server

INVALID = grpc.StatusCode.INVALID_ARGUMENT


@asynccontextmanager
async def serving(authorizer: Authorizer, **options: int) -> AsyncIterator[AsyncVerdictClient]:
    server = await start_server(
        authorizer,
        "127.0.0.1:0",
        max_message_bytes=options.get("max_message_bytes", 4 << 20),
        max_context_depth=32,
    )
    await server.mark_serving()
    try:
        async with AsyncVerdictClient(f"127.0.0.1:{server.port}") as client:
            yield client
    finally:
        await server.stop(0)


async def expect_status(call: object, code: grpc.StatusCode, message: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    assert info.value.code() == code
    assert info.value.details() == message


@pytest.mark.parametrize("case", lending_cases(), ids=str)
async def test_lending_cases_over_grpc(client: AsyncVerdictClient, case: DecisionCase) -> None:
    """The shared cases give the same answers through the wire."""
    response = await client.is_authorized(
        case.principal, case.action, case.resource, context=case.context
    )
    expected = pb.DECISION_ALLOW if case.expect == "allow" else pb.DECISION_DENY
    assert response.decision == expected
    assert set(response.determining_policies) == case.determining
    assert response.policy_store_id == "lending"
    assert response.policy_version.startswith("sha256:")


async def test_batch_returns_every_case_in_order(client: AsyncVerdictClient) -> None:
    """A batch of all shared cases answers each one, in request order."""
    cases = lending_cases()
    response = await client.batch(
        [build_request(c.principal, c.action, c.resource, context=c.context) for c in cases]
    )
    assert len(response.results) == len(cases)
    for case, result in zip(cases, response.results, strict=True):
        assert result.WhichOneof("outcome") == "response"
        assert set(result.response.determining_policies) == case.determining


def olivia(**changes: object) -> pb.IsAuthorizedRequest:
    request = build_request(
        "Employee::olivia", "Action::view", "Loan::loan-1001", context=BASE_CONTEXT
    )
    for name, value in changes.items():
        if value is None:
            request.ClearField(name)  # type: ignore[arg-type]
        else:
            setattr(request, name, value) if isinstance(value, str) else getattr(
                request, name
            ).CopyFrom(value)
    return request


BAD_REQUESTS = [
    (olivia(principal=None), "principal: is required"),
    (olivia(action=None), "action: is required"),
    (olivia(resource=None), "resource: is required"),
    (olivia(principal=pb.EntityUid(type="", id="x")), f"principal.type: {TYPE_NAME_PROBLEM}"),
    (olivia(resource=pb.EntityUid(type="Lo an", id="")), f"resource.type: {TYPE_NAME_PROBLEM}"),
    (
        olivia(principal=pb.EntityUid(type="Employee", id="x" * 2000)),
        "principal.id: exceeds 1024 bytes",
    ),
    (olivia(context_json="[1]"), "context_json: must be a JSON object (a Cedar record)"),
    (olivia(context_json="{"), "context_json: is not valid JSON at line 1 column 2"),
    (
        olivia(context_json='{"mfa": true, "geo": {"score": 0.97}}'),
        "context_json: attribute geo.score contains a fractional number; Cedar has no floats "
        "(use decimal)",
    ),
    (
        olivia(context_json='{"a":' * 50 + "1" + "}" * 50),
        "context_json: is nested deeper than 32 levels",
    ),
    (
        olivia(context_json='{"mfa": true}'),
        "context_json: attribute now is missing (the schema requires a datetime "
        '(e.g. "2025-03-04T10:00:00Z"))',
    ),
    (
        olivia(context_json='{"mfa": "yes", "now": "2025-03-04"}'),
        "context_json: attribute mfa must be a Bool",
    ),
    (
        olivia(context_json='{"mfa": true, "now": "2025-03-04", "extra": 1}'),
        "context_json: attribute extra is not declared in the schema",
    ),
    (
        olivia(action=pb.EntityUid(type="Action", id="fly")),
        'action: Action::"fly" is not declared in the schema',
    ),
    (
        olivia(action=pb.EntityUid(type="Action", id="veiw")),
        'action: Action::"veiw" is not declared; did you mean Action::"view"?',
    ),
    (
        olivia(principal=pb.EntityUid(type="Employe", id="olivia")),
        "principal: entity type Employe is not declared in the schema; did you mean Employee? "
        '(Action::"view" allows Borrower, Employee)',
    ),
    (
        olivia(resource=pb.EntityUid(type="Document", id="doc-1001-paystub")),
        'resource: entity type Document is not allowed for Action::"view" (allowed: Loan)',
    ),
    (olivia(policy_store_id="no-such-store"), "policy_store_id: names no loaded policy store"),
    (olivia(entities_json='{"uid": 1}'), "entities_json: must be a JSON array of Cedar entities"),
    (
        olivia(
            entities_json='[{"uid": {"type": "Loan", "id": "x"}, "attrs": {"amount": "?"}, '
            '"parents": []}]'
        ),
        'entities_json[0]: Loan::"x": attribute `kind` is required by the schema but missing',
    ),
    (
        # The attribute is named, its value (loan data, "SECRET-9") never echoed.
        olivia(
            entities_json='[{"uid": {"type": "Loan", "id": "x"}, "attrs": {"kind": "auto",'
            ' "amount": "SECRET-9", "status": "draft",'
            ' "owner": {"__entity": {"type": "Borrower", "id": "b"}},'
            ' "partner": {"__entity": {"type": "Partner", "id": "p"}}}, "parents": []}]'
        ),
        'entities_json[0]: Loan::"x": attribute `amount` has a value of the wrong type',
    ),
    (
        olivia(entities_json='[{"uid": {"type": "Loan", "id": "x"}, "attrs": {}}]'),
        'entities_json[0]: lacks "parents" (a Cedar entity has uid, attrs and parents)',
    ),
]


@pytest.mark.parametrize(("request_", "message"), BAD_REQUESTS, ids=[m for _, m in BAD_REQUESTS])
async def test_bad_requests_are_invalid_argument(
    client: AsyncVerdictClient, request_: pb.IsAuthorizedRequest, message: str
) -> None:
    """Each malformed request is INVALID_ARGUMENT with a message naming the field."""
    await expect_status(client.send(request_), INVALID, message)


async def test_batch_items_fail_alone(client: AsyncVerdictClient) -> None:
    """Malformed batch items get their own status; the other items are still answered."""
    requests = [olivia()] + [r for r, _ in BAD_REQUESTS] + [olivia()]
    response = await client.batch(requests)
    outcomes = [r.WhichOneof("outcome") for r in response.results]
    assert outcomes == ["response"] + ["error"] * len(BAD_REQUESTS) + ["response"]
    for result, (_, message) in zip(response.results[1:-1], BAD_REQUESTS, strict=True):
        assert (result.error.code, result.error.message) == (INVALID.value[0], message)
    assert response.results[-1].response.decision == pb.DECISION_ALLOW


async def test_batch_limit_is_invalid_argument(client: AsyncVerdictClient) -> None:
    """More items than the limit is rejected as a whole."""
    await expect_status(
        client.batch([olivia()] * 101),
        INVALID,
        "requests: more than 100 items in one batch",
    )
    assert len((await client.batch([olivia()] * 100)).results) == 100


async def test_batch_mixes_stores(tmp_path: Path) -> None:
    """One batch can address several stores, each answering with its own version."""
    shutil.copytree(POLICIES / "lending", tmp_path / "lending")
    write_store(tmp_path, "other", {"p.cedar": '@id("open") permit(principal, action, resource);'})
    app = build_app(Settings(stores=tmp_path, default_store="lending"))
    async with serving(app.authorizer) as client:
        response = await client.batch(
            [olivia(), build_request("A::a", "Action::x", "B::b", store="other"), olivia()]
        )
    stores = [r.response.policy_store_id for r in response.results]
    assert stores == ["lending", "other", "lending"]
    assert response.results[1].response.determining_policies == ["open"]
    versions = {r.response.policy_version for r in response.results}
    assert len(versions) == 2


async def test_odd_ids_travel_intact(tmp_path: Path) -> None:
    """Ids with quotes, backslashes, newlines and unicode reach Cedar unchanged."""
    ids = ['q"uote', "back\\slash", "new\nline", "ünï✓", 'mix\\"\n']
    write_store(
        tmp_path,
        "s",
        {
            "p.cedar": "permit(principal, action, resource) when { principal.ok };",
            "entities.json": [entity("U", i, {"ok": True}) for i in ids]
            + [entity("U", i + "!", {"ok": False}) for i in ids],
        },
    )
    app = build_app(Settings(stores=tmp_path))
    async with serving(app.authorizer) as client:
        for odd in ids:
            yes = await client.is_authorized(EntityUid("U", odd), "Action::a", EntityUid("R", odd))
            no = await client.is_authorized(EntityUid("U", odd + "!"), "Action::a", "R::r")
            assert (yes.decision, no.decision) == (pb.DECISION_ALLOW, pb.DECISION_DENY)


class ExplodingStore:
    """An entity store with a bug whose exception text carries loan data."""

    async def fetch_slice(
        self, store_id: str, roots: Collection[EntityUid], options: ReadOptions = DEFAULT_READ
    ) -> EntitySlice:
        raise RuntimeError("loan-1001 owner=alice amount=50000")


async def test_unexpected_exception_is_internal_without_details(lending_app: App) -> None:
    """A bug becomes INTERNAL with a fixed message; its text reaches neither caller nor logs."""
    authorizer = Authorizer(lending_app.policies, ExplodingStore())
    with capture_logs() as logs:
        async with serving(authorizer) as client:
            await expect_status(client.send(olivia()), grpc.StatusCode.INTERNAL, "internal error")
            batch = await client.batch([olivia()])
    assert batch.results[0].error.code == grpc.StatusCode.INTERNAL.value[0]
    assert "50000" not in json.dumps(logs)
    assert {"request_failed", "batch_item_failed"} <= {entry["event"] for entry in logs}


async def test_oversized_message_is_refused(lending_app: App) -> None:
    """A request above the receive limit is RESOURCE_EXHAUSTED, not processed."""
    async with serving(lending_app.authorizer, max_message_bytes=64 * 1024) as client:
        big = olivia(context_json=json.dumps({"pad": "x" * 100_000}))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.send(big)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (await client.send(olivia())).decision == pb.DECISION_ALLOW


async def test_health_and_reflection(lending_server: object) -> None:
    """Health reports SERVING and reflection lists the authorization service."""
    port = lending_server.port  # type: ignore[attr-defined]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "verdict.v1.AuthorizationService"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        replies = [r async for r in stub.ServerReflectionInfo(iter([request]))]
        names = {s.name for s in replies[0].list_services_response.service}
        assert "verdict.v1.AuthorizationService" in names


async def test_health_is_not_serving_before_policies_are_marked(lending_app: App) -> None:
    """Health says NOT_SERVING until the server is marked ready."""
    server = await start_server(
        lending_app.authorizer, "127.0.0.1:0", max_message_bytes=1 << 20, max_context_depth=32
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="")
            )
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        await server.stop(0)


class GatedStore:
    """The lending memory store, but every read waits until the test opens the gate."""

    def __init__(self, inner: EntityReader) -> None:
        self.inner = inner
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()

    async def fetch_slice(
        self, store_id: str, roots: Collection[EntityUid], options: ReadOptions = DEFAULT_READ
    ) -> EntitySlice:
        self.waiting.set()
        await self.gate.wait()
        return await self.inner.fetch_slice(store_id, roots, options)


async def test_shutdown_drains_in_flight_calls(lending_app: App) -> None:
    """Stopping with a grace period lets an in-flight decision finish and refuses new calls."""
    store = GatedStore(lending_app.entities)
    server = await start_server(
        Authorizer(lending_app.policies, store),
        "127.0.0.1:0",
        max_message_bytes=1 << 20,
        max_context_depth=32,
    )
    await server.mark_serving()
    async with AsyncVerdictClient(f"127.0.0.1:{server.port}", timeout=10) as client:
        in_flight = asyncio.create_task(client.send(olivia()))
        await asyncio.wait_for(store.waiting.wait(), 5)
        stopping = asyncio.create_task(server.stop(grace=5))
        await asyncio.sleep(0.2)  # the server is now draining
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.send(olivia())
        store.gate.set()
        reply = await in_flight
        await stopping
    assert reply.decision == pb.DECISION_ALLOW
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
