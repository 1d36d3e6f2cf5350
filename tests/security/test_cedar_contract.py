"""Contract with cedarpy: every Cedar message Verdict reads is provoked and its reading checked.

Verdict classifies Cedar's error text in src/verdict/cedar.py only. If a cedarpy upgrade changes
a message, the matching test here fails instead of Verdict silently misclassifying it.
"""

from __future__ import annotations

from typing import Any

import pytest

from verdict import cedar
from verdict.model import JsonObject

SCHEMA = """
entity Role;
entity Group in [Group];
entity User in [Role, Group] = { name: String, age?: Long, boss?: User };
entity Doc = { owner: User };
entity Kind enum ["a", "b"];
action view appliesTo {
  principal: [User], resource: [Doc, Kind],
  context: { mfa: Bool, ip?: ipaddr, when?: datetime, who?: User }
};
"""
ODD_ID = "odd`: id"  # ids may contain backticks; Cedar quotes them in backticks


def uid(type_: str, id_: str) -> dict[str, str]:
    return {"type": type_, "id": id_}


def entity(type_: str, id_: str, attrs: JsonObject | None = None, parents: Any = ()) -> JsonObject:
    return {"uid": uid(type_, id_), "attrs": attrs or {}, "parents": list(parents)}


ALICE = entity("User", "alice", {"name": "A"})
DOC = entity("Doc", "d", {"owner": uid("User", "alice")})
REQUEST: JsonObject = {
    "principal": uid("User", "alice"),
    "action": uid("Action", "view"),
    "resource": uid("Doc", "d"),
    "context": {"mfa": True},
}


@pytest.fixture(scope="module")
def schema() -> cedar.SchemaHandle:
    """The contract schema, parsed once."""
    return cedar.parse_schema(SCHEMA, is_json=False)


def decide(
    condition: str,
    *,
    context: JsonObject | None = None,
    entities: list[JsonObject] | None = None,
    schema: cedar.SchemaHandle | None = None,
    policy_id: str = "p",
) -> cedar.RawDecision:
    """Evaluate one permit with ``condition`` under our policy id."""
    text = f"permit(principal, action, resource) when {{ {condition} }};"
    est = next(iter(cedar.policy_to_json(text)["staticPolicies"].values()))
    policies = cedar.build_policy_set({policy_id: est, "other": est}, {})
    request = {**REQUEST, "context": REQUEST["context"] if context is None else context}
    return cedar.is_authorized(request, policies, entities or [ALICE, DOC], schema)


def test_decision_words() -> None:
    """Cedar's decisions read as "Allow" and "Deny", reasons as our policy ids."""
    allow = decide("true")
    assert (allow.decision, set(allow.reasons), allow.errors) == ("Allow", {"p", "other"}, ())
    assert decide("false").decision == "Deny"


@pytest.mark.parametrize(
    ("condition", "context", "attrs", "category"),
    [
        ("principal.age > 1", None, None, "attribute `age` not found"),
        ('principal.getTag("t") == 1', None, None, "tag not found"),
        ('principal.boss.name == "x"', None, {"boss": {"__entity": uid("User", "x")}}, None),
        ("9223372036854775807 + context.n > 0", {"n": 1}, None, "integer overflow"),
        ("ip(context.s).isLoopback()", {"s": "bad"}, None, "extension function error"),
        ("context.s + 1 > 0", {"s": "bad"}, None, "type error"),
    ],
    ids=["attribute", "tag", "entity", "overflow", "extension", "type"],
)
def test_evaluation_error_categories(
    condition: str, context: JsonObject | None, attrs: JsonObject | None, category: str | None
) -> None:
    """Each evaluation error names the erroring policy by our id and gets its category."""
    entities = [entity("User", "alice", {"name": "A", **(attrs or {})}), DOC]
    raw = decide(condition, context=context, entities=entities, policy_id=ODD_ID)
    assert raw.decision == "Deny"
    assert {(e.policy_id, e.category) for e in raw.errors} == {
        (ODD_ID, category or "entity not found"),
        ("other", category or "entity not found"),
    }


@pytest.mark.parametrize(
    ("change", "field", "problem", "kind", "name"),
    [
        ({"action": uid("Action", "nope")}, "action", "is not an action declared", "action", ""),
        (
            {"principal": uid("Doc", "d")},
            "principal",
            "entity type the schema does not allow",
            "scope",
            "",
        ),
        (
            {"principal": uid("Nope", "d")},
            "principal",
            "entity type the schema does not allow",
            "scope",
            "",
        ),
        (
            {"resource": uid("User", "alice")},
            "resource",
            "entity type the schema does not allow",
            "scope",
            "",
        ),
        ({"resource": uid("Kind", "nope")}, "request", "enumerated type", "enum", ""),
        ({"context": {"mfa": "yes"}}, "context_json", "does not match the schema's", "type", ""),
        ({"context": {}}, "context_json", "does not match the schema's", "missing", "mfa"),
        (
            {"context": {"mfa": True, "z": 1}},
            "context_json",
            "does not match the schema's",
            "undeclared",
            "z",
        ),
        ({"context": {"mfa": None}}, "context_json", "does not match the schema's", "type", ""),
        (
            {"context": {"mfa": True, "who": "x"}},
            "context_json",
            "does not match the schema's",
            "type",
            "",
        ),
        (
            {"context": {"mfa": True, "ip": "bad"}},
            "context_json",
            "extension value",
            "extension",
            "",
        ),
        ({"context": {"mfa": True, "ip": 5}}, "context_json", "extension value", "extension", ""),
        (
            {"context": {"mfa": True, "when": "x"}},
            "context_json",
            "extension value",
            "extension",
            "",
        ),
    ],
    ids=[
        "action",
        "principal",
        "principal-undeclared",
        "resource",
        "enum",
        "type",
        "missing",
        "extra",
        "null",
        "entity-literal",
        "ip",
        "ip-type",
        "datetime",
    ],
)
def test_no_decision_names_the_request_field(
    schema: cedar.SchemaHandle,
    change: JsonObject,
    field: str,
    problem: str,
    kind: str,
    name: str,
) -> None:
    """A request Cedar cannot build is NoDecision with the field at fault and which of Cedar's
    checks failed (the engine then reads the request against the schema's shape)."""
    policies = cedar.build_policy_set({}, {})
    request = {**REQUEST, **change}
    if "principal" in change:  # Cedar checks the context first: give it a valid one
        request["context"] = {"mfa": True}
    raw = cedar.is_authorized(request, policies, [ALICE, DOC], schema)
    assert raw.decision == "NoDecision"
    assert raw.no_decision is not None
    assert (raw.no_decision.field, raw.no_decision.entity_data) == (field, False)
    assert problem in raw.no_decision.problem
    assert (raw.no_decision.kind, raw.no_decision.name) == (kind, name)
    assert raw.no_decision.kind in cedar.NO_DECISION_KINDS


def test_no_decision_other_request_problem_blames_context() -> None:
    """An unknown extension function in the context is read as a context problem."""
    raw = decide("true", context={"x": {"__extn": {"fn": "nope", "arg": "1"}}})
    assert raw.no_decision is not None
    assert (raw.no_decision.field, raw.no_decision.problem) == (
        "context_json",
        "does not match the schema's context type for this action",
    )


def test_schema_rendering_is_cedar_syntax(schema: cedar.SchemaHandle) -> None:
    """cedarpy renders a schema as normalized Cedar syntax: one declaration per action, lists
    bracketed, action names quoted (verdict.schema_shape reads this form)."""
    text = cedar.schema_text(schema)
    assert 'action "view" appliesTo {' in text
    assert "principal: [User]," in text
    assert "entity Kind enum [" in text


@pytest.mark.parametrize(
    ("name", "value", "accepted"),
    [
        ("datetime", "2025-03-04T10:00:00Z", True),
        ("datetime", "yesterday", False),
        ("ipaddr", "10.0.0.1", True),
        ("ipaddr", {"__extn": {"fn": "ip", "arg": "10.0.0.0/8"}}, True),
        ("ipaddr", 5, False),
        ("decimal", "1.25", True),
        ("decimal", "1.23456", False),
        ("duration", "1h30m", True),
        ("duration", {"__extn": {"fn": "ip", "arg": "10.0.0.1"}}, False),
    ],
)
def test_extension_accepts(name: str, value: Any, accepted: bool) -> None:
    """Cedar itself says whether a context value is a valid value of an extension type."""
    assert cedar.extension_accepts(name, value) is accepted


def test_no_decision_for_entity_data(schema: cedar.SchemaHandle) -> None:
    """Entities that fail the schema during evaluation are NoDecision blaming entity data."""
    raw = decide("true", entities=[entity("User", "alice", {"name": 1}), DOC], schema=schema)
    assert raw.no_decision is not None
    assert raw.no_decision.entity_data


GROUP_CYCLE = [
    entity("Group", "a", parents=[uid("Group", "b")]),
    entity("Group", "b", parents=[uid("Group", "a")]),
]


@pytest.mark.parametrize(
    ("entities", "explanation", "attribute"),
    [
        ([entity("User", "u", {"name": "A", "zz": 1})], "is not declared in the schema", "zz"),
        ([entity("User", "u")], "is required by the schema but missing", "name"),
        ([entity("User", "u", {"name": 1})], "has a value of the wrong type", "name"),
        (
            [entity("User", "u", {"name": "A"}, [uid("Doc", "d")])],
            "has a parent whose type the schema does not allow",
            None,
        ),
        ([entity("Nope", "x")], "has an entity type the schema does not declare", None),
        (GROUP_CYCLE, "its parents form a cycle back to itself", None),
    ],
    ids=["undeclared", "missing", "mismatch", "ancestor", "type", "cycle"],
)
def test_entity_problems(
    schema: cedar.SchemaHandle,
    entities: list[JsonObject],
    explanation: str,
    attribute: str | None,
) -> None:
    """Each entity rejection gets its explanation; Cedar's text starts after the quoted input."""
    problem = cedar.entity_problem(entities, schema)
    assert problem is not None
    assert (problem.explanation, problem.attribute) == (explanation, attribute)
    assert not problem.text.startswith("failed to parse entities")
    assert '"uid"' not in problem.text  # the quoted input JSON is cut off


def test_entity_cycle_without_schema() -> None:
    """A parent cycle is recognised without a schema too; valid entities have no problem."""
    problem = cedar.entity_problem(GROUP_CYCLE, None)
    assert problem is not None
    assert problem.explanation == "its parents form a cycle back to itself"
    assert cedar.entity_problem([ALICE, DOC], None) is None


def test_validation_message_drops_cedar_positional_id(schema: cedar.SchemaHandle) -> None:
    """Validator messages lose Cedar's positional policy id; positions map back to ours."""
    texts = [
        "permit(principal, action, resource);",
        "permit(principal, action, resource) when { principal.nope == 1 };",
    ]
    [issue] = cedar.validate(texts, schema)
    assert issue.position == 1
    assert issue.message.startswith("attribute `nope` on entity type `User` not found")
