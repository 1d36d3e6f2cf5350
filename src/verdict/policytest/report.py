"""Human-readable output: one line per failing case, coverage tables and the summary line."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from fractions import Fraction

from verdict.model import shown_text
from verdict.policy.snapshot import PolicyInfo, PolicySnapshot
from verdict.policytest.coverage import StoreCoverage, format_percent
from verdict.policytest.runner import CaseResult, RunReport
from verdict.policytest.verdicts import Expected, Outcome


def describe_outcome(outcome: Outcome) -> str:
    """The actual answer: decision, determining policies and errors, or why it was invalid."""
    # Outcomes may come from a server (`verdict test --server`): its strings are shown with
    # their controls escaped.
    if outcome.decision == "invalid":
        return f"INVALID ({shown_text(outcome.problem)})"
    errors = ", ".join(
        f"{shown_text(e.policy_id or '?')} ({shown_text(e.message)})" for e in outcome.errors
    )
    if outcome.denied_for_errors:
        # No policy denied: the errors did, over a permit that matched.
        text = f"DENY with errors in {errors}, which overrule a matching permit"
    else:
        text = f"{outcome.decision.upper()} by {_list(outcome.determining)}"
        if errors:
            text += f" with errors in {errors}"
    if outcome.deny_kind:
        text += f" [{outcome.deny_kind}]"
    return text


def describe_expected(expected: Expected, actual: Outcome | None = None) -> str:
    """What the case asked for, naming only the parts it pins; that it wants no errors is said
    when ``actual`` has some (else "expected DENY, got DENY with errors" reads as agreement)."""
    if expected.decision == "invalid":
        return "INVALID" + (f" ({expected.field})" if expected.field else "")
    text = expected.decision.upper()
    if expected.policies is not None:
        text += f" by {_list(sorted(expected.policies))}"
    if expected.errors:
        text += " with errors in " + ", ".join(sorted(expected.errors))
    elif actual is not None and actual.errors:
        text += " without errors"
    return text


def failure_line(result: CaseResult, policies: Mapping[str, PolicyInfo]) -> str:
    """``file:line: FAIL suite / case: expected ...; got ...; change: policy (file:line)``."""
    case = result.case
    return f"{case.file}:{case.line}: FAIL {case.title}: {_judged(result, policies)}"


def _judged(result: CaseResult, policies: Mapping[str, PolicyInfo]) -> str:
    """``expected ...; got ...`` and the policies to change, of a failing case."""
    expected = describe_expected(result.case.expected, result.outcome)
    text = f"expected {expected}; got {describe_outcome(result.outcome)}"
    if result.judgement.implicated:
        where = ", ".join(_located(pid, policies) for pid in result.judgement.implicated)
        text += f"; change: {where}"
    return text


def _located(policy_id: str, policies: Mapping[str, PolicyInfo]) -> str:
    info = policies.get(policy_id)
    return f"{shown_text(policy_id)} ({info.location})" if info else shown_text(policy_id)


def _list(ids: Iterable[str]) -> str:
    items = [shown_text(i) for i in ids]
    return ", ".join(items) if items else "no policy (default deny)"


def failure_lines(report: RunReport, snapshot: PolicySnapshot) -> list[str]:
    """One line for every failing case, in file order."""
    return [
        failure_line(r, snapshot.stores[r.case.request.store_id].policies) for r in report.failed
    ]


def verbose_lines(report: RunReport, snapshot: PolicySnapshot) -> list[str]:
    """With ``-v``: every case with its result (a failure says what was expected, as without
    ``-v``), and Cedar's full error text (may quote data)."""
    lines = []
    for result in report.results:
        case = result.case
        if result.passed:
            answer = f"ok   {case.file}:{case.line}: {case.title}: "
            answer += describe_outcome(result.outcome)
        else:
            policies = snapshot.stores[case.request.store_id].policies
            answer = f"FAIL {case.file}:{case.line}: {case.title}: {_judged(result, policies)}"
        lines.append(answer)
        lines.extend(f"       {e.policy_id or '?'}: {e.detail}" for e in result.outcome.errors)
    return lines


def coverage_lines(coverage: StoreCoverage) -> list[str]:
    """A table of every policy with its counts, then the policies never exercised."""
    total = len(coverage.policies)
    lines = [
        f"coverage of store {coverage.store_id}: {coverage.exercised} of {total} policies "
        f"exercised ({format_percent(coverage.fraction)}) by {coverage.cases} cases",
        f"  {'cases':>6}  {'errors':>6}  {'effect':<6}  {'policy':<44}  where",
    ]
    for item in sorted(coverage.policies, key=lambda p: (p.info.file, p.info.line)):
        info = item.info
        lines.append(
            f"  {item.decided:>6}  {item.errored:>6}  {info.effect:<6}  "
            f"{info.id:<44}  {info.location}"
        )
    never = coverage.never_exercised
    lines.append(f"  never exercised: {len(never) or 'none'}")
    lines.extend(f"    - {p.id} ({p.location})" for p in never)
    return lines


def below_minimum_line(coverage: StoreCoverage, minimum: Fraction) -> str:
    """Why a store fails ``--min-coverage``."""
    return (
        f"coverage of store {coverage.store_id} is {format_percent(coverage.fraction)}, "
        f"below the required {format_percent(minimum)}"
    )


def summary_line(report: RunReport, load_seconds: float) -> str:
    """``N passed, M failed``, then how many suites and how long loading and evaluation took."""
    failed = len(report.failed)
    passed = len(report.results) - failed
    suites = len({(r.case.file, r.case.suite) for r in report.results})
    return (
        f"{passed} passed, {failed} failed ({_count(len(report.results), 'case')} from "
        f"{_count(suites, 'suite')}; loaded in {load_seconds:.2f}s, "
        f"evaluated in {report.seconds:.2f}s)"
    )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
