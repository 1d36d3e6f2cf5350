"""A server over several stores needs no default store; requests must then name one (issue 7)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.security.serve_process import fresh_channel, running_server
from tests.stores import write_store
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc
from verdict.client import build_request

PERMIT = 'permit(principal == User::"alice", action, resource);'


@pytest.fixture
def stub(tmp_path: Path) -> Iterator[pb_grpc.AuthorizationServiceStub]:
    """`verdict serve` over two tenant stores, started without --default-store."""
    for name in ("bank-a", "bank-b"):
        write_store(tmp_path, name, {"policies.cedar": PERMIT})
    with running_server(tmp_path) as (_, port), fresh_channel(port) as channel:
        yield pb_grpc.AuthorizationServiceStub(channel)


def ask(stub: pb_grpc.AuthorizationServiceStub, store: str) -> pb.IsAuthorizedResponse:
    """IsAuthorized for alice on ``store`` ("" = none named)."""
    request = build_request("User::alice", "Action::view", "Doc::d", store=store)
    response: pb.IsAuthorizedResponse = stub.IsAuthorized(request, timeout=5)
    return response


def test_named_stores_answer(stub: pb_grpc.AuthorizationServiceStub) -> None:
    """Each tenant store answers requests that name it."""
    assert ask(stub, "bank-a").decision == pb.DECISION_ALLOW
    assert ask(stub, "bank-b").decision == pb.DECISION_ALLOW


def test_request_without_store_is_invalid(stub: pb_grpc.AuthorizationServiceStub) -> None:
    """A request naming no store is INVALID_ARGUMENT naming policy_store_id, never a decision."""
    with pytest.raises(grpc.RpcError) as info:
        ask(stub, "")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (info.value.details() or "").startswith("policy_store_id: ")
