"""Tests of judging an outcome against its expectation, and of the published suite schema."""

from __future__ import annotations

import json

from tests.conftest import ROOT
from verdict.errors import RequestError
from verdict.model import EvaluationError
from verdict.policytest.model import suite_json_schema
from verdict.policytest.verdicts import Expected, Outcome, judge

SCHEMA_FILE = ROOT / "schemas" / "policy-test-suite.schema.json"


def test_a_matching_outcome_passes() -> None:
    """Same decision, same determining set and no errors: nothing to report."""
    judgement = judge(Expected("deny", frozenset({"f"})), Outcome("deny", ("f",)))
    assert judgement.passed
    assert judgement.implicated == ()


def test_unpinned_policies_are_not_checked_but_errors_always_are() -> None:
    """Omitting ``policies`` accepts any determining set; an unexpected error still fails."""
    assert judge(Expected("allow"), Outcome("allow", ("p", "q"))).passed
    erred = Outcome("deny", (), (EvaluationError("f", "entity not found"),))
    judgement = judge(Expected("deny"), erred)
    assert judgement.problems == ("errors: expected none, got [f]",)
    assert judgement.implicated == ("f",)


def test_an_unexpected_allow_implicates_the_permits_that_allowed() -> None:
    """Expected DENY but a permit allowed: that permit, and any missing forbid, must change."""
    judgement = judge(Expected("deny", frozenset({"forbid-x"})), Outcome("allow", ("permit-y",)))
    assert judgement.problems == (
        "expected DENY, got ALLOW",
        "determining policies: expected [forbid-x], got [permit-y]",
    )
    assert judgement.implicated == ("forbid-x", "permit-y")


def test_a_default_deny_implicates_the_permits_the_case_names() -> None:
    """Expected ALLOW by a permit but nothing applied: that permit failed to apply."""
    judgement = judge(Expected("allow", frozenset({"permit-y"})), Outcome("deny"))
    assert judgement.implicated == ("permit-y",)
    assert not judge(Expected("allow"), Outcome("deny")).implicated


def test_a_fail_closed_deny_implicates_the_erroring_policies() -> None:
    """Denied for errors: the policies that errored are the ones to fix."""
    outcome = Outcome("deny", (), (EvaluationError("f", "entity not found"),), True)
    judgement = judge(Expected("allow"), outcome)
    assert judgement.problems == ("expected ALLOW, got DENY", "errors: expected none, got [f]")
    assert judgement.implicated == ("f",)


def test_invalid_requests_compare_the_field_and_implicate_no_policy() -> None:
    """``invalid`` matches any rejected request, or the named field (or one of its items)."""
    rejected = Outcome.of(RequestError("entities_json[0]", "names a stored entity"))
    assert rejected == Outcome(
        "invalid", field="entities_json[0]", problem="entities_json[0]: names a stored entity"
    )
    assert judge(Expected("invalid"), rejected).passed
    assert judge(Expected("invalid", field="entities_json"), rejected).passed
    wrong = judge(Expected("invalid", field="context_json"), rejected)
    assert wrong.problems == ("invalid field: expected context_json, got entities_json[0]",)
    unexpected = judge(Expected("allow", frozenset({"p"})), rejected)
    assert unexpected.problems == ("expected ALLOW, got INVALID",)
    assert unexpected.implicated == ()


def test_the_committed_schema_matches_the_model() -> None:
    """schemas/policy-test-suite.schema.json is exactly what ``--print-schema`` generates."""
    committed = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert committed == suite_json_schema(), (
        "regenerate: verdict test --print-schema > schemas/policy-test-suite.schema.json"
    )


def test_the_schema_forbids_unknown_keys_and_accepts_the_expect_shorthand() -> None:
    """Editors validating with the schema see the same strictness as the loader."""
    schema = suite_json_schema()
    assert schema["additionalProperties"] is False
    case = schema["$defs"]["Case"]
    assert case["additionalProperties"] is False
    assert {"type": "string", "enum": ["allow", "deny", "invalid"]} in (
        case["properties"]["expect"]["anyOf"]
    )
    assert "$schema" in schema["properties"]
