"""Issue 7: uids as Cedar has them: empty ids, namespaced types, Cedar's ``Type::"id"`` strings."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.security.input_server import Served, outcome, serve_stores
from tests.stores import entity, write_store
from verdict import model
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import entities_pb2 as epb
from verdict.client import build_request
from verdict.errors import RequestError
from verdict.model import EntityUid
from verdict.uid_arg import parse_uid_arg

INVALID = grpc.StatusCode.INVALID_ARGUMENT
TYPE_NAME_PROBLEM = "must be a Cedar entity type name, e.g. Loan or Lending::Loan"
OK = grpc.StatusCode.OK
POLICY = """
@id("ok") permit(principal, action, resource) when { principal has ok && principal.ok };
@id("blocked") forbid(principal, action, resource)
  when { context has who && context.who in Bank::Group::"blocked" };
"""
ENTITIES = [
    entity("Bank::User", "", {"ok": True}, parents=[("Bank::Group", "blocked")]),
    entity("Bank::User", "a::b", {"ok": True}),
    entity("Bank::Group", "blocked"),
]


@pytest.fixture
def stores(tmp_path: Path) -> Path:
    """One schema-free store whose entities.json holds an empty id and a namespaced type."""
    write_store(tmp_path, "bank", {"p.cedar": POLICY, "entities.json": ENTITIES})
    return tmp_path


@pytest.fixture
async def served(stores: Path) -> AsyncIterator[Served]:
    """That store on a real server."""
    async with serve_stores(stores, default_store="bank") as s:
        yield s


def request(principal: pb.EntityUid | None, context: object = None) -> pb.IsAuthorizedRequest:
    """User ``principal`` views Doc::"d"."""
    message = pb.IsAuthorizedRequest(
        action=pb.EntityUid(type="Action", id="view"),
        resource=pb.EntityUid(type="Bank::Doc", id="d"),
        context_json=json.dumps(context or {}),
    )
    if principal is not None:
        message.principal.CopyFrom(principal)
    return message


async def test_empty_id_is_an_entity_in_requests(served: Served) -> None:
    """A present principal with id "" is User::"" (loaded from entities.json), not an error."""
    empty = pb.EntityUid(type="Bank::User", id="")
    reply = await served.authz.IsAuthorized(request(empty), timeout=5)
    assert (reply.decision, list(reply.determining_policies)) == (pb.DECISION_ALLOW, ["ok"])
    code, details = await outcome(served.authz.IsAuthorized(request(None), timeout=5))
    assert (code, details) == (INVALID, "principal: is required")


async def test_empty_id_reference_in_context_is_followed(served: Served) -> None:
    """{"__entity": {"type": ..., "id": ""}} is loaded like any reference: the forbid fires."""
    who = {"__entity": {"type": "Bank::User", "id": ""}}
    reply = await served.authz.IsAuthorized(
        request(pb.EntityUid(type="Bank::User", id="a::b"), {"who": who}), timeout=5
    )
    assert (reply.decision, list(reply.determining_policies)) == (pb.DECISION_DENY, ["blocked"])


async def test_empty_id_is_written_read_and_deleted(served: Served) -> None:
    """PutEntities, GetEntities and DeleteEntities all accept the empty id."""
    doc = pb.EntityUid(type="Bank::Doc", id="")
    text = json.dumps([entity("Bank::Doc", "")])
    put = await served.entities.PutEntities(epb.PutEntitiesRequest(entities_json=text), timeout=5)
    assert put.written == 1
    got = await served.entities.GetEntities(epb.GetEntitiesRequest(uids=[doc]), timeout=5)
    assert json.loads(got.entities_json)[0]["uid"] == {"type": "Bank::Doc", "id": ""}
    gone = await served.entities.DeleteEntities(epb.DeleteEntitiesRequest(uids=[doc]), timeout=5)
    assert gone.deleted == 1


@pytest.mark.parametrize("bad", ["", "in", "Bank::", "Bank::true", "1Bank", "Bank ::User", "Bänk"])
async def test_malformed_type_name_is_named(served: Served, bad: str) -> None:
    """A type Cedar's grammar rejects is INVALID_ARGUMENT on that very field, on every RPC."""
    code, details = await outcome(
        served.authz.IsAuthorized(request(pb.EntityUid(type=bad, id="x")), timeout=5)
    )
    assert (code, details) == (INVALID, f"principal.type: {TYPE_NAME_PROBLEM}")
    uids = [pb.EntityUid(type="Bank::Doc", id="d"), pb.EntityUid(type=bad, id="x")]
    for call in (
        served.entities.GetEntities(epb.GetEntitiesRequest(uids=uids), timeout=5),
        served.entities.DeleteEntities(epb.DeleteEntitiesRequest(uids=uids), timeout=5),
    ):
        assert await outcome(call) == (INVALID, f"uids[1].type: {TYPE_NAME_PROBLEM}")


CHECK_MANY = """
import sys
from verdict.cli import main
stores, *pairs = sys.argv[1:]
for principal, action in zip(pairs[::2], pairs[1::2]):
    args = ["--principal", principal, "--action", action, "--resource", "Bank::Doc::d"]
    print(main(["check", "--stores", stores, *args]), file=sys.stderr)
"""


def test_cli_takes_cedar_uid_strings(stores: Path) -> None:
    """`verdict check` reads Type::"id" with escapes, the empty id and ids holding ::."""
    pairs = [
        ('Bank::User::""', 'Action::"view"'),
        ('Bank::User::"a::b"', 'Action::"view"'),
        ('Bank::User::"a\\u{3a}:b"', "Action::view"),
        ("Bank::User::a::b", "Action::view"),  # type Bank::User::a, id b: not found
    ]
    done = subprocess.run(
        [sys.executable, "-c", CHECK_MANY, str(stores), *(x for pair in pairs for x in pair)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.stderr.split() == ["0", "0", "0", "1"], done.stderr


@pytest.mark.parametrize(
    ("text", "uid"),
    [
        ("Loan::loan-1001", EntityUid("Loan", "loan-1001")),
        ("Lending::Loan::loan-1", EntityUid("Lending::Loan", "loan-1")),
        ('User::""', EntityUid("User", "")),
        ('Lending::Loan::"a::b"', EntityUid("Lending::Loan", "a::b")),
        (
            'User::"q\\"uote\\\\ \\n\\t\\r\\0\\\' \\x41 \\u{1F600}"',
            EntityUid("User", "q\"uote\\ \n\t\r\0' A \U0001f600"),
        ),
        ('User::x"y', EntityUid("User", 'x"y')),
    ],
)
def test_uid_strings_are_read_like_cedar(text: str, uid: EntityUid) -> None:
    """Both string forms give the uid Cedar would read (the quoted one with Cedar's escapes)."""
    assert parse_uid_arg(text, "uid") == uid
    assert build_request(text, "Action::view", "R::r").principal == pb.EntityUid(
        type=uid.type, id=uid.id
    )


@pytest.mark.parametrize(
    "text",
    [
        "User",
        "User::",
        "::x",
        'User::"a',
        'User::"a"b"',
        'User::"\\q"',
        'User::"\\u{d800}"',
        'User::"\\x80"',
        'User::"\\u{110000}"',
        'User::"a\\"',
        "in::x",
        "User::\ud800",
    ],
)
def test_malformed_uid_strings_are_errors(text: str) -> None:
    """A uid string Cedar would not read is a RequestError naming the field."""
    with pytest.raises(RequestError) as info:
        parse_uid_arg(text, "--principal")
    assert info.value.field == "--principal"


@given(
    st.sampled_from(["User", "Lending::Loan", "A::B::C"]),
    st.text(st.characters(exclude_categories=["Cs"]), max_size=40),
)
def test_printed_uids_read_back(type_: str, id_: str) -> None:
    """str(EntityUid) is Cedar's escaped form, and parse_uid_arg reads it back exactly."""
    uid = EntityUid(type_, id_)
    assert parse_uid_arg(str(uid), "uid") == uid


def test_long_type_names_are_not_remembered() -> None:
    """Type-name checks remember only short names, so invented long ones cannot grow memory."""
    before = model._cached_type_name.cache_info().currsize
    for i in range(50):
        assert model.is_type_name("T" * 1000 + "-" + str(i)) is False
        assert model.is_type_name("T" * 1000 + "_" + str(i)) is True
    assert model._cached_type_name.cache_info().currsize == before
