"""Every configurable request limit, sent exactly at it and one past it, through a real server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.stores import entity, write_store
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc
from verdict._gen.verdict.v1 import entities_pb2 as epb
from verdict._gen.verdict.v1 import entities_pb2_grpc as epb_grpc
from verdict.app import build_app, start, stop
from verdict.config import Settings
from verdict.store.weight import entity_text

INVALID = grpc.StatusCode.INVALID_ARGUMENT
LIMITS: dict[str, Any] = {
    "max_message_bytes": 4096,
    "max_batch_size": 3,
    "max_context_depth": 4,
    "max_context_bytes": 1024,
    "max_request_entities": 3,
    "max_request_references": 5,
    "max_id_bytes": 16,
    "max_write_entities": 3,
    "max_entity_bytes": 300,
}
STORE: dict[str, str | list[Any]] = {
    "p.cedar": '@id("all") permit(principal, action, resource);\n',
    "entities.json": [entity("User", "u"), entity("Doc", "d")],
    "store.toml": 'request_entity_types = ["G"]\n',
}


@dataclass
class Stubs:
    """Both services of one running server."""

    decisions: pb_grpc.AuthorizationServiceAsyncStub
    entities: epb_grpc.EntityServiceAsyncStub


@pytest.fixture
async def stubs(tmp_path: Path) -> AsyncIterator[Stubs]:
    """A real server on loopback with every limit set small."""
    write_store(tmp_path, "s", STORE)
    app = build_app(Settings(stores=tmp_path, default_store="s", listen="127.0.0.1:0", **LIMITS))
    server = await start(app)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield Stubs(pb_grpc.AuthorizationServiceStub(channel), epb_grpc.EntityServiceStub(channel))
    await stop(app, 0)


def request(**fields: Any) -> pb.IsAuthorizedRequest:
    """A decision request for User::u on Doc::d, with ``fields`` replaced."""
    message = pb.IsAuthorizedRequest(
        principal=pb.EntityUid(type="User", id="u"),
        action=pb.EntityUid(type="Action", id="read"),
        resource=pb.EntityUid(type="Doc", id="d"),
    )
    for name, value in fields.items():
        if isinstance(value, str):
            setattr(message, name, value)
        else:
            getattr(message, name).CopyFrom(value)
    return message


def padded(size: int) -> str:
    """A context of exactly ``size`` bytes."""
    text = json.dumps({"p": "x" * (size - 9)})
    assert len(text.encode()) == size
    return text


def nested(levels: int) -> str:
    return '{"a":' * levels + "1" + "}" * levels


def groups(count: int, prefix: str = "g") -> str:
    return json.dumps([entity("G", f"{prefix}{i}") for i in range(count)])


def references(count: int) -> str:
    return json.dumps(
        {f"r{i}": {"__entity": {"type": "User", "id": f"x{i}"}} for i in range(count)}
    )


async def refused(call: Any, code: grpc.StatusCode = INVALID) -> str:
    """The details of a call that must fail with ``code``."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code
    return info.value.details() or ""


async def decided(stubs: Stubs, message: pb.IsAuthorizedRequest) -> None:
    reply = await stubs.decisions.IsAuthorized(message, timeout=5)
    assert reply.decision == pb.DECISION_ALLOW


# (field, request at the limit, request one past it, expected message one past it)
DECISION_LIMITS = [
    ("context depth", {"context_json": nested(4)}, {"context_json": nested(5)},
     "context_json: is nested deeper than 4 levels"),
    ("context size", {"context_json": padded(1024)},
     {"context_json": padded(1025)},
     "context_json: is larger than 1024 bytes"),
    ("inline entities", {"entities_json": groups(3)}, {"entities_json": groups(4)},
     "entities_json: holds more than 3 entities (the server's limit)"),
    ("references", {"context_json": references(5)}, {"context_json": references(6)},
     "context_json: names more than 5 distinct entities"),
    ("id length", {"principal": pb.EntityUid(type="User", id="u" * 16)},
     {"principal": pb.EntityUid(type="User", id="u" * 17)},
     "principal.id: exceeds 16 bytes"),
    ("type length", {"resource": pb.EntityUid(type="D" * 16, id="d")},
     {"resource": pb.EntityUid(type="D" * 17, id="d")},
     "resource.type: exceeds 16 bytes"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("at", "past", "message"), [c[1:] for c in DECISION_LIMITS], ids=[c[0] for c in DECISION_LIMITS]
)
async def test_a_decision_one_past_a_limit_is_refused_naming_the_field(
    stubs: Stubs, at: dict[str, Any], past: dict[str, Any], message: str
) -> None:
    """At the limit the request is decided; one past it, IsAuthorized and the batch item are
    INVALID_ARGUMENT with a message naming the field and the limit."""
    await decided(stubs, request(**at))
    assert await refused(stubs.decisions.IsAuthorized(request(**past), timeout=5)) == message
    batch = pb.BatchAuthorizeRequest(requests=[request(**past), request()])
    results = (await stubs.decisions.BatchAuthorize(batch, timeout=5)).results
    assert (results[0].error.code, results[0].error.message) == (INVALID.value[0], message)
    assert results[1].response.decision == pb.DECISION_ALLOW


async def test_a_batch_one_item_past_the_limit_is_refused(stubs: Stubs) -> None:
    """max_batch_size = 3: three items are answered, four are INVALID_ARGUMENT on requests."""
    three = await stubs.decisions.BatchAuthorize(
        pb.BatchAuthorizeRequest(requests=[request()] * 3), timeout=5
    )
    assert len(three.results) == 3
    four = stubs.decisions.BatchAuthorize(
        pb.BatchAuthorizeRequest(requests=[request()] * 4), timeout=5
    )
    assert await refused(four) == "requests: more than 3 items in one batch"


async def test_a_message_one_byte_past_the_limit_is_resource_exhausted(stubs: Stubs) -> None:
    """max_message_bytes = 4096: a request of exactly 4096 bytes is decided, one of 4097 bytes
    is RESOURCE_EXHAUSTED before any parsing, the status saying the message is too large."""
    message = request(entities_json="")
    message.policy_store_id = "s"
    padding = 4096 - message.ByteSize() - 3  # field tag and two length bytes
    message.context_json = ""
    message.entities_json = " " * padding
    assert message.ByteSize() == 4096
    await decided(stubs, message)
    message.entities_json += " "
    assert message.ByteSize() == 4097
    details = await refused(
        stubs.decisions.IsAuthorized(message, timeout=5), grpc.StatusCode.RESOURCE_EXHAUSTED
    )
    assert "larger than max (4097 vs. 4096)" in details


async def test_a_write_one_entity_past_the_limit_is_refused(stubs: Stubs) -> None:
    """max_write_entities = 3: three entities are written, four are INVALID_ARGUMENT naming
    entities_json, and nothing of the refused write is stored."""
    put = stubs.entities.PutEntities
    written = await put(epb.PutEntitiesRequest(entities_json=groups(3)), timeout=5)
    assert written.written == 3
    past = put(epb.PutEntitiesRequest(entities_json=groups(4, "h")), timeout=5)
    assert await refused(past) == "entities_json: holds more than 3 entities"
    got = await stubs.entities.GetEntities(
        epb.GetEntitiesRequest(uids=[pb.EntityUid(type="G", id="h0")]), timeout=5
    )
    assert len(got.missing) == 1


async def test_an_entity_one_byte_past_the_size_limit_is_refused(stubs: Stubs) -> None:
    """max_entity_bytes = 300: an entity of 300 bytes of JSON as stored (compact) is written,
    one of 301 bytes is INVALID_ARGUMENT naming its index."""
    base = len(entity_text(entity("G", "big", {"p": ""})).encode())
    fits = [entity("G", "big", {"p": "x" * (300 - base)})]
    assert len(entity_text(fits[0]).encode()) == 300
    put = stubs.entities.PutEntities
    assert (await put(epb.PutEntitiesRequest(entities_json=json.dumps(fits)), timeout=5)).written
    fits[0]["attrs"]["p"] += "x"
    past = put(epb.PutEntitiesRequest(entities_json=json.dumps(fits)), timeout=5)
    assert await refused(past) == "entities_json[0]: is larger than 300 bytes of JSON"


async def test_entity_uids_one_byte_past_the_id_limit_are_refused(stubs: Stubs) -> None:
    """max_id_bytes = 16 holds for GetEntities and DeleteEntities uids too."""
    long_uid = pb.EntityUid(type="G", id="i" * 17)
    get = stubs.entities.GetEntities(epb.GetEntitiesRequest(uids=[long_uid]), timeout=5)
    assert await refused(get) == "uids[0].id: exceeds 16 bytes"
    delete = stubs.entities.DeleteEntities(epb.DeleteEntitiesRequest(uids=[long_uid]), timeout=5)
    assert await refused(delete) == "uids[0].id: exceeds 16 bytes"
    ok = pb.EntityUid(type="G", id="i" * 16)
    assert len((await stubs.entities.GetEntities(epb.GetEntitiesRequest(uids=[ok]))).missing) == 1


async def test_metadata_under_16_kib_is_always_answered_and_over_it_always_refused(
    stubs: Stubs,
) -> None:
    """One limit for a request's metadata: grpc refused at random between its soft (8 KiB)
    and hard (16 KiB) limits (RESOURCE_EXHAUSTED, no message), so 200 request ids (~9.6 KiB as
    grpc counts them) failed one call in a few. Now 300 (~14 KiB) pass every time and 400
    (~19 KiB) are refused every time."""
    under = tuple(("x-request-id", f"r{i}") for i in range(300))
    over = tuple(("x-request-id", f"r{i}") for i in range(400))
    for _ in range(10):
        reply = await stubs.decisions.IsAuthorized(request(), metadata=under, timeout=5)
        assert reply.decision == pb.DECISION_ALLOW
        await refused(
            stubs.decisions.IsAuthorized(request(), metadata=over, timeout=5),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        )
