"""Expected and actual outcomes of a case, and the judgement that compares them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from verdict.errors import RequestError, VerdictError
from verdict.model import AuthorizationResult, EvaluationError


@dataclass(frozen=True)
class Expected:
    """What a case requires: a decision and, optionally, its exact evidence."""

    decision: str  # allow, deny or invalid
    policies: frozenset[str] | None = None  # None: determining policies are not checked
    errors: frozenset[str] = frozenset()  # policy ids whose evaluation must error (exactly)
    field: str | None = None  # for invalid: the request field at fault


@dataclass(frozen=True)
class Outcome:
    """What the engine answered for a case: a decision with evidence, or an invalid request."""

    decision: str  # allow, deny or invalid
    determining: tuple[str, ...] = ()
    errors: tuple[EvaluationError, ...] = ()
    denied_for_errors: bool = False
    field: str = ""
    problem: str = ""
    deny_kind: str = ""

    @classmethod
    def of(cls, answer: AuthorizationResult | VerdictError) -> Outcome:
        """The outcome of an engine answer or of the error it raised."""
        if isinstance(answer, VerdictError):
            field = answer.field if isinstance(answer, RequestError) else ""
            return cls("invalid", field=field, problem=str(answer))
        return cls(
            answer.decision.value,
            tuple(sorted(answer.determining_policies)),
            answer.errors,
            answer.denied_for_errors,
            deny_kind=answer.deny_kind.value if answer.deny_kind is not None else "",
        )

    @property
    def error_ids(self) -> frozenset[str]:
        """Ids of the policies whose evaluation errored."""
        return frozenset(e.policy_id for e in self.errors)


@dataclass(frozen=True)
class Judgement:
    """The differences between expected and actual, and the policies they implicate."""

    problems: tuple[str, ...]
    implicated: tuple[str, ...]

    @property
    def passed(self) -> bool:
        """Whether the outcome met every expectation."""
        return not self.problems


def judge(expected: Expected, actual: Outcome) -> Judgement:
    """Compare an outcome with its expectation; name the policies that would have to change."""
    problems: list[str] = []
    implicated: set[str] = set()
    if expected.decision != actual.decision:
        problems.append(f"expected {expected.decision.upper()}, got {actual.decision.upper()}")
        implicated.update(_decision_culprits(expected, actual))
    evaluated = "invalid" not in (expected.decision, actual.decision)
    if evaluated and expected.policies is not None:
        got = frozenset(actual.determining)
        if got != expected.policies:
            problems.append(
                f"determining policies: expected {_ids(expected.policies)}, got {_ids(got)}"
            )
            implicated.update(got ^ expected.policies)
    if evaluated and actual.error_ids != expected.errors:
        problems.append(f"errors: expected {_ids(expected.errors)}, got {_ids(actual.error_ids)}")
        implicated.update(actual.error_ids ^ expected.errors)
    if expected.decision == actual.decision == "invalid" and not _field_matches(expected, actual):
        problems.append(f"invalid field: expected {expected.field}, got {actual.field or '?'}")
    implicated.discard("")
    return Judgement(tuple(problems), tuple(sorted(implicated)))


def _decision_culprits(expected: Expected, actual: Outcome) -> Iterable[str]:
    if actual.decision == "invalid" or expected.decision == "invalid":
        return ()  # the request (or the schema), not a policy, decides validity
    if actual.denied_for_errors:
        return actual.error_ids  # the errors forced the deny; those policies must be fixed
    if actual.determining:
        return actual.determining  # the permits that allowed, or the forbids that denied
    # Denied by default: the permits the case names are the ones that failed to apply.
    return expected.policies or ()


def _field_matches(expected: Expected, actual: Outcome) -> bool:
    want = expected.field
    return want is None or actual.field == want or actual.field.startswith(want + "[")


def _ids(ids: Iterable[str]) -> str:
    items = sorted(i or "?" for i in ids)
    return "[" + ", ".join(items) + "]" if items else "none"
