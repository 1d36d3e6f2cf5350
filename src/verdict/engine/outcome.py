"""Turn Cedar's raw answer into a fail-closed AuthorizationResult or a field-naming error."""

from __future__ import annotations

import re
from collections.abc import Collection

from verdict.cedar import RawDecision
from verdict.errors import EntityDataError, RequestError
from verdict.model import AuthorizationResult, Decision, EvaluationError
from verdict.policy.snapshot import ErrorMode, StoreSnapshot

_EVAL_PREFIX = "error while evaluating policy `"
_ATTRIBUTE = re.compile(r"does not have the attribute `([A-Za-z_][A-Za-z0-9_]*)`$")
# (substring of Cedar's message, data-free category we report), checked in order.
_CATEGORIES = (
    ("does not have the tag", "tag not found"),
    ("does not exist", "entity not found"),
    ("overflow", "integer overflow"),
    ("extension function", "extension function error"),
    ("type error", "type error"),
)
# NoDecision ("failed to build request: ...") messages, mapped to the request field at fault.
_REQUEST_FIELDS = (
    ("failed to build request: action", "action", "is not an action declared in the schema"),
    (
        "failed to build request: principal",
        "principal",
        "has an entity type the schema does not allow for this action",
    ),
    (
        "failed to build request: resource",
        "resource",
        "has an entity type the schema does not allow for this action",
    ),
    (
        "failed to build request: context",
        "context_json",
        "does not match the schema's context type for this action",
    ),
    (
        "failed to build request: error while evaluating",
        "context_json",
        "holds an extension value (datetime, ip, decimal, duration) Cedar cannot parse",
    ),
    (
        "failed to build request: while parsing context",
        "context_json",
        "does not match the schema's context type for this action",
    ),
)


_CONTEXT_PROBLEM = "does not match the schema's context type for this action"


def interpret(
    raw: RawDecision, store: StoreSnapshot, entity_version: int = 0
) -> AuthorizationResult:
    """Map Cedar's answer to ours. NoDecision raises; errors under ``deny`` make a DENY."""
    if raw.decision == "NoDecision":
        raise _no_decision_error(raw.errors)
    found = [_evaluation_error(e, store.policies) for e in raw.errors]
    errors = tuple(sorted(found, key=lambda e: store.position(e.policy_id)))
    allowed = raw.decision == "Allow"
    denied_for_errors = (
        allowed and bool(errors) and (store.settings.on_evaluation_error is ErrorMode.DENY)
    )
    if denied_for_errors:
        # The permits that matched did not decide anything: the errors did.
        return AuthorizationResult(
            Decision.DENY,
            (),
            errors,
            store.version,
            store.store_id,
            denied_for_errors=True,
            entity_version=entity_version,
        )
    return AuthorizationResult(
        decision=Decision.ALLOW if allowed else Decision.DENY,
        determining_policies=store.in_order(raw.reasons),
        errors=errors,
        policy_version=store.version,
        store_id=store.store_id,
        entity_version=entity_version,
    )


def _evaluation_error(text: str, policy_ids: Collection[str]) -> EvaluationError:
    policy_id = ""
    if text.startswith(_EVAL_PREFIX):
        rest = text[len(_EVAL_PREFIX) :]
        # Ids may contain backticks, so match against the known ids, longest first.
        candidates = [pid for pid in policy_ids if rest.startswith(pid + "`: ")]
        policy_id = max(candidates, key=len, default="")
    return EvaluationError(policy_id, _category(text), detail=text)


def _category(text: str) -> str:
    if match := _ATTRIBUTE.search(text):
        return f"attribute `{match.group(1)}` not found"
    for needle, category in _CATEGORIES:
        if needle in text:
            return category
    return "evaluation error"


def _no_decision_error(errors: tuple[str, ...]) -> Exception:
    for text in errors:
        for prefix, field, problem in _REQUEST_FIELDS:
            if text.startswith(prefix):
                return RequestError(field, problem)
        if text.startswith("failed to parse entities"):
            return EntityDataError("entity data for this request does not conform to the schema")
        if text.startswith("failed to build request:"):
            # Principal, action and resource are plain uids checked above; any other problem
            # building the request is a context value (e.g. a type error deep in a record).
            return RequestError("context_json", _CONTEXT_PROBLEM)
    return RequestError("request", "could not be evaluated (Cedar returned no decision)")
