"""The AdminService servicer: reload policy stores on demand and list what is served."""

from __future__ import annotations

from typing import Any

import grpc

from verdict._gen.verdict.v1 import admin_pb2 as apb
from verdict._gen.verdict.v1 import admin_pb2_grpc as apb_grpc
from verdict.policy.reload import Change, StoreOutcome
from verdict.policy.reloader import PeerReport, PolicyReloader
from verdict.policy.snapshot import StoreSnapshot
from verdict.transport.call_context import granted_stores
from verdict.transport.status import wire_text

Context = grpc.aio.ServicerContext[Any, Any]
PEER_WAIT_SECONDS = 120.0  # a reload of 100,000 policies takes ~40 s here
_CHANGES = {change: apb.PolicyStoreState.Change.Value(change.value) for change in Change}


def store_state(outcome: StoreOutcome) -> apb.PolicyStoreState:
    """One store's outcome on the wire: problems as file, line and message (no file contents
    beyond what the loader's messages quote: policy text is code, never loan data)."""
    served = outcome.served
    return apb.PolicyStoreState(
        policy_store_id=outcome.store_id,
        policy_version=served.version if served is not None else "",
        change=_CHANGES[outcome.change],
        problems=[
            apb.PolicyProblem(file=p.file, line=max(0, p.line), message=wire_text(p.message))
            for p in outcome.problems
        ],
        policies=len(served.policies) if served is not None else 0,
    )


class AdminServicer(apb_grpc.AdminServiceServicer):
    """gRPC face of the PolicyReloader; callers need the ``admin`` group in the callers file."""

    def __init__(self, reloader: PolicyReloader) -> None:
        self._reloader = reloader

    async def ReloadPolicies(
        self, request: apb.ReloadPoliciesRequest, context: Context
    ) -> apb.ReloadPoliciesResponse:
        """Reload now; a broken store is reported FAILED and keeps serving its last version.

        Only the stores the caller's grant covers are looked at (an admin of one tenant put
        every tenant's pending edits in force, attack round 10). With several workers, every
        worker reloads them before the answer, which says FAILED for a store the workers do
        not all serve at one version."""
        only = granted_stores()
        outcome = await self._reloader.reload("rpc", only)
        states = [store_state(s) for s in outcome.stores if _visible(s.store_id)]
        if self._reloader.peers is not None:
            report = await self._reloader.peers.reload_others(only, _peer_timeout(context))
            # What this worker serves now (not the outcome's: a SIGHUP or file-watch reload
            # may have swapped in while the others reloaded), in the form the others report
            # it; the answer names that version too, never one no worker serves any more.
            mine = self._reloader.served(only)
            now = self._reloader.holder.current.stores
            states = [
                agreed(
                    served_now(state, now.get(state.policy_store_id)),
                    mine.get(state.policy_store_id, ""),
                    report,
                )
                for state in states
            ]
        return apb.ReloadPoliciesResponse(stores=states)

    async def ListPolicyStores(
        self, request: apb.ListPolicyStoresRequest, context: Context
    ) -> apb.ListPolicyStoresResponse:
        """The stores served now, each with its version."""
        snapshot = self._reloader.holder.current
        states = [
            store_state(StoreOutcome(store_id, Change.UNCHANGED, store))
            for store_id, store in sorted(snapshot.stores.items())
            if _visible(store_id)
        ]
        default = snapshot.default_store if _visible(snapshot.default_store or "") else ""
        return apb.ListPolicyStoresResponse(stores=states, default_store=default)


def _visible(store_id: str) -> bool:
    """Whether the caller's grant covers ``store_id``: an admin granted some stores (one per
    tenant) is told about those alone, never other tenants' stores, versions or problems."""
    allowed = granted_stores()
    return allowed is None or store_id in allowed


def _peer_timeout(context: Context) -> float:
    """How long the other workers may take: what is left of the call's deadline, less a
    margin to answer in, within PEER_WAIT_SECONDS."""
    remaining = context.time_remaining()
    if remaining is None:
        return PEER_WAIT_SECONDS
    return max(0.0, min(PEER_WAIT_SECONDS, remaining - 0.5))


def served_now(state: apb.PolicyStoreState, store: StoreSnapshot | None) -> apb.PolicyStoreState:
    """``state`` with the version and policy count this worker serves now (``store``)."""
    version = store.version if store is not None else ""
    policies = len(store.policies) if store is not None else 0
    if (state.policy_version, state.policies) == (version, policies):
        return state
    current = apb.PolicyStoreState()
    current.CopyFrom(state)
    current.policy_version, current.policies = version, policies
    return current


def agreed(state: apb.PolicyStoreState, mine: str, report: PeerReport) -> apb.PolicyStoreState:
    """``state`` as this worker reloaded it, FAILED if another worker serves the store in
    another state than ``mine`` (policies and entities file; its files changed between the
    two reloads: call again), or did not say."""
    store_id = state.policy_store_id
    problems = [
        f"worker {worker} serves {'another version' if versions.get(store_id) else 'nothing'}"
        " of the store: call ReloadPolicies again"
        for worker, versions in sorted(report.versions.items())
        if versions.get(store_id, "") != mine
    ]
    problems += [
        f"worker {w} did not confirm a reload in time" if w >= 0 else "no answer from the others"
        for w in report.missing
    ]
    problems += [f"worker {w} is starting: call ReloadPolicies again" for w in report.starting]
    if not problems:
        return state
    failed = apb.PolicyStoreState()
    failed.CopyFrom(state)
    failed.change = apb.PolicyStoreState.Change.FAILED
    failed.problems.extend(apb.PolicyProblem(file=store_id, line=0, message=p) for p in problems)
    return failed
