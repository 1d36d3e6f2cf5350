"""Issue 14.1: references Cedar follows are never hidden from Verdict (one canonical form)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.security.input_server import OK, Served, ask, outcome, serve_stores, uid
from tests.stores import entity, write_store
from verdict import cedar
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import entities_pb2 as epb
from verdict.cedar_json import entity_references, entity_uid, parse_context_json, referenced_uids
from verdict.store.base import StoredEntity
from verdict.store.graph import collect_slice

INVALID = grpc.StatusCode.INVALID_ARGUMENT
X = {"type": "User", "id": "x"}  # a stored user inside Group::"blocked"
POLICIES = """
@id("open") permit(principal, action, resource);
@id("blocked-delegate") forbid(principal, action, resource)
  when { context has delegate && context.delegate in Group::"blocked" };
@id("blocked-owner") forbid(principal, action, resource)
  when { resource has owner && resource.owner in Group::"blocked" };
"""
NESTED = """
@id("blocked-nested") forbid(principal, action, resource)
  when { context has d && context.d has y && context.d.y in Group::"blocked" };
"""
SCHEMA = """
entity Group;
entity User in [Group];
entity Doc { owner?: User };
action view appliesTo { principal: User, resource: Doc, context: { delegate?: User } };
"""
ENTITIES = [
    entity("User", "x", parents=[("Group", "blocked")]),
    entity("Group", "blocked"),
    entity("User", "p"),
    entity("Doc", "d"),
]


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    """Store "free" has no schema, store "typed" has one; both hold the same entities."""
    write_store(tmp_path, "free", {"p.cedar": POLICIES + NESTED, "entities.json": ENTITIES})
    write_store(
        tmp_path,
        "typed",
        {"p.cedar": POLICIES, "schema.cedarschema": SCHEMA, "entities.json": ENTITIES},
    )
    async with serve_stores(tmp_path, default_store="free") as s:
        yield s


async def decide(served: Served, store: str, context: Any, **kw: Any) -> tuple[Any, Any]:
    """(status, decision or details) of one IsAuthorized call by User::p on a Doc."""
    resource = kw.pop("resource", "Doc::d")
    code, reply = await outcome(
        served.authz.IsAuthorized(ask(store, "User::p", resource, context, **kw), timeout=5)
    )
    return code, (reply.decision if code is OK else reply)


async def test_canonical_reference_is_denied(served: Served) -> None:
    """The canonical spellings of the blocked delegate give DENY: the control for every case."""
    for store in ("free", "typed"):
        code, decision = await decide(served, store, {"delegate": {"__entity": X}})
        assert (code, decision) == (OK, pb.DECISION_DENY)
    code, decision = await decide(served, "typed", {"delegate": X})
    assert (code, decision) == (OK, pb.DECISION_DENY)


NON_CANONICAL_CONTEXTS = [
    ("free", {"delegate": {"__entity": {**X, "v": 1}}}, "context_json.delegate.__entity"),
    ("typed", {"delegate": {"__entity": {**X, "v": 1}}}, "context_json.delegate.__entity"),
    (
        "free",
        {"__extn": {"fn": "ip", "arg": "10.0.0.1"}, "delegate": {"__entity": X}},
        "context_json",
    ),
    (
        "free",
        {"d": {"__extn": {"fn": "ip", "arg": "10.0.0.1"}, "y": {"__entity": X}}},
        "context_json.d",
    ),
    ("free", {"d": {"__extn": {"fn": 5}, "y": {"__entity": X}}}, "context_json.d"),
]


@pytest.mark.parametrize(("store", "context", "field"), NON_CANONICAL_CONTEXTS)
async def test_non_canonical_context_reference_is_rejected(
    served: Served, store: str, context: Any, field: str
) -> None:
    """A reference Cedar reads, spelled non-canonically, is INVALID_ARGUMENT naming its path."""
    code, details = await decide(served, store, context)
    assert code == INVALID
    assert details.startswith(field + ": ")


async def test_plain_record_with_extra_keys_is_followed_with_a_schema(served: Served) -> None:
    """With a schema Cedar reads {"type","id","v"} as a reference, so Verdict loads it: DENY."""
    code, decision = await decide(served, "typed", {"delegate": {**X, "v": 1}})
    assert (code, decision) == (OK, pb.DECISION_DENY)


async def test_two_string_array_is_followed_with_a_schema(served: Served) -> None:
    """With a schema Cedar reads ["User", "x"] as User::"x": accepted, and DENY like the
    canonical form (the differential test above shows the slice now holds x)."""
    code, decision = await decide(served, "typed", {"delegate": ["User", "x"]})
    assert (code, decision) == (OK, pb.DECISION_DENY)


async def test_batch_item_with_non_canonical_reference_is_rejected(served: Served) -> None:
    """In a batch the non-canonical item alone is INVALID_ARGUMENT; the control item is DENY."""
    bad = ask("free", "User::p", "Doc::d", {"delegate": {"__entity": {**X, "v": 1}}})
    good = ask("free", "User::p", "Doc::d", {"delegate": {"__entity": X}})
    reply = await served.authz.BatchAuthorize(
        pb.BatchAuthorizeRequest(requests=[bad, good]), timeout=5
    )
    assert reply.results[0].error.code == INVALID.value[0]
    assert reply.results[1].response.decision == pb.DECISION_DENY


OWNERS = [
    ("free", {"owner": {"__entity": {**X, "v": 1}}}, "entities_json[0].attrs.owner.__entity"),
    ("free", {"owner": {"__entity": X, "note": "n"}}, "entities_json[0].attrs.owner"),
    (
        "free",
        {"__extn": {"fn": "ip", "arg": "10.0.0.1"}, "owner": {"__entity": X}},
        "entities_json[0].attrs",
    ),
    ("typed", {"owner": {"__entity": {**X, "v": 1}}}, "entities_json[0].attrs.owner.__entity"),
]


@pytest.mark.parametrize(("store", "attrs", "field"), OWNERS)
async def test_non_canonical_written_reference_is_rejected(
    served: Served, store: str, attrs: Any, field: str
) -> None:
    """PutEntities refuses a non-canonical reference (naming it): no hidden owner is stored."""
    doc = {"uid": {"type": "Doc", "id": "w"}, "attrs": attrs, "parents": []}
    code, details = await outcome(
        served.entities.PutEntities(
            epb.PutEntitiesRequest(policy_store_id=store, entities_json=json.dumps([doc])),
            timeout=5,
        )
    )
    assert code == INVALID
    assert details.startswith(field + ": ")
    reply = await served.entities.GetEntities(
        epb.GetEntitiesRequest(policy_store_id=store, uids=[uid("Doc::w")]), timeout=5
    )
    assert list(reply.missing) == [uid("Doc::w")]


async def test_written_plain_record_with_extra_keys_is_followed_with_a_schema(
    served: Served,
) -> None:
    """A stored owner {"type","id","v"} (a reference for Cedar with a schema) is loaded: DENY."""
    doc = {"uid": {"type": "Doc", "id": "w"}, "attrs": {"owner": {**X, "v": 1}}, "parents": []}
    await served.entities.PutEntities(
        epb.PutEntitiesRequest(policy_store_id="typed", entities_json=json.dumps([doc])), timeout=5
    )
    code, decision = await decide(served, "typed", {}, resource="Doc::w")
    assert (code, decision) == (OK, pb.DECISION_DENY)


async def test_non_canonical_inline_reference_is_rejected(served: Served) -> None:
    """A request entity whose owner is spelled non-canonically is INVALID_ARGUMENT, never ALLOW."""
    doc = {"uid": {"type": "Doc", "id": "inline"}, "attrs": {"owner": {"__entity": {**X, "v": 1}}}}
    code, details = await decide(served, "free", {}, resource="Doc::inline", entities=[doc])
    assert code == INVALID
    assert details.startswith("entities_json[0].attrs.owner.__entity: ")


ACCEPTED_FORMS = [
    ({"delegate": {"__entity": X}}, "free"),
    ({"d": {"y": {"__entity": X}}}, "free"),
    ({"d": {"y": {"__entity": X}, "type": "User", "id": "p", "v": 1}}, "free"),
    ({"d": {"y": {"__entity": X}}, "ip": {"__extn": {"fn": "ip", "args": ["10.0.0.1"]}}}, "free"),
    ({"delegate": X}, "typed"),
    ({"delegate": {**X, "v": 1}}, "typed"),
    # serde's sequence form of {"type", "id"}: with a schema Cedar reads it as the uid.
    ({"delegate": ["User", "x"]}, "typed"),
]


@pytest.mark.parametrize(("context", "store"), ACCEPTED_FORMS)
def test_referenced_uids_covers_every_reference_cedar_follows(context: Any, store: str) -> None:
    """For each accepted spelling Cedar decides alike over Verdict's slice and all entities."""
    schema = cedar.parse_schema(SCHEMA, is_json=False) if store == "typed" else None
    text = POLICIES + (NESTED if store == "free" else "")
    policies = cedar.build_policy_set(
        {f"p{i}": p for i, p in enumerate(cedar.policy_to_json(text)["staticPolicies"].values())},
        {},
    )
    by_uid = {entity_uid(e): e for e in ENTITIES}
    request = {
        "principal": {"type": "User", "id": "p"},
        "action": {"type": "Action", "id": "view"},
        "resource": {"type": "Doc", "id": "d"},
        "context": parse_context_json(json.dumps(context)),
    }
    roots = {*referenced_uids(context), *(entity_uid(e) for e in ENTITIES[2:])}
    found = collect_slice(roots, lambda u: _stored(by_uid.get(u)))
    full = cedar.is_authorized(request, policies, ENTITIES, schema)
    sliced = cedar.is_authorized(request, policies, list(found.entities.values()), schema)
    assert full.decision == "Deny"
    assert not full.errors
    assert (sliced.decision, sliced.reasons) == (full.decision, full.reasons)


def _stored(item: dict[str, Any] | None) -> StoredEntity | None:
    return None if item is None else StoredEntity(entity_uid(item), item, entity_references(item))
