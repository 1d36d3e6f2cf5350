"""Tests of ``verdict test`` run as a real subprocess: output, exit codes, JUnit, coverage."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.conftest import ROOT
from tests.stores import entity, write_store
from tests.unit.test_policytest_loader import team_store, write_suite

PASSING = """
name: passing
context: {mfa: true}
now: "2025-01-01T10:00:00Z"
cases:
  - {name: ann reads the plan, principal: User::ann, action: Action::read, resource: Doc::plan,
     expect: {decision: allow, policies: [team-reads]}}
  - {name: bob reads his diary, principal: User::bob, action: Action::read,
     resource: Doc::diary, expect: {decision: allow, policies: [owner-reads]}}
"""
FAILING = """
name: failing
context: {mfa: true}
now: "2025-01-01T10:00:00Z"
cases:
  - name: ann reads the plan
    principal: User::ann
    action: Action::read
    resource: Doc::plan
    expect: allow
  - name: ann reads bob's diary
    principal: User::ann
    action: Action::read
    resource: Doc::diary
    expect: {decision: allow, policies: [team-reads]}
"""


def verdict_test(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run ``verdict test`` with ``args`` in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "verdict", "test", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
    )


def test_all_passing_exits_0_with_a_summary(tmp_path: Path) -> None:
    """Passing suites print only the summary line and exit 0."""
    team_store(tmp_path)
    write_suite(tmp_path / "team" / "tests", "passing.yaml", PASSING)
    done = verdict_test("--stores", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("2 passed, 0 failed (2 cases from 1 suite;")


def test_a_failing_case_exits_1_and_names_its_file_and_line(tmp_path: Path) -> None:
    """The failure line starts with the case's file:line as seen from the working directory."""
    team_store(tmp_path)
    write_suite(tmp_path / "team" / "tests", "failing.yaml", FAILING)
    done = (
        verdict_test("--stores", "stores_root", cwd=tmp_path.parent)
        if False
        else verdict_test("--stores", ".", cwd=tmp_path)
    )
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert lines[0] == (
        "team/tests/failing.yaml:10: FAIL failing / ann reads bob's diary: expected ALLOW by "
        "team-reads; got DENY by no policy (default deny) [NO_PERMIT_MATCHED]; change: team-reads "
        "(team/policies.cedar:5)"
    )
    assert lines[-1].startswith("1 passed, 1 failed")


ERRORING = """
name: errors
cases:
  - {name: a deny that came from errors, principal: User::ann, action: Action::read,
     resource: Doc::d, expect: deny}
  - {name: one case, principal: User::ann, action: Action::read, resource: Doc::d,
     expect: {decision: deny, errors: [frozen-forbid]}}
"""


def test_a_deny_forced_by_errors_reads_without_contradiction(tmp_path: Path) -> None:
    """A case that expects a plain DENY and gets one forced by errors says what differs: the
    errors ("expected DENY without errors; got DENY with errors in ..."), and counts agree in
    number ("1 case from 1 suite")."""
    write_store(
        tmp_path,
        "errs",
        {
            "p.cedar": '@id("open") permit(principal, action, resource);\n'
            '@id("frozen-forbid") forbid(principal, action, resource) when { resource.frozen };',
            "entities.json": [entity("User", "ann"), entity("Doc", "d")],
        },
    )
    write_suite(tmp_path / "errs" / "tests", "errors.yaml", ERRORING)
    done = verdict_test("--stores", ".", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == (
        "errs/tests/errors.yaml:3: FAIL errors / a deny that came from errors: expected DENY "
        "without errors; got DENY with errors in frozen-forbid (attribute `frozen` not found), "
        "which overrule a matching permit [EVALUATION_ERROR]; change: frozen-forbid "
        "(errs/p.cedar:2)"
    )
    assert lines[-1].startswith("1 passed, 1 failed (2 cases from 1 suite;")
    verbose = verdict_test("--stores", ".", "-v", cwd=tmp_path)
    assert verbose.returncode == 1, verbose.stderr
    # -v says what was expected as the plain report does, then Cedar's full error text.
    assert verbose.stdout.splitlines()[:2] == [
        "FAIL errs/tests/errors.yaml:3: errors / a deny that came from errors: expected DENY "
        "without errors; got DENY with errors in frozen-forbid (attribute `frozen` not found), "
        "which overrule a matching permit [EVALUATION_ERROR]; change: frozen-forbid "
        "(errs/p.cedar:2)",
        '       frozen-forbid: error while evaluating policy `frozen-forbid`: `Doc::"d"` '
        "does not have the attribute `frozen`",
    ]
    only = verdict_test("--stores", ".", "--filter", "one case", cwd=tmp_path)
    assert only.returncode == 0, only.stdout
    assert only.stdout.startswith("1 passed, 0 failed (1 case from 1 suite;")


def test_unloadable_suites_exit_2_with_file_and_line(tmp_path: Path) -> None:
    """A malformed suite stops the run before any case is evaluated."""
    team_store(tmp_path)
    write_suite(tmp_path / "team" / "tests", "passing.yaml", PASSING)
    write_suite(
        tmp_path / "team" / "tests",
        "broken.yaml",
        "name: broken\ncases:\n  - name: x\n    principal: ann\n",
    )
    done = verdict_test("--stores", ".", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""
    assert "team/tests/broken.yaml:4: cases[0].principal: must be written TYPE::" in done.stderr
    assert "team/tests/broken.yaml:3: cases[0].action: required key is missing" in done.stderr


def test_a_broken_policy_store_exits_2(tmp_path: Path) -> None:
    """Policy load problems are reported with their file:line and exit code 2."""
    team_store(tmp_path)
    (tmp_path / "team" / "bad.cedar").write_text("permit (principal, action, resource) when {")
    done = verdict_test("--stores", str(tmp_path))
    assert done.returncode == 2
    assert "team/bad.cedar:1: syntax error" in done.stderr


def test_missing_paths_and_empty_filters_exit_2(tmp_path: Path) -> None:
    """Nothing to run is an error: a missing suite path, or a filter that matches nothing."""
    team_store(tmp_path)
    write_suite(tmp_path / "team" / "tests", "passing.yaml", PASSING)
    missing = verdict_test("--stores", str(tmp_path), str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2
    assert "nope.yaml:0: no such file or folder" in missing.stderr
    unmatched = verdict_test("--stores", str(tmp_path), "--filter", "zzz")
    assert unmatched.returncode == 2
    assert "no case matches --filter" in unmatched.stderr


def test_filter_runs_only_matching_cases(tmp_path: Path) -> None:
    """``--filter`` is a regular expression searched in ``suite / case``."""
    team_store(tmp_path)
    write_suite(tmp_path / "team" / "tests", "failing.yaml", FAILING)
    done = verdict_test("--stores", str(tmp_path), "--filter", "failing / ann reads the")
    assert done.returncode == 0
    assert done.stdout.startswith("1 passed, 0 failed")


def test_junit_report_is_written(tmp_path: Path) -> None:
    """``--junit`` writes parseable XML with one testcase per case."""
    team_store(tmp_path)
    write_suite(tmp_path / "team" / "tests", "failing.yaml", FAILING)
    write_suite(tmp_path / "team" / "tests", "passing.yaml", PASSING)
    target = tmp_path / "reports" / "verdict.xml"
    done = verdict_test("--stores", str(tmp_path), "--junit", str(target))
    assert done.returncode == 1
    root = ET.parse(target).getroot()
    assert (root.get("tests"), root.get("failures")) == ("4", "1")
    assert [s.get("name") for s in root.findall("testsuite")] == ["failing", "passing"]


def test_min_coverage_fails_below_the_threshold_exactly(tmp_path: Path) -> None:
    """Two of four policies is 50%: 50 passes, 50.01 fails with exit 1."""
    team_store(tmp_path)
    write_suite(tmp_path / "team" / "tests", "passing.yaml", PASSING)
    enough = verdict_test("--stores", str(tmp_path), "--coverage", "--min-coverage", "50")
    assert enough.returncode == 0
    assert "coverage of store team: 2 of 4 policies exercised (50%) by 2 cases" in enough.stdout
    assert "    - night-blocked (team/policies.cedar:12)" in enough.stdout
    short = verdict_test("--stores", str(tmp_path), "--min-coverage", "50.01")
    assert short.returncode == 1
    assert "coverage of store team is 50%, below the required 50.01%" in short.stdout
    bad = verdict_test("--stores", str(tmp_path), "--min-coverage", "101")
    assert bad.returncode == 2


def test_print_schema_matches_the_committed_file() -> None:
    """``--print-schema`` prints the schema committed under schemas/."""
    done = verdict_test("--print-schema")
    assert done.returncode == 0
    committed = ROOT / "schemas" / "policy-test-suite.schema.json"
    assert json.loads(done.stdout) == json.loads(committed.read_text(encoding="utf-8"))
