"""Issue 14.5 (input side): GetEntities repeats and reply size, and references per request."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.security.input_server import OK, Served, ask, outcome, serve_stores
from tests.stores import entity, write_store
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import entities_pb2 as epb

INVALID = grpc.StatusCode.INVALID_ARGUMENT
REPLY_LIMIT = 64 * 1024
PAD = "x" * 30_000  # three such entities pass the reply limit, two do not


@pytest.fixture
def stores(tmp_path: Path) -> Path:
    """A schema-free store with three ~30 KB documents."""
    docs = [entity("Doc", str(i), {"pad": PAD}) for i in range(3)]
    write_store(
        tmp_path,
        "s",
        {"p.cedar": "permit(principal, action, resource);", "entities.json": docs},
    )
    return tmp_path


# Each reference is 4 JSON values: the value limits are raised so that the reference cap,
# not the value count, is what these tests meet (test_json_values_* holds the value limits).
ROOMY = {
    "max_context_values": 30_000,
    "max_request_entity_values": 30_000,
    "max_batch_values": 60_000,
}


@pytest.fixture
async def served(stores: Path) -> AsyncIterator[Served]:
    """That store with the default settings but room for thousands of JSON values."""
    async with serve_stores(stores, default_store="s", **ROOMY) as s:
        yield s


@pytest.fixture
async def limited(stores: Path) -> AsyncIterator[Served]:
    """That store with a 64 KiB GetEntities reply limit."""
    async with serve_stores(stores, default_store="s", max_get_reply_bytes=REPLY_LIMIT) as s:
        yield s


def doc(i: int | str) -> pb.EntityUid:
    """The uid of Doc ``i``."""
    return pb.EntityUid(type="Doc", id=str(i))


async def get(served: Served, uids: list[pb.EntityUid]) -> tuple[Any, Any]:
    """(status, reply or details) of one GetEntities call."""
    return await outcome(served.entities.GetEntities(epb.GetEntitiesRequest(uids=uids), timeout=5))


async def test_repeated_uids_are_read_and_sent_once(served: Served) -> None:
    """One uid named 700 times (and an unknown one 300 times) comes back once each."""
    code, reply = await get(served, [doc(0)] * 700 + [doc("nope")] * 300)
    assert code is OK
    assert [e["uid"]["id"] for e in json.loads(reply.entities_json)] == ["0"]
    assert list(reply.missing) == [doc("nope")]


async def test_reply_size_is_bounded(limited: Served) -> None:
    """Entities past the reply limit are INVALID_ARGUMENT on uids; fewer per call succeed."""
    code, details = await get(limited, [doc(0), doc(1), doc(2)])
    assert code == INVALID
    assert details.startswith(f"uids: the entities found exceed the reply limit of {REPLY_LIMIT}")
    code, reply = await get(limited, [doc(0), doc(1)])
    assert code is OK
    assert len(json.loads(reply.entities_json)) == 2


def refs(n: int, start: int = 0) -> dict[str, Any]:
    """A context naming ``n`` distinct (unknown) users."""
    return {"who": [{"__entity": {"type": "User", "id": str(i)}} for i in range(start, start + n)]}


async def test_references_per_request_are_capped(served: Served) -> None:
    """1,000 distinct references are answered; 1,001 are INVALID_ARGUMENT naming the field."""
    at_limit = ask("s", "User::p", "Doc::0", refs(1000))
    assert (await served.authz.IsAuthorized(at_limit, timeout=5)).decision == pb.DECISION_ALLOW
    code, details = await outcome(
        served.authz.IsAuthorized(ask("s", "User::p", "Doc::0", refs(1001)), timeout=5)
    )
    assert (code, details) == (INVALID, "context_json: names more than 1000 distinct entities")
    inline = [entity("User", "extra", {"friend": {"__entity": {"type": "User", "id": "f"}}})]
    code, details = await outcome(
        served.authz.IsAuthorized(
            ask("s", "User::p", "Doc::0", refs(999), entities=inline), timeout=5
        )
    )
    assert (code, details) == (INVALID, "entities_json: names more than 1000 distinct entities")
    # The cap counts distinct uids: one reference repeated 5,000 times is one.
    context = {"who": [{"__entity": {"type": "User", "id": "same"}}] * 5000}
    reply = await served.authz.IsAuthorized(ask("s", "User::p", "Doc::0", context), timeout=5)
    assert reply.decision == pb.DECISION_ALLOW


async def test_batch_items_are_capped_alone(served: Served) -> None:
    """In a batch the over-limit item alone is INVALID_ARGUMENT."""
    items = [ask("s", "User::p", "Doc::0", refs(1001)), ask("s", "User::p", "Doc::0", refs(10))]
    reply = await served.authz.BatchAuthorize(pb.BatchAuthorizeRequest(requests=items), timeout=5)
    assert reply.results[0].error.code == INVALID.value[0]
    assert reply.results[1].response.decision == pb.DECISION_ALLOW
