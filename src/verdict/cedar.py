"""The only module that imports cedarpy: parsing, validation and evaluation, typed."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cedarpy

from verdict.model import JsonObject

# Opaque pre-parsed handles; callers keep them and pass them back, never look inside.
PolicySetHandle = Any
SchemaHandle = Any


class CedarError(ValueError):
    """Cedar rejected some input; the message is Cedar's own (may quote the input)."""


def policy_to_json(text: str) -> JsonObject:
    """Parse Cedar policy text into Cedar's JSON policy-set form (EST)."""
    try:
        result: JsonObject = json.loads(cedarpy.policies_to_json_str(text))
    except ValueError as exc:
        raise CedarError(str(exc)) from None
    return result


def build_policy_set(
    static: Mapping[str, JsonObject],
    templates: Mapping[str, JsonObject],
    links: Sequence[JsonObject] = (),
) -> PolicySetHandle:
    """Build a reusable policy set whose policies carry our stable ids."""
    document = {
        "staticPolicies": dict(static),
        "templates": dict(templates),
        "templateLinks": list(links),
    }
    try:
        return cedarpy.PolicySet.from_json_str(json.dumps(document))
    except ValueError as exc:
        raise CedarError(str(exc)) from None


def parse_schema(text: str, *, is_json: bool) -> SchemaHandle:
    """Parse a Cedar schema from its text or JSON form."""
    try:
        if is_json:
            return cedarpy.Schema.from_json_str(text)
        return cedarpy.Schema.from_str(text)
    except ValueError as exc:
        raise CedarError(str(exc)) from None


@dataclass(frozen=True)
class ValidationIssue:
    """A schema validation failure for one policy (positional Cedar id, Cedar's message)."""

    position: int
    message: str


def validate(policy_texts: Sequence[str], schema: SchemaHandle) -> list[ValidationIssue]:
    """Validate policies (one text per policy) against a schema; ids are positions in the list."""
    result = cedarpy.validate_policies("\n".join(policy_texts), schema)
    if result.validation_passed:
        return []
    issues = []
    for error in result.errors:
        position = int(str(error.policy_id).removeprefix("policy"))
        issues.append(ValidationIssue(position, str(error.error)))
    return issues


def check_entities(entities: Sequence[JsonObject], schema: SchemaHandle | None) -> None:
    """Raise CedarError unless the entities parse (and conform to the schema when given)."""
    try:
        cedarpy.Entities.from_json_str(json.dumps(list(entities)), schema)
    except ValueError as exc:
        raise CedarError(str(exc)) from None


@dataclass(frozen=True, slots=True)
class RawDecision:
    """Cedar's answer: decision is "Allow", "Deny" or "NoDecision"; errors are Cedar's text."""

    decision: str
    reasons: tuple[str, ...]
    errors: tuple[str, ...]


def is_authorized(
    request: JsonObject,
    policies: PolicySetHandle,
    entities: Sequence[JsonObject],
    schema: SchemaHandle | None,
) -> RawDecision:
    """Evaluate one request against pre-parsed policies and an entity slice."""
    result = cedarpy.is_authorized(request, policies, list(entities), schema)
    return _raw(result)


def is_authorized_batch(
    requests: Sequence[JsonObject],
    policies: PolicySetHandle,
    entities: Sequence[JsonObject],
    schema: SchemaHandle | None,
) -> list[RawDecision]:
    """Evaluate several requests that share one entity set in a single Cedar call."""
    results = cedarpy.is_authorized_batch(list(requests), policies, list(entities), schema)
    return [_raw(r) for r in results]


def _raw(result: Any) -> RawDecision:
    diagnostics = result.diagnostics
    return RawDecision(
        decision=str(result.decision.value),
        reasons=tuple(str(r) for r in diagnostics.reasons),
        errors=tuple(str(e) for e in diagnostics.errors),
    )


_PROBE = {"type": "__verdict_probe", "id": ""}
_MARKERS = (
    "entity does not conform to the schema",
    "error during entity deserialization",
    "transitive closure",
)


def entity_problem(entities: Sequence[JsonObject], schema: SchemaHandle | None) -> str | None:
    """Cedar's detailed reason why ``entities`` are rejected (None if they are accepted).

    ``Entities.from_json_str`` reports only a summary; evaluation reports the full chain (which
    attribute of which entity), and it parses entities before it looks at the request, so a
    probe request yields exactly the entity error. The text may quote entity data.
    """
    request = {"principal": _PROBE, "action": _PROBE, "resource": _PROBE, "context": {}}
    result = cedarpy.is_authorized(request, _EMPTY_POLICIES, list(entities), schema)
    for error in result.diagnostics.errors:
        text = str(error)
        if text.startswith("failed to parse entities"):
            starts = [i for m in _MARKERS if (i := text.rfind(m)) >= 0]
            return text[min(starts) :] if starts else "entities do not parse"
    return None


_EMPTY_POLICIES = cedarpy.PolicySet.from_str("")
