"""ReloadPolicies with several workers: every worker reloads before the call is answered, and
a worker that cannot say what it serves makes the answer FAILED, never a silent RELOADED."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import grpc

from tests.conftest import POLICIES
from tests.workers_support import Supervised, fresh_channel, verdict_workers
from verdict._gen.verdict.v1 import admin_pb2 as apb
from verdict._gen.verdict.v1 import admin_pb2_grpc as apb_grpc
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc
from verdict.policy.reloader import PeerReport
from verdict.transport.admin_servicer import agreed

CHANGE = apb.PolicyStoreState.Change
FREEZE = '@id("freeze-all")\nforbid (principal, action, resource);\n'
CONTEXT = '{"mfa": true, "now": "2025-03-04T10:00:00Z", "source_ip": "10.20.0.5"}'
NO_WATCH = {"VERDICT_POLICY_WATCH": "false"}


def lending_copy(tmp_path: Path) -> Path:
    stores = tmp_path / "stores"
    shutil.copytree(POLICIES / "lending", stores / "lending")
    return stores


def borrower_views_own_loan(target: str) -> pb.IsAuthorizedResponse:
    """A decision the sample store ALLOWs, over a connection of its own (the kernel picks the
    worker anew for each)."""
    with fresh_channel(target) as channel:
        request = pb.IsAuthorizedRequest(
            principal=pb.EntityUid(type="Borrower", id="alice"),
            action=pb.EntityUid(type="Action", id="view"),
            resource=pb.EntityUid(type="Loan", id="loan-1001"),
            context_json=CONTEXT,
        )
        return pb_grpc.AuthorizationServiceStub(channel).IsAuthorized(request, timeout=10)


def reload_on_any_worker(target: str, timeout: float) -> apb.ReloadPoliciesResponse | None:
    """ReloadPolicies over a new connection; None when that worker did not answer in time."""
    with fresh_channel(target) as channel:
        try:
            return apb_grpc.AdminServiceStub(channel).ReloadPolicies(
                apb.ReloadPoliciesRequest(), timeout=timeout
            )
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                raise
            return None


def test_every_worker_serves_the_new_policies_when_the_call_returns(tmp_path: Path) -> None:
    """Three workers, no file watch: after one ReloadPolicies, 30 decisions over new
    connections are all DENY at the version the call reported."""
    stores = lending_copy(tmp_path)
    with verdict_workers(tmp_path, "--stores", str(stores), workers=3, env=NO_WATCH) as served:
        assert borrower_views_own_loan(served.target).decision == pb.DECISION_ALLOW
        (stores / "lending" / "freeze.cedar").write_text(FREEZE)
        reply = reload_on_any_worker(served.target, 30)
        assert reply is not None
        (state,) = reply.stores
        assert (state.change, list(state.problems)) == (CHANGE.RELOADED, [])
        answers = [borrower_views_own_loan(served.target) for _ in range(30)]
        assert {(a.decision, a.policy_version) for a in answers} == {
            (pb.DECISION_DENY, state.policy_version)
        }
        # Each worker logged its own reload: the one that answered, and the two it asked.
        triggers = sorted(e["trigger"] for e in served.events("policy_reloaded"))
        assert triggers == ["peer", "peer", "rpc"]


def test_a_worker_that_does_not_answer_makes_the_store_failed_not_reloaded(
    tmp_path: Path,
) -> None:
    """One of two workers is frozen (SIGSTOP). A ReloadPolicies taken by the other comes back
    within its deadline, the store FAILED with a problem naming the frozen worker: its
    caller must not read RELOADED while a worker may still serve the old policies."""
    stores = lending_copy(tmp_path)
    with verdict_workers(tmp_path, "--stores", str(stores), workers=2, env=NO_WATCH) as served:
        pids = served.worker_pids()
        os.kill(pids[1], signal.SIGSTOP)
        try:
            (stores / "lending" / "freeze.cedar").write_text(FREEZE)
            reply = None
            for _ in range(20):  # connections the kernel gives the frozen worker time out
                started = time.monotonic()
                reply = reload_on_any_worker(served.target, 3.0)
                if reply is not None:
                    break
            assert reply is not None, "worker 0 never took the call"
            assert time.monotonic() - started < 3.5
            (state,) = reply.stores
            assert state.change == CHANGE.FAILED
            assert [p.message for p in state.problems] == [
                "worker 1 did not confirm a reload in time"
            ]
        finally:
            os.kill(pids[1], signal.SIGCONT)
        # Thawed, it has the order waiting: it reloads, and a call now agrees everywhere.
        assert_reloaded_everywhere(served)


def assert_reloaded_everywhere(served: Supervised) -> None:
    reply = reload_on_any_worker(served.target, 30)
    assert reply is not None
    (state,) = reply.stores
    assert (state.change, list(state.problems)) == (CHANGE.UNCHANGED, [])
    answers = {borrower_views_own_loan(served.target).decision for _ in range(12)}
    assert answers == {pb.DECISION_DENY}


def test_agreed_reports_each_worker_that_serves_another_state() -> None:
    """The answer's state is what this worker did, FAILED with one problem per worker that
    serves the store in another state (policies or entities file), or nothing, or did not
    answer, or is still starting."""
    state = apb.PolicyStoreState(
        policy_store_id="lending", policy_version="sha256:new", change=CHANGE.RELOADED
    )
    mine = "sha256:new entities sha256:e2"
    same = PeerReport({1: {"lending": mine}, 2: {"lending": mine}})
    assert agreed(state, mine, same) == state
    report = PeerReport(
        {
            1: {"lending": "sha256:old entities sha256:e2"},
            2: {"lending": "sha256:new entities sha256:e1"},
            3: {"lending": ""},
            4: {},
        },
        missing=(5,),
        starting=(6,),
    )
    failed = agreed(state, mine, report)
    assert (failed.change, failed.policy_version) == (CHANGE.FAILED, "sha256:new")
    assert [p.message for p in failed.problems] == [
        "worker 1 serves another version of the store: call ReloadPolicies again",
        "worker 2 serves another version of the store: call ReloadPolicies again",
        "worker 3 serves nothing of the store: call ReloadPolicies again",
        "worker 4 serves nothing of the store: call ReloadPolicies again",
        "worker 5 did not confirm a reload in time",
        "worker 6 is starting: call ReloadPolicies again",
    ]
    removed = apb.PolicyStoreState(policy_store_id="gone", change=CHANGE.REMOVED)
    assert agreed(removed, "", PeerReport({1: {"gone": ""}})) == removed
