"""Issue 14.10: duplicate JSON keys are refused, never resolved last-one-wins."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from tests.conftest import POLICIES
from tests.security.input_server import Served, ask, outcome, serve_stores
from tests.stores import write_store
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import entities_pb2 as epb
from verdict.errors import PolicyLoadError
from verdict.store.entity_file import read_entities_file

INVALID = grpc.StatusCode.INVALID_ARGUMENT
CONTEXT = '{"mfa": false, "now": "2025-03-04T10:00:00Z", "source_ip": "10.20.0.5", "mfa": true}'
PARTNER = '{"type": "Partner", "id": "p9"}'


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    """The sample lending store on a real server."""
    async with serve_stores(POLICIES, default_store="lending") as s:
        yield s


async def test_duplicate_context_key_is_invalid_argument(served: Served) -> None:
    """{"mfa": false, ..., "mfa": true} is INVALID_ARGUMENT on context_json, not an MFA ALLOW."""
    single = CONTEXT.replace('"mfa": false, ', "")
    request = ask(
        "lending", "Employee::cora", "Document::doc-1001-passport", action="Action::view_pii"
    )
    request.context_json = single
    assert (await served.authz.IsAuthorized(request, timeout=5)).decision == pb.DECISION_ALLOW
    request.context_json = CONTEXT
    code, details = await outcome(served.authz.IsAuthorized(request, timeout=5))
    assert (code, details) == (INVALID, "context_json: repeats a key within one object")
    batch = await served.authz.BatchAuthorize(
        pb.BatchAuthorizeRequest(requests=[request]), timeout=5
    )
    assert batch.results[0].error.code == INVALID.value[0]


async def test_duplicate_key_in_request_entities_is_invalid_argument(served: Served) -> None:
    """A request entity repeating a key is INVALID_ARGUMENT on entities_json."""
    text = f'[{{"uid": {PARTNER}, "attrs": {{"active": false, "active": true}}, "parents": []}}]'
    request = ask("lending", "Employee::olivia", "Loan::loan-1001", entities=text)
    code, details = await outcome(served.authz.IsAuthorized(request, timeout=5))
    assert (code, details) == (INVALID, "entities_json: repeats a key within one object")


@pytest.mark.parametrize(
    "text",
    [
        f'[{{"uid": {PARTNER}, "attrs": {{"name": "P", "kind": "bank", "active": false,'
        ' "active": true}, "parents": []}]',
        '[{"uid": {"type": "Partner", "type": "Role", "id": "p9"}, "attrs": {}, "parents": []}]',
        f'[{{"uid": {PARTNER}, "attrs": {{}}, "attrs": {{}}, "parents": []}}]',
    ],
)
async def test_duplicate_key_in_a_write_is_invalid_argument(served: Served, text: str) -> None:
    """PutEntities refuses a document repeating a key anywhere, and writes nothing."""
    request = epb.PutEntitiesRequest(policy_store_id="lending", entities_json=text)
    code, details = await outcome(served.entities.PutEntities(request, timeout=5))
    assert (code, details) == (INVALID, "entities_json: repeats a key within one object")
    got = await served.entities.GetEntities(
        epb.GetEntitiesRequest(
            policy_store_id="lending", uids=[pb.EntityUid(type="Partner", id="p9")]
        ),
        timeout=5,
    )
    assert [(m.type, m.id) for m in got.missing] == [("Partner", "p9")]


def test_duplicate_key_in_entities_file_fails_the_load(tmp_path: Path) -> None:
    """An entities.json that repeats a key is a load error, not a silent last-one-wins."""
    root = write_store(tmp_path, "s", {"p.cedar": "permit(principal, action, resource);"})
    path = root / "entities.json"
    path.write_text('[{"uid": {"type": "U", "id": "a"}, "attrs": {"x": 1, "x": 2}, "parents": []}]')
    with pytest.raises(PolicyLoadError, match="repeats a key"):
        read_entities_file(path, None)
