"""Tests that the runner gives the server's answers: batched, per-request and fail-closed."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.conftest import POLICIES
from tests.stores import write_store
from tests.unit.test_policytest_loader import (
    TEAM_ENTITIES,
    TEAM_POLICIES,
    TEAM_SCHEMA,
    load,
    team_store,
    write_suite,
)
from verdict.app import entity_files
from verdict.engine.authorizer import Authorizer
from verdict.errors import VerdictError
from verdict.policy.holder import PolicyHolder
from verdict.policytest.runner import evaluate_cases, run_plan
from verdict.policytest.verdicts import Outcome
from verdict.store.memory import MemoryEntityStore

FAIL_CLOSED = """
name: fail closed
store: team
context: {mfa: true}
now: "2025-01-01T10:00:00Z"
cases:
  - name: bob owns a doc, but is not in the store, so inactive-blocked errors
    principal: User::ghost
    action: Action::read
    resource: Doc::ghost-doc
    entities:
      - {uid: {type: Doc, id: ghost-doc}, attrs: {owner: {type: User, id: ghost},
         secret: true}, parents: []}
    expect: {decision: deny, policies: [], errors: [inactive-blocked]}
"""


def test_batched_and_per_request_runs_agree_on_every_sample_case() -> None:
    """Cases in server batches (authorize_batch) get exactly the answers they get alone."""
    plan = load(POLICIES, default_store="lending")
    assert len(plan.cases) > 50
    grouped = asyncio.run(evaluate_cases(plan, plan.cases))
    per_request = asyncio.run(evaluate_cases(plan, plan.cases, per_request=True))
    assert grouped == per_request
    assert {o.decision for o in grouped} == {"allow", "deny", "invalid"}


def test_per_request_outcomes_are_the_authorizers_answers() -> None:
    """Each outcome equals a direct Authorizer.authorize call on the server's own store."""
    plan = load(POLICIES, default_store="lending")
    authorizer = Authorizer(
        PolicyHolder(plan.snapshot), MemoryEntityStore.from_files(entity_files(plan.snapshot))
    )

    async def direct() -> list[Outcome]:
        outcomes = []
        for case in plan.cases:
            try:
                outcomes.append(Outcome.of(await authorizer.authorize(case.request)))
            except VerdictError as exc:
                outcomes.append(Outcome.of(exc))
        return outcomes

    assert asyncio.run(evaluate_cases(plan, plan.cases, per_request=True)) == asyncio.run(direct())


def test_a_permit_that_matches_while_a_forbid_errors_is_denied(tmp_path: Path) -> None:
    """With on_evaluation_error = deny (the default) the case is a DENY with the error."""
    team_store(tmp_path)
    plan = load(tmp_path, write_suite(tmp_path, "s.yaml", FAIL_CLOSED))
    report = run_plan(plan, plan.cases)
    assert not report.failed
    outcome = report.results[0].outcome
    assert outcome.denied_for_errors
    assert [e.policy_id for e in outcome.errors] == ["inactive-blocked"]


def test_a_skip_store_still_denies_for_an_erroring_forbid(tmp_path: Path) -> None:
    """With on_evaluation_error = skip an erroring forbid still denies: the suite passes."""
    write_store(
        tmp_path,
        "team",
        {
            "policies.cedar": TEAM_POLICIES,
            "entities.json": TEAM_ENTITIES,
            "schema.cedarschema": TEAM_SCHEMA,
            "store.toml": 'on_evaluation_error = "skip"\nrequest_entity_types = ["Doc"]\n',
        },
    )
    plan = load(tmp_path, write_suite(tmp_path, "s.yaml", FAIL_CLOSED))
    (result,) = run_plan(plan, plan.cases).results
    assert result.passed
    assert result.outcome.decision == "deny"
    assert result.outcome.denied_for_errors
    assert [e.policy_id for e in result.outcome.errors] == ["inactive-blocked"]


def test_outcomes_keep_case_order_across_groups(tmp_path: Path) -> None:
    """Cases sharing a slice are evaluated together but reported in file order."""
    team_store(tmp_path)
    suite = write_suite(
        tmp_path,
        "s.yaml",
        """
        name: order
        store: team
        context: {mfa: true}
        now: "2025-01-01T10:00:00Z"
        cases:
          - {name: a, principal: User::ann, action: Action::read, resource: Doc::plan,
             expect: allow}
          - {name: b, principal: User::bob, action: Action::read, resource: Doc::diary,
             expect: allow}
          - {name: c, principal: User::ann, action: Action::read, resource: Doc::plan,
             now: "2025-01-01T23:00:00Z", expect: deny}
          - {name: d, principal: User::ann, action: Action::write, resource: Doc::plan,
             expect: invalid}
        """,
    )
    plan = load(tmp_path, suite)
    report = run_plan(plan, plan.cases)
    assert [(r.case.name, r.outcome.decision) for r in report.results] == [
        ("a", "allow"),
        ("b", "allow"),
        ("c", "deny"),
        ("d", "invalid"),
    ]
    assert report.results[2].outcome.determining == ("night-blocked",)
    assert not report.failed
