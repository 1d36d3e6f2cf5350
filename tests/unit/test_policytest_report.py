"""Tests of the failure lines and the JUnit XML a run produces."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from tests.unit.test_policytest_loader import load, team_store, write_suite
from verdict.policytest.junit import junit_text
from verdict.policytest.report import failure_lines, summary_line
from verdict.policytest.runner import run_plan

SUITE = """
name: mixed
store: team
context: {mfa: true}
now: "2025-01-01T10:00:00Z"
cases:
  - name: passes
    principal: User::ann
    action: Action::read
    resource: Doc::plan
    expect: {decision: allow, policies: [team-reads]}
  - name: wrong decision
    principal: User::ann
    action: Action::read
    resource: Doc::diary
    expect: allow
  - name: wrong policy
    principal: User::bob
    action: Action::read
    resource: Doc::plan
    expect: {decision: allow, policies: [team-reads]}
"""


def test_failures_name_file_line_expected_actual_and_policies_to_change(tmp_path: Path) -> None:
    """Each failing case is one line with its location and the policies involved."""
    team_store(tmp_path)
    plan = load(tmp_path, write_suite(tmp_path, "s.yaml", SUITE))
    report = run_plan(plan, plan.cases)
    lines = failure_lines(report, plan.snapshot)
    shown = plan.cases[0].file
    assert lines == [
        f"{shown}:11: FAIL mixed / wrong decision: expected ALLOW; got DENY by no policy "
        "(default deny) [NO_PERMIT_MATCHED]",
        f"{shown}:16: FAIL mixed / wrong policy: expected ALLOW by team-reads; got ALLOW by "
        "owner-reads; change: owner-reads (team/policies.cedar:2), team-reads "
        "(team/policies.cedar:5)",
    ]
    assert summary_line(report, 0.5).startswith(
        "1 passed, 2 failed (3 cases from 1 suite; loaded in 0.50s, evaluated in "
    )


def test_junit_xml_parses_and_counts_cases_and_failures(tmp_path: Path) -> None:
    """One testcase per case, failures marked, counts consistent with the run."""
    team_store(tmp_path)
    plan = load(tmp_path, write_suite(tmp_path, "s.yaml", SUITE))
    report = run_plan(plan, plan.cases)
    root = ET.fromstring(junit_text(report, plan.suites, plan.snapshot).encode())
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("3", "2", "0")
    (suite,) = root.findall("testsuite")
    assert (suite.get("name"), suite.get("tests"), suite.get("failures")) == ("mixed", "3", "2")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["passes", "wrong decision", "wrong policy"]
    assert [c.get("line") for c in cases] == ["6", "11", "16"]
    assert [c.find("failure") is not None for c in cases] == [False, True, True]
    failure = cases[1].find("failure")
    assert failure is not None
    assert failure.get("message") == "expected ALLOW, got DENY"
    assert {c.get("classname") for c in cases} == {"team.s"}
