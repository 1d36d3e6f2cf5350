"""Issue 14.6: lone surrogates are refused, and every rejected request gets a status promptly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf.message import Message

from tests.cases import BASE_CONTEXT
from tests.conftest import POLICIES
from tests.security.input_server import Served, ask, serve_stores
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import entities_pb2 as epb
from verdict.cedar_json import parse_context_json, parse_entities_json
from verdict.errors import RequestError
from verdict.model import EntityUid
from verdict.transport.status import status_for

INVALID = grpc.StatusCode.INVALID_ARGUMENT
LONE = "\\ud800"  # as the caller writes it in JSON: an escape, valid ASCII on the wire
PLACEHOLDER = "SURROGATE"
BAD_UTF8 = b"\xed\xa0\x80"  # U+D800 encoded as if it were a character: not UTF-8


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    """The sample lending store on a real server."""
    async with serve_stores(POLICIES, default_store="lending") as s:
        yield s


@pytest.mark.parametrize(
    "text",
    [f'{{"a": "{LONE}"}}', f'{{"a": ["x", "{LONE}"]}}', f'{{"{LONE}": 1}}', '{"a": "\\udc00x"}'],
)
def test_lone_surrogate_in_context_is_rejected(text: str) -> None:
    """An escaped lone surrogate anywhere in the context is a RequestError under context_json."""
    with pytest.raises(RequestError, match="lone surrogate") as info:
        parse_context_json(text)
    assert info.value.field.startswith("context_json")


def test_surrogate_pairs_are_text() -> None:
    """An escaped surrogate pair is an ordinary character and passes."""
    assert parse_context_json('{"smile": "\\ud83d\\ude00"}') == {"smile": "\U0001f600"}


@pytest.mark.parametrize(
    ("entity", "field"),
    [
        (f'{{"uid": {{"type": "U", "id": "{LONE}"}}}}', "entities_json[0].uid"),
        (
            f'{{"uid": {{"type": "U", "id": "a"}}, "attrs": {{"n": "{LONE}"}}}}',
            "entities_json[0].attrs.n",
        ),
        (
            f'{{"uid": {{"type": "U", "id": "a"}}, "tags": {{"{LONE}": "t"}}}}',
            r'entities_json[0].tags["\ud800"]',
        ),
        (
            f'{{"uid": {{"type": "U", "id": "a"}}, "parents": [{{"type": "G", "id": "{LONE}"}}]}}',
            "entities_json[0].parents[0]",
        ),
    ],
)
def test_lone_surrogate_in_entities_is_rejected(entity: str, field: str) -> None:
    """Entities (request or write) holding a lone surrogate are rejected, naming the place."""
    with pytest.raises(RequestError, match="lone surrogate") as info:
        parse_entities_json(f"[{entity}]")
    assert info.value.field == field


def test_every_error_message_is_encodable() -> None:
    """A message that would carry a lone surrogate is escaped before it reaches the wire."""
    for error in (
        RequestError("entities_json[0]", f"{EntityUid('U', chr(0xD800))}: is bad"),
        RequestError("x", "plain \ud800 text"),
    ):
        _, message = status_for(error)
        message.encode("utf-8")
    assert str(EntityUid("U", "a\ud800\n\0")) == 'U::"a\\u{d800}\\n\\0"'


async def test_put_entities_with_lone_surrogate_id_is_answered(served: Served) -> None:
    """PutEntities with id "\\ud800" gets INVALID_ARGUMENT at once (it used to hang)."""
    text = f'[{{"uid": {{"type": "Partner", "id": "{LONE}"}}, "attrs": {{}}, "parents": []}}]'
    request = epb.PutEntitiesRequest(policy_store_id="lending", entities_json=text)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await served.entities.PutEntities(request, timeout=5)
    assert info.value.code() == INVALID
    assert (info.value.details() or "").startswith("entities_json[0].uid: ")


def _entities(attrs: str = "{}", id_: str = "p") -> str:
    return f'[{{"uid": {{"type": "Partner", "id": "{id_}"}}, "attrs": {attrs}, "parents": []}}]'


def _olivia(**fields: str) -> pb.IsAuthorizedRequest:
    request = ask("lending", "Employee::olivia", "Loan::loan-1001", BASE_CONTEXT)
    for name, value in fields.items():
        if name == "principal_id":
            request.principal.id = value
        else:
            setattr(request, name, value)
    return request


AUTHZ = "/verdict.v1.AuthorizationService/"
ENTITY = "/verdict.v1.EntityService/"
PARTNER = pb.EntityUid(type="Partner", id=PLACEHOLDER)
# (method, request, expected code or None for "any error"); PLACEHOLDER becomes bytes that are
# not UTF-8, which only a hostile client can send.
REJECTED: list[tuple[str, Message, grpc.StatusCode | None]] = [
    (AUTHZ + "IsAuthorized", _olivia(context_json=f'{{"a": "{LONE}"}}'), INVALID),
    (AUTHZ + "IsAuthorized", _olivia(context_json=f'{{"{LONE}": 1}}'), INVALID),
    (AUTHZ + "IsAuthorized", _olivia(entities_json=_entities(id_=LONE)), INVALID),
    (AUTHZ + "IsAuthorized", _olivia(context_json='{"a": 1, "a": 2}'), INVALID),
    (AUTHZ + "IsAuthorized", _olivia(principal_id=PLACEHOLDER), None),
    (AUTHZ + "IsAuthorized", _olivia(policy_store_id=PLACEHOLDER), None),
    (
        AUTHZ + "BatchAuthorize",
        pb.BatchAuthorizeRequest(requests=[_olivia(principal_id=PLACEHOLDER)]),
        None,
    ),
    (ENTITY + "PutEntities", epb.PutEntitiesRequest(entities_json=_entities(id_=LONE)), INVALID),
    (
        ENTITY + "PutEntities",
        epb.PutEntitiesRequest(entities_json=_entities(f'{{"name": "{LONE}"}}')),
        INVALID,
    ),
    (
        ENTITY + "PutEntities",
        epb.PutEntitiesRequest(entities_json=_entities(id_="\\u0007\\n")),
        INVALID,
    ),
    (ENTITY + "PutEntities", epb.PutEntitiesRequest(entities_json=f'["{PLACEHOLDER}"]'), None),
    (ENTITY + "DeleteEntities", epb.DeleteEntitiesRequest(uids=[PARTNER]), None),
    (ENTITY + "GetEntities", epb.GetEntitiesRequest(uids=[PARTNER]), None),
]


@pytest.mark.parametrize(("method", "request_", "code"), REJECTED, ids=lambda v: str(v)[:40])
async def test_every_rejected_request_gets_a_status(
    served: Served, method: str, request_: Message, code: grpc.StatusCode | None
) -> None:
    """Each hostile request on each RPC is answered with an error status, never left to time out."""
    raw = request_.SerializeToString().replace(PLACEHOLDER.encode(), BAD_UTF8)
    call = served.channel.unary_unary(method, request_serializer=bytes, response_deserializer=bytes)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await asyncio.wait_for(call(raw, timeout=5), 10)
    assert info.value.code() is not grpc.StatusCode.DEADLINE_EXCEEDED
    if code is not None:
        assert info.value.code() == code
    (info.value.details() or "").encode("utf-8")


async def test_batch_item_with_lone_surrogate_gets_its_own_status(served: Served) -> None:
    """A batch item with a lone surrogate is INVALID_ARGUMENT alone; the rest is answered."""
    bad = _olivia(context_json=f'{{"a": "{LONE}"}}')
    reply = await served.authz.BatchAuthorize(
        pb.BatchAuthorizeRequest(requests=[bad, _olivia()]), timeout=5
    )
    assert reply.results[0].error.code == INVALID.value[0]
    assert reply.results[1].WhichOneof("outcome") == "response"
