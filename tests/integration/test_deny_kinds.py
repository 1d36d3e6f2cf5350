"""Every DENY says why, each kind from a real lending case over gRPC; ALLOW carries none."""

from __future__ import annotations

import json

import grpc
import pytest

from tests.cases import BASE_CONTEXT
from tests.security.authn_support import verdict_app
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc
from verdict.client import build_request

NEW_LOAN = {
    "uid": {"type": "Loan", "id": "loan-9001"},
    "attrs": {
        "kind": "personal",
        "amount": 1000,
        "status": "draft",
        "owner": {"type": "Borrower", "id": "vanished-borrower"},
        "partner": {"type": "Partner", "id": "first-river-bank"},
    },
    "parents": [],
}
CASES = [
    ("Employee::uma", "view", "Loan::loan-1001", None, pb.DENY_KIND_UNSPECIFIED),
    ("Employee::uma", "view", "Loan::loan-2001", None, pb.DENY_KIND_EXPLICIT_FORBID),
    ("Borrower::alice", "view", "Loan::loan-1004", None, pb.DENY_KIND_NO_PERMIT_MATCHED),
    ("Employee::nobody", "view", "Loan::loan-1001", None, pb.DENY_KIND_ENTITY_MISSING),
    ("Employee::uma", "view", "Loan::loan-0000", None, pb.DENY_KIND_ENTITY_MISSING),
    ("Employee::olivia", "submit", "Loan::loan-9001", [NEW_LOAN], pb.DENY_KIND_EVALUATION_ERROR),
]


@pytest.mark.parametrize(("principal", "action", "resource", "entities", "kind"), CASES)
async def test_each_deny_kind(
    principal: str, action: str, resource: str, entities: list[dict[str, object]] | None,
    kind: int,
) -> None:  # fmt: skip
    """The lending store answers each case with the expected deny kind (none for ALLOW)."""
    async with verdict_app() as app:
        assert app.server is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as channel:
            request = build_request(
                principal, f"Action::{action}", resource, context=BASE_CONTEXT, entities=entities
            )
            reply = await pb_grpc.AuthorizationServiceStub(channel).IsAuthorized(request)
    assert reply.deny_kind == kind, json.dumps(str(reply))
    assert (reply.decision == pb.DECISION_ALLOW) == (kind == pb.DENY_KIND_UNSPECIFIED)
