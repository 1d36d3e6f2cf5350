"""The policy holder: one snapshot per decision, replaced whole by a swap."""

from __future__ import annotations

from pathlib import Path

from tests.cases import lending_cases
from tests.stores import write_store
from verdict.app import entity_files
from verdict.engine.authorizer import Authorizer
from verdict.model import AuthorizationRequest, Decision, EntityUid
from verdict.policy.holder import PolicyHolder
from verdict.policy.loader import load_policy_stores
from verdict.store.memory import MemoryEntityStore

POLICIES = Path(__file__).resolve().parents[2] / "policies"


async def test_swap_replaces_the_snapshot_for_new_decisions(tmp_path: Path) -> None:
    """After a swap, decisions use the new policies and report the new version."""
    write_store(
        tmp_path / "a", "s", {"p.cedar": '@id("open") permit(principal, action, resource);'}
    )
    write_store(
        tmp_path / "b", "s", {"p.cedar": '@id("shut") forbid(principal, action, resource);'}
    )
    first, second = load_policy_stores(tmp_path / "a"), load_policy_stores(tmp_path / "b")
    holder = PolicyHolder(first)
    authorizer = Authorizer(holder, MemoryEntityStore({"s": {}}))
    request = AuthorizationRequest(
        EntityUid("U", "u"), EntityUid("Action", "a"), EntityUid("R", "r")
    )
    before = await authorizer.authorize(request)
    assert holder.swap(second) is first
    after = await authorizer.authorize(request)
    assert (before.decision, before.determining_policies) == (Decision.ALLOW, ("open",))
    assert (after.decision, after.determining_policies) == (Decision.DENY, ("shut",))
    assert before.policy_version != after.policy_version


async def test_the_lending_snapshot_answers_through_a_holder() -> None:
    """The sample store behind a holder answers the first shared case."""
    snapshot = load_policy_stores(POLICIES, "lending")
    authorizer = Authorizer(
        PolicyHolder(snapshot), MemoryEntityStore.from_files(entity_files(snapshot))
    )
    case = lending_cases()[0]
    assert (await authorizer.authorize(case.request)).decision.value == case.expect
