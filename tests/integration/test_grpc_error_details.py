"""INVALID_ARGUMENT over a real gRPC port carries google.rpc.BadRequest field violations in the
status details, beside the message, and neither ever echoes a context value."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from tests.cases import BASE_CONTEXT
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict.client import AsyncVerdictClient, build_request

SECRET = "SECRET-4111-1111-1111-1111"


def view(context: Any, principal: str = "Employee::olivia", action: str = "Action::view") -> Any:
    """A view request on loan-1001 with ``context`` (a dict, or JSON text as is)."""
    request = build_request(principal, action, "Loan::loan-1001", context=BASE_CONTEXT)
    request.context_json = context if isinstance(context, str) else json.dumps(context)
    return request


def violations(status: status_pb2.Status) -> list[tuple[str, str]]:
    """The (field, description) pairs of the BadRequest in a status's details."""
    found = []
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        assert detail.Unpack(bad)
        found += [(v.field, v.description) for v in bad.field_violations]
    return found


CASES = [
    (view({"mfa": SECRET, "now": "2025-03-04"}), "context_json", "attribute mfa must be a Bool"),
    (
        view({"mfa": True, "now": SECRET}),
        "context_json",
        'attribute now must be a datetime (e.g. "2025-03-04T10:00:00Z")',
    ),
    (
        view({"mfa": True, "now": "2025-03-04", "source_ip": SECRET}),
        "context_json",
        'attribute source_ip must be an ipaddr (e.g. "10.0.0.1")',
    ),
    (
        view({"mfa": True, "now": "2025-03-04", "note": SECRET}),
        "context_json",
        "attribute note is not declared in the schema",
    ),
    (
        view({"now": SECRET}),
        "context_json",
        "attribute mfa is missing (the schema requires a Bool)",
    ),
    (
        view('{"mfa": true,\n "now": "' + SECRET + '" x}'),
        "context_json",
        "is not valid JSON at line 2 column 38",
    ),
    (
        view({"mfa": True, "now": "2025-03-04"}, action="Action::veiw"),
        "action",
        'Action::"veiw" is not declared; did you mean Action::"view"?',
    ),
    (
        view({"mfa": True, "now": "2025-03-04"}, principal="Role::admin"),
        "principal",
        'entity type Role is not allowed for Action::"view" (allowed: Borrower, Employee)',
    ),
]


@pytest.mark.parametrize(("request_", "field", "problem"), CASES, ids=[c[2] for c in CASES])
async def test_invalid_argument_carries_a_field_violation(
    client: AsyncVerdictClient, request_: pb.IsAuthorizedRequest, field: str, problem: str
) -> None:
    """The status details hold one BadRequest violation: the field and the problem, as in the
    message; no context value appears in either."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.send(request_)
    error = info.value
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == f"{field}: {problem}"
    status = rpc_status.from_call(error)
    assert status is not None
    assert violations(status) == [(field, problem)]
    assert SECRET not in (error.details() or "")
    assert SECRET.encode() not in status.SerializeToString()
    for _, value in error.trailing_metadata() or ():
        assert SECRET.encode() not in (value.encode() if isinstance(value, str) else value)


async def test_batch_items_carry_field_violations(client: AsyncVerdictClient) -> None:
    """Each failing batch item's status holds its own violation; good items are answered."""
    requests = [view(BASE_CONTEXT), *(c[0] for c in CASES)]
    response = await client.batch(requests)
    assert response.results[0].WhichOneof("outcome") == "response"
    for result, (_, field, problem) in zip(response.results[1:], CASES, strict=True):
        assert result.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert result.error.message == f"{field}: {problem}"
        assert violations(result.error) == [(field, problem)]
    assert SECRET.encode() not in response.SerializeToString()


async def test_errors_outside_the_request_carry_no_violation(client: AsyncVerdictClient) -> None:
    """A status that is not INVALID_ARGUMENT has no BadRequest detail (here: a minimum entity
    version the embedded store does not have yet)."""
    request = view(BASE_CONTEXT)
    request.min_entity_version = 10**9
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.send(request)
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    status = rpc_status.from_call(info.value)
    assert status is not None
    assert status.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert violations(status) == []
