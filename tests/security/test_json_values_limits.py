"""JSON values per request are counted while parsing and refused over the limits, before Cedar.

Each value (container or scalar) costs Cedar up to ~5 us to convert on the event loop, so the
number of values, not bytes, is what bounds a request's loop time (docs/security.md, "JSON
values"). Small limits keep these tests fast; one test holds the defaults.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.cases import lending_cases
from tests.security.input_server import OK, Served, ask, outcome, serve_stores
from tests.stores import entity, write_store
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import entities_pb2 as epb
from verdict.client import build_request
from verdict.config import Settings

INVALID = grpc.StatusCode.INVALID_ARGUMENT
POLICIES = Path(__file__).parents[2] / "policies"
LIMITS = {
    "max_context_values": 50,
    "max_request_entity_values": 60,
    "max_batch_values": 200,
    "max_entity_values": 40,
}
STORE: dict[str, str | list[Any]] = {
    "p.cedar": "permit(principal, action, resource);\n",
    "entities.json": [entity("User", "u"), entity("Doc", "d")],
    "store.toml": 'request_entity_types = ["Doc"]\n',
}


def context_of(values: int) -> dict[str, Any]:
    """A context of exactly ``values`` JSON values: the record, the list, and its numbers."""
    return {"l": list(range(values - 2))}


def doc_of(id_: str, values: int) -> dict[str, Any]:
    """An inline Doc of exactly ``values`` JSON values (the entity, its uid of three, attrs
    and its list, parents: seven, plus the numbers)."""
    return entity("Doc", id_, {"l": list(range(values - 7))})


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    """A schema-free store that takes inline Docs, served with small value limits."""
    write_store(tmp_path, "s", STORE)
    async with serve_stores(tmp_path, default_store="s", **LIMITS) as s:
        yield s


async def decide(served: Served, context: Any = None, entities: Any = None) -> tuple[Any, Any]:
    """(status, reply or details) of one IsAuthorized call."""
    request = ask("s", "User::u", "Doc::d", context, entities)
    return await outcome(served.authz.IsAuthorized(request, timeout=5))


def test_default_limits() -> None:
    """The defaults are the measured ones (benchmarks/bench_json_values.py)."""
    settings = Settings()
    assert settings.max_context_values == 1_000
    assert settings.max_request_entity_values == 1_500
    assert settings.max_batch_values == 4_000
    assert settings.max_entity_values == 1_000


async def test_context_at_the_limit_passes_one_more_is_refused(served: Served) -> None:
    """A context of 50 values is decided; 51 is INVALID_ARGUMENT naming context_json."""
    code, reply = await decide(served, context_of(50))
    assert code is OK
    assert reply.decision == pb.DECISION_ALLOW
    assert await decide(served, context_of(51)) == (
        INVALID,
        "context_json: holds more than 50 JSON values (the server's limit)",
    )


async def test_separators_inside_strings_are_not_values(served: Served) -> None:
    """Commas and brackets inside strings make the cheap bound overshoot, never the count:
    such a context is counted exactly (3 values) and decided."""
    code, reply = await decide(served, {"s": ",[{" * 5_000, "t": "]"})
    assert code is OK
    assert reply.decision == pb.DECISION_ALLOW


async def test_huge_context_is_refused_without_parsing_it_all(served: Served) -> None:
    """4 MiB of empty lists (1.4 million values) is refused as over a limit, not parsed: the
    byte limit (checked before parsing) answers first; the value limit would have next."""
    text = '{"l": [' + "[]," * 1_390_000 + "[]]}"
    assert await decide(served, text) == (INVALID, "context_json: is larger than 1048576 bytes")
    text = '{"l": [' + "[]," * 300_000 + "[]]}"  # under 1 MiB: the value count refuses it
    assert await decide(served, text) == (
        INVALID,
        "context_json: holds more than 50 JSON values (the server's limit)",
    )


async def test_inline_entities_are_limited_together(served: Served) -> None:
    """Inline entities of 60 values in all are decided; one more value is refused, naming
    entities_json, though each entity alone is small."""
    code, reply = await decide(served, entities=[doc_of("a", 30), doc_of("b", 29)])
    assert code is OK
    assert reply.decision == pb.DECISION_ALLOW
    assert await decide(served, entities=[doc_of("a", 30), doc_of("b", 30)]) == (
        INVALID,
        "entities_json: holds more than 60 JSON values (the server's limit)",
    )


async def test_written_entity_over_the_limit_is_refused_naming_it(served: Served) -> None:
    """PutEntities refuses an entity of 41 values naming its index; nothing is written; 40
    values pass."""
    big = [entity("Blob", "ok", {"l": list(range(33))}), entity("Blob", "big", {"l": [0] * 34})]
    request = epb.PutEntitiesRequest(policy_store_id="s", entities_json=json.dumps(big))
    assert await outcome(served.entities.PutEntities(request, timeout=5)) == (
        INVALID,
        "entities_json[1]: holds more than 40 JSON values (the server's limit per item)",
    )
    uids = [pb.EntityUid(type="Blob", id="ok")]
    code, reply = await outcome(
        served.entities.GetEntities(epb.GetEntitiesRequest(uids=uids), timeout=5)
    )
    assert code is OK
    assert json.loads(reply.entities_json) == []
    request.entities_json = json.dumps(big[:1])
    code, reply = await outcome(served.entities.PutEntities(request, timeout=5))
    assert code is OK
    assert reply.written == 1


async def test_batch_items_share_one_budget(served: Served) -> None:
    """Five items of 40 values each (a context of 39 and an empty entity list: 200 in all)
    are decided; a sixth refuses the whole call naming requests, though each item is within
    its own limits."""
    items = [ask("s", "User::u", "Doc::d", context_of(39)) for _ in range(5)]
    code, reply = await outcome(
        served.authz.BatchAuthorize(pb.BatchAuthorizeRequest(requests=items), timeout=5)
    )
    assert code is OK
    assert [r.response.decision for r in reply.results] == [pb.DECISION_ALLOW] * 5
    items.append(ask("s", "User::u", "Doc::d", context_of(2)))
    code, details = await outcome(
        served.authz.BatchAuthorize(pb.BatchAuthorizeRequest(requests=items), timeout=5)
    )
    assert code == INVALID
    assert details.startswith("requests: hold more than 200 JSON values together")


async def test_an_item_over_its_own_limit_fails_alone(served: Served) -> None:
    """In a batch within its budget, an item over the context limit is that item's error."""
    items = [ask("s", "User::u", "Doc::d", context_of(51)), ask("s", "User::u", "Doc::d")]
    code, reply = await outcome(
        served.authz.BatchAuthorize(pb.BatchAuthorizeRequest(requests=items), timeout=5)
    )
    assert code is OK
    assert reply.results[0].error.code == INVALID.value[0]
    assert reply.results[0].error.message.startswith("context_json: holds more than 50")
    assert reply.results[1].response.decision == pb.DECISION_ALLOW


async def test_refused_items_spend_the_budget_too(served: Served) -> None:
    """Parsing a refused item is work as well: items refused at their own limit use up the
    batch's budget, so a batch of them cannot make the server parse 100 x the limit."""
    over = ask("s", "User::u", "Doc::d", context_of(5_000))
    code, details = await outcome(
        served.authz.BatchAuthorize(pb.BatchAuthorizeRequest(requests=[over] * 10), timeout=5)
    )
    assert code == INVALID
    assert details.startswith("requests: hold more than 200 JSON values together")


async def test_realistic_batches_fit_the_default_budget() -> None:
    """100 lending decisions (each context ~4-10 values) pass the default budget with
    room to spare: the limits refuse only what no caller needs."""
    cases = lending_cases()
    items = [
        build_request(c.principal, c.action, c.resource, context=c.context, store="lending")
        for c in (cases * 4)[:100]
    ]
    async with serve_stores(POLICIES) as served:
        code, reply = await outcome(
            served.authz.BatchAuthorize(pb.BatchAuthorizeRequest(requests=items), timeout=10)
        )
    assert code is OK
    expected = [c.expect for c in (cases * 4)[:100]]
    decided = [
        "allow" if r.response.decision == pb.DECISION_ALLOW else "deny" for r in reply.results
    ]
    assert decided == expected
