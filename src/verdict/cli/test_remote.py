"""``verdict test --server``: the suites' cases answered by a running server's BatchAuthorize."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence

import grpc

from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict.cli.common import fail
from verdict.cli.remote import result_from_reply, rpc_failure
from verdict.client import VerdictClient
from verdict.engine.authorizer import DEFAULT_MAX_BATCH
from verdict.model import shown_text
from verdict.policytest.loader import Plan, PolicyCase
from verdict.policytest.runner import CaseResult, RunReport
from verdict.policytest.verdicts import Outcome, judge


def wire_request(case: PolicyCase) -> pb.IsAuthorizedRequest:
    """The IsAuthorized request a case makes (its store named, its inline entities sent)."""
    request = case.request
    return pb.IsAuthorizedRequest(
        policy_store_id=request.store_id,
        principal=pb.EntityUid(type=request.principal.type, id=request.principal.id),
        action=pb.EntityUid(type=request.action.type, id=request.action.id),
        resource=pb.EntityUid(type=request.resource.type, id=request.resource.id),
        context_json=json.dumps(request.context) if request.context else "",
        entities_json=json.dumps(list(request.extra_entities)) if request.extra_entities else "",
    )


# What a reply must hold for a case to be judged on it: a decision point reads anything but
# ALLOW as DENY, but a test report that did so would pass every deny case of a suite against
# a server that decides nothing.
_DECISIONS = frozenset({pb.DECISION_ALLOW, pb.DECISION_DENY})


def outcome_of(item: pb.BatchAuthorizeResult, server: str) -> Outcome:
    """A batch item's outcome: the decision, or the request field the server rejected; an item
    that holds neither stops the run (exit 2): nothing can be judged from it."""
    if item.HasField("response"):
        if item.response.decision not in _DECISIONS:
            fail(f"the server at {server} answered a case without a decision (malformed reply)")
        return Outcome.of(result_from_reply(item.response))
    if not item.HasField("error"):
        fail(f"the server at {server} answered a case with neither a decision nor an error")
    code, message = item.error.code, item.error.message
    # The server's INVALID_ARGUMENT text starts with the field at fault ("context_json: ...").
    field = message.split(":", 1)[0] if code == grpc.StatusCode.INVALID_ARGUMENT.value[0] else ""
    return Outcome("invalid", field=field, problem=message)


def run_remote(
    client: VerdictClient, plan: Plan, cases: Sequence[PolicyCase], server: str
) -> RunReport:
    """Send ``cases`` in batches to the server and judge its answers."""
    _note_entity_sets(plan, cases)
    started = time.perf_counter()
    outcomes: list[Outcome] = []
    versions: dict[str, str] = {}
    for start in range(0, len(cases), DEFAULT_MAX_BATCH):
        chunk = cases[start : start + DEFAULT_MAX_BATCH]
        try:
            reply = client.batch([wire_request(case) for case in chunk])
        except Exception as exc:  # grpc.RpcError: the whole call failed, nothing was judged
            fail(rpc_failure(exc, server))
        if len(reply.results) != len(chunk):
            fail(
                f"the server at {server} answered {len(reply.results)} results for "
                f"{len(chunk)} cases (malformed reply)"
            )
        for item in reply.results:
            outcomes.append(outcome_of(item, server))
            if item.HasField("response"):
                versions[item.response.policy_store_id] = item.response.policy_version
    seconds = time.perf_counter() - started
    _note_versions(plan, versions, server)
    results = tuple(
        CaseResult(c, o, judge(c.expected, o)) for c, o in zip(cases, outcomes, strict=True)
    )
    return RunReport(results, seconds)


def _note_entity_sets(plan: Plan, cases: Sequence[PolicyCase]) -> None:
    # The server decides with the entities it holds; a suite's own entity data is not sent.
    own = sorted({c.suite for c in cases if not _store_entities(plan, c)})
    if own:
        print(
            f"note: suites with their own entities ({', '.join(own)}) are answered with the "
            "server's entities",
            file=sys.stderr,
        )


def _store_entities(plan: Plan, case: PolicyCase) -> bool:
    store = plan.snapshot.resolve(case.request.store_id)
    return case.entity_set == f"{store.store_id}:{store.entities_file or '(none)'}"


def _note_versions(plan: Plan, versions: dict[str, str], server: str) -> None:
    # Coverage lists the policies of --stores: say so when the server runs other ones.
    for store_id, version in sorted(versions.items()):
        local = plan.snapshot.stores.get(store_id)
        if local is not None and local.version != version:
            print(
                f"note: store {store_id} at {server} runs policy version "
                f"{shown_text(version)}, --stores has {local.version}",
                file=sys.stderr,
            )
