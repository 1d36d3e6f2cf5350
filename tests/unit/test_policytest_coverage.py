"""Tests of policy coverage: what counts as exercised, and exact percentage arithmetic."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

from tests.unit.test_policytest_loader import TEAM_POLICY_IDS, load, team_store, write_suite
from verdict.policytest.coverage import format_percent, measure, parse_percent
from verdict.policytest.runner import run_plan

SUITE = """
name: coverage
store: team
context: {mfa: true}
now: "2025-01-01T10:00:00Z"
cases:
  - {name: owner, principal: User::bob, action: Action::read, resource: Doc::diary,
     expect: allow}
  - {name: team, principal: User::ann, action: Action::read, resource: Doc::plan,
     expect: allow}
  - {name: inactive, principal: User::cid, action: Action::read, resource: Doc::plan,
     expect: deny}
  - {name: nobody, principal: User::zed, action: Action::read, resource: Doc::plan,
     expect: {decision: deny, errors: [inactive-blocked]}}
"""


def test_permits_count_when_determining_and_forbids_when_they_fire(tmp_path: Path) -> None:
    """Counts are cases in which the policy decided; errors are counted apart and do not cover."""
    team_store(tmp_path)
    plan = load(tmp_path, write_suite(tmp_path, "s.yaml", SUITE))
    report = run_plan(plan, plan.cases)
    assert not report.failed
    (coverage,) = measure(plan.snapshot, ["team"], report.results)
    counts = {p.info.id: (p.decided, p.errored) for p in coverage.policies}
    assert counts == {
        "owner-reads": (1, 0),
        "team-reads": (1, 0),
        "inactive-blocked": (1, 1),
        "night-blocked": (0, 0),
    }
    assert [p.id for p in coverage.never_exercised] == ["night-blocked"]
    assert (coverage.exercised, len(coverage.policies), coverage.cases) == (3, 4, 4)
    assert coverage.fraction == Fraction(75)
    assert sorted(counts) == sorted(TEAM_POLICY_IDS)


def test_a_store_without_cases_has_zero_coverage(tmp_path: Path) -> None:
    """Stores in scope but untested report 0%, so a whole-tree run cannot hide them."""
    team_store(tmp_path)
    plan = load(tmp_path, write_suite(tmp_path, "s.yaml", SUITE))
    (coverage,) = measure(plan.snapshot, ["team"], [])
    assert coverage.fraction == 0
    assert len(coverage.never_exercised) == 4


def test_percentages_are_exact_and_never_rounded_up() -> None:
    """2 of 3 is 66.66% (truncated), below a 66.67 threshold and above 66.666."""
    two_thirds = Fraction(200, 3)
    assert format_percent(two_thirds) == "66.66%"
    assert two_thirds < parse_percent("66.67")
    assert two_thirds >= parse_percent("66.666")
    assert format_percent(Fraction(100)) == "100%"
    assert format_percent(Fraction(99999, 1000)) == "99.99%"
    assert format_percent(Fraction(5, 100)) == "0.05%"
    assert parse_percent("99.5") == Fraction(199, 2)


@pytest.mark.parametrize("text", ["abc", "-1", "100.01", "NaN", "inf"])
def test_thresholds_outside_0_to_100_are_rejected(text: str) -> None:
    """``--min-coverage`` only accepts finite numbers from 0 to 100."""
    with pytest.raises(ValueError, match="not a"):
        parse_percent(text)
