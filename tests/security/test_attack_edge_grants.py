"""Grant escapes at the edge: a caller limited to some methods or stores tries to reach others
through other services, the default store, batch items, spellings of store ids and protobuf
wire tricks."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.cases import lending_cases
from tests.conftest import POLICIES
from tests.security.authn_support import refusal_code, token_sha256, verdict_app, write_callers
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc
from verdict._gen.verdict.v1 import entities_pb2 as epb
from verdict._gen.verdict.v1 import entities_pb2_grpc as epb_grpc
from verdict.client import bearer, build_request

CASE = lending_cases()[0]
OK = grpc.StatusCode.OK
DENIED = grpc.StatusCode.PERMISSION_DENIED
GRANTS = {
    "lending-decider": ('["decisions"]', '["lending"]'),
    "retail-decider": ('["decisions"]', '["retail"]'),
    "retail-writer": ('["entity-reads", "entity-writes"]', '["retail"]'),
}


def decision(store: str) -> pb.IsAuthorizedRequest:
    """The first shared case, addressed to ``store``."""
    return build_request(
        CASE.principal, CASE.action, CASE.resource, context=CASE.context, store=store
    )


def auth(name: str) -> tuple[tuple[str, str], ...]:
    """Metadata authenticating as the token caller ``name``."""
    return tuple(bearer(f"{name}-token"))


@pytest.fixture
async def channel(tmp_path: Path) -> AsyncIterator[grpc.aio.Channel]:
    """Stores lending (the default) and retail, one token caller per grant in GRANTS."""
    stores = tmp_path / "stores"
    for name in ("lending", "retail"):
        shutil.copytree(POLICIES / "lending", stores / name)
    text = "".join(
        f'\n[[callers]]\nid = "{name}"\nmethods = {methods}\nstores = {granted}\n'
        f'token_sha256 = ["{token_sha256(f"{name}-token")}"]\n'
        for name, (methods, granted) in GRANTS.items()
    )
    callers = write_callers(tmp_path, text)
    async with (
        verdict_app(stores=stores, default_store="lending", callers_file=callers) as app,
        grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as ch,  # type: ignore[union-attr]
    ):
        yield ch


async def status_of(call: object) -> grpc.StatusCode:
    """The status code a call ends with (OK when it succeeds)."""
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return OK


async def test_a_decisions_caller_reaches_no_other_service(channel: grpc.aio.Channel) -> None:
    """EntityService, both reflection versions and an unknown method are closed to a decider."""
    entities = epb_grpc.EntityServiceStub(channel)
    md = auth("lending-decider")
    get = epb.GetEntitiesRequest(policy_store_id="lending")
    put = epb.PutEntitiesRequest(policy_store_id="lending", entities_json="[]")
    delete = epb.DeleteEntitiesRequest(policy_store_id="lending")
    assert await status_of(entities.GetEntities(get, metadata=md)) is DENIED
    assert await status_of(entities.PutEntities(put, metadata=md)) is DENIED
    assert await status_of(entities.DeleteEntities(delete, metadata=md)) is DENIED
    ask = reflection_pb2.ServerReflectionRequest(list_services="").SerializeToString()
    served = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
    call: grpc.aio.StreamStreamCall[bytes, bytes] = channel.stream_stream(served)(
        iter([ask]), metadata=md
    )
    assert await refusal_code(stream_outcome(call), DENIED) is DENIED
    # Methods the server does not register are answered by grpc core before any handler, so
    # no refusal is counted and a stream's late write could mask the status
    # (CLIENT_WRITE_AFTER_STATUS) with nothing to tell the two apart: these are asked as unary
    # calls, whose one write goes out with the headers. The edge sees the same method path.
    for path in (
        served,
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/verdict.v1.AdminService/Anything",
    ):
        unary: Any = channel.unary_unary(path)
        try:
            await unary(ask, metadata=md, timeout=5)
            code = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
        assert code in {DENIED, grpc.StatusCode.UNIMPLEMENTED}, path
    listing = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    unauthenticated = grpc.StatusCode.UNAUTHENTICATED
    assert await refusal_code(stream_outcome(listing), unauthenticated) is unauthenticated


async def stream_outcome(call: Any) -> tuple[grpc.StatusCode, Any]:
    """(code, details) a streaming call ends with, its replies read and dropped."""
    try:
        async for _ in call:
            pass
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details()
    return grpc.StatusCode.OK, None


async def test_the_default_store_is_checked_as_the_store_it_names(
    channel: grpc.aio.Channel,
) -> None:
    """An empty store id is the default store (lending): a retail-only caller is refused it,
    alone, in a batch beside a granted item, and for entity reads and writes."""
    stub, entities = pb_grpc.AuthorizationServiceStub(channel), epb_grpc.EntityServiceStub(channel)
    retail = auth("retail-decider")
    assert await status_of(stub.IsAuthorized(decision("retail"), metadata=retail)) is OK
    assert await status_of(stub.IsAuthorized(decision(""), metadata=retail)) is DENIED
    mixed = pb.BatchAuthorizeRequest(requests=[decision("retail"), decision("")])
    assert await status_of(stub.BatchAuthorize(mixed, metadata=retail)) is DENIED
    lending = pb.BatchAuthorizeRequest(requests=[decision(""), decision("lending")])
    assert await status_of(stub.BatchAuthorize(lending, metadata=auth("lending-decider"))) is OK
    writer = auth("retail-writer")
    get = epb.GetEntitiesRequest(policy_store_id="")
    put = epb.PutEntitiesRequest(policy_store_id="", entities_json="[]")
    assert await status_of(entities.GetEntities(get, metadata=writer)) is DENIED
    assert await status_of(entities.PutEntities(put, metadata=writer)) is DENIED


@pytest.mark.parametrize(
    "store", ["Lending", "LENDING", " lending", "lending ", "lending\x00", "lending/", "*", "**"]
)
async def test_spellings_of_a_store_id_are_other_stores(
    channel: grpc.aio.Channel, store: str
) -> None:
    """A retail-only caller naming lending in another case, with spaces, NUL, a slash or a
    glob character is refused: store ids are compared exactly and ``*`` is only a grant."""
    stub = pb_grpc.AuthorizationServiceStub(channel)
    retail = auth("retail-decider")
    assert await status_of(stub.IsAuthorized(decision(store), metadata=retail)) is DENIED
    put = epb.PutEntitiesRequest(policy_store_id=store, entities_json="[]")
    entities = epb_grpc.EntityServiceStub(channel)
    assert await status_of(entities.PutEntities(put, metadata=auth("retail-writer"))) is DENIED


async def test_a_repeated_store_field_is_checked_as_parsed(channel: grpc.aio.Channel) -> None:
    """Protobuf keeps the last of a repeated scalar field: bytes naming retail, then lending,
    are checked as lending, the store the servicer sees (one parse serves both)."""
    wire = decision("retail").SerializeToString()
    wire += pb.IsAuthorizedRequest(policy_store_id="lending").SerializeToString()
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
        "/verdict.v1.AuthorizationService/IsAuthorized"
    )
    assert await status_of(call(wire, metadata=auth("retail-decider"))) is DENIED
    swapped = decision("lending").SerializeToString()
    swapped += pb.IsAuthorizedRequest(policy_store_id="retail").SerializeToString()
    assert await status_of(call(swapped, metadata=auth("retail-decider"))) is OK


async def test_bytes_that_are_not_a_request_are_refused_after_identity(
    channel: grpc.aio.Channel,
) -> None:
    """Undecodable bytes get INVALID_ARGUMENT from a granted caller and UNAUTHENTICATED from
    one without identity: parsing never runs before identity."""
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
        "/verdict.v1.AuthorizationService/IsAuthorized"
    )
    garbage = b"\xff\xff\xff\xff"
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    assert await status_of(call(garbage, metadata=auth("retail-decider"))) is invalid
    assert await status_of(call(garbage)) is grpc.StatusCode.UNAUTHENTICATED
