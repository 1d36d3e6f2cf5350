"""Request mixes: the lending decision cases as IsAuthorized and BatchAuthorize messages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from tests.cases import DecisionCase, lending_cases
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc
from verdict.client import build_request

LENDING = "lending"


def lending_messages(cases: Sequence[DecisionCase] | None = None) -> list[pb.IsAuthorizedRequest]:
    """The 25 lending cases (context merged with BASE_CONTEXT) as wire requests."""
    chosen = lending_cases() if cases is None else cases
    return [
        build_request(c.principal, c.action, c.resource, context=c.context, store=LENDING)
        for c in chosen
    ]


def batch_messages(size: int, count: int = 25) -> list[pb.BatchAuthorizeRequest]:
    """``count`` batches of ``size`` lending requests (the mix cycled, each batch rotated)."""
    singles = lending_messages()
    return [
        pb.BatchAuthorizeRequest(
            requests=[singles[(start + i) % len(singles)] for i in range(size)]
        )
        for start in range(count)
    ]


def is_authorized(channel: grpc.aio.Channel) -> Any:
    """The IsAuthorized stub method."""
    return pb_grpc.AuthorizationServiceStub(channel).IsAuthorized


def batch_authorize(channel: grpc.aio.Channel) -> Any:
    """The BatchAuthorize stub method."""
    return pb_grpc.AuthorizationServiceStub(channel).BatchAuthorize


def right_answer(case: DecisionCase, reply: pb.IsAuthorizedResponse) -> bool:
    """Decision and determining policies as tests/data/lending_decisions.yaml requires."""
    allowed = reply.decision == pb.DECISION_ALLOW
    return (
        allowed == (case.expect == "allow")
        and frozenset(reply.determining_policies) == case.determining
    )
