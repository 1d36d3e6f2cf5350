"""explain: for each policy whose scope matched, which clause held, was false or errored, and at
which conjunct; derived by Cedar evaluating each conjunct, tested on real lending cases."""

from __future__ import annotations

import grpc

from tests.cases import BASE_CONTEXT
from tests.security.authn_support import verdict_app
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc
from verdict.client import build_request


async def ask(principal: str, resource: str, explain: bool = True) -> pb.IsAuthorizedResponse:
    """``principal`` views ``resource`` on a fresh server, with explain."""
    async with verdict_app() as app:
        assert app.server is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as channel:
            request = build_request(principal, "Action::view", resource, context=BASE_CONTEXT)
            request.explain = explain
            reply: pb.IsAuthorizedResponse = await pb_grpc.AuthorizationServiceStub(
                channel
            ).IsAuthorized(request)
            return reply


def by_id(reply: pb.IsAuthorizedResponse) -> dict[str, pb.PolicyExplanation]:
    """The explanations by policy id."""
    return {e.policy_id: e for e in reply.explanations}


async def test_a_false_conjunct_is_named() -> None:
    """uma (first-river-bank) viewing loan-2001 (harbor): the staff permit's scope matched, its
    role conjunct held and its same-partner conjunct (the 2nd) was false; the cross-partner
    forbid applies."""
    reply = await ask("Employee::uma", "Loan::loan-2001")
    found = by_id(reply)
    staff = found["staff-view-partner-loans"]
    assert not staff.applies
    assert [(c.kind, c.outcome, c.conjunct) for c in staff.conditions] == [("when", "false", 2)]
    forbid = found["forbid-cross-partner-loan-access"]
    assert forbid.applies
    assert forbid.effect == "forbid"
    assert "borrower-view-own-loan" not in found  # scope (principal is Borrower) did not match


async def test_an_erroring_condition_is_named() -> None:
    """An unknown employee: the suspended-principal guardrail's only conjunct errored."""
    reply = await ask("Employee::nobody", "Loan::loan-1001")
    guard = by_id(reply)["forbid-suspended-principal"]
    assert [(c.kind, c.outcome, c.conjunct) for c in guard.conditions] == [("when", "errored", 1)]
    assert not guard.applies


async def test_explanations_only_when_asked() -> None:
    """Without explain the response carries none (the default costs nothing)."""
    assert list((await ask("Employee::uma", "Loan::loan-2001", explain=False)).explanations) == []


async def test_a_batch_item_is_explained_like_a_single_call() -> None:
    """In a batch (items sharing the memory store's parsed entities), the item that asks for
    an explanation gets the same one IsAuthorized gives, and the others none."""
    single = await ask("Employee::uma", "Loan::loan-2001")
    explained = build_request(
        "Employee::uma", "Action::view", "Loan::loan-2001", context=BASE_CONTEXT
    )
    explained.explain = True
    plain = build_request("Employee::uma", "Action::view", "Loan::loan-1001", context=BASE_CONTEXT)
    async with verdict_app() as app:
        assert app.server is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as channel:
            stub = pb_grpc.AuthorizationServiceStub(channel)
            batch = pb.BatchAuthorizeRequest(requests=[plain, explained, plain])
            replies = await stub.BatchAuthorize(batch)
    results = [r.response for r in replies.results]
    assert [len(r.explanations) for r in results] == [0, len(single.explanations), 0]
    assert by_id(results[1]) == by_id(single)


async def test_explanations_of_one_selection_follow_each_request() -> None:
    """One server, uma viewing a loan of another partner, then one of her own, then the first
    again: the probes built for the selection are kept (explain.py), the outcomes are each
    request's own (the staff permit false at its partner conjunct, then applying, then false)."""
    async with verdict_app() as app:
        assert app.server is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as channel:
            stub = pb_grpc.AuthorizationServiceStub(channel)
            outcomes = []
            for loan in ("loan-2001", "loan-1001", "loan-2001"):
                request = build_request(
                    "Employee::uma", "Action::view", f"Loan::{loan}", context=BASE_CONTEXT
                )
                request.explain = True
                reply = await stub.IsAuthorized(request)
                staff = by_id(reply)["staff-view-partner-loans"]
                checks = [(c.outcome, c.conjunct) for c in staff.conditions]
                outcomes.append((reply.decision, staff.applies, checks))
            index = app.policies.current.stores["lending"].index
            kept = app.authorizer.explainer.kept(index)  # the third reused the first's
    assert kept is not None
    assert (kept.misses, kept.hits) in ((1, 2), (2, 1)), (kept.misses, kept.hits)
    assert outcomes == [
        (pb.DECISION_DENY, False, [("false", 2)]),
        (pb.DECISION_ALLOW, True, [("held", 0)]),
        (pb.DECISION_DENY, False, [("false", 2)]),
    ]
