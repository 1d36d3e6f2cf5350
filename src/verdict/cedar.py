"""The only module that imports cedarpy or reads Cedar's messages: parsing, validation and
evaluation, with Cedar's error text classified into typed, data-free answers.

Cedar's messages are not an API. Every message Verdict depends on is read here, through the
tables below, and tests/security/test_cedar_contract.py provokes each with real cedarpy, so
that a cedarpy upgrade that changes one fails loudly (pyproject pins the tested range).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cedarpy

from verdict.cedar_nesting import nesting_problem
from verdict.model import JsonObject

# Opaque pre-parsed handles; callers keep them and pass them back, never look inside.
PolicySetHandle = Any
SchemaHandle = Any


class CedarError(ValueError):
    """Cedar rejected some input; the message is Cedar's own (may quote the input)."""


def policy_to_json(text: str) -> JsonObject:
    """Parse Cedar policy text into Cedar's JSON policy-set form (EST)."""
    _check_nesting(text, policies=True)
    try:
        result: JsonObject = json.loads(cedarpy.policies_to_json_str(text))
    except ValueError as exc:
        raise CedarError(str(exc)) from None
    except RecursionError:  # Cedar's JSON form past Python's own limit (~450 chained operators)
        raise CedarError(_TOO_DEEP_FOR_JSON) from None
    return result


def format_policies(text: str) -> str:
    """Cedar's own formatting of policy text (comments and annotations kept)."""
    _check_nesting(text, policies=True)
    try:
        formatted: str = cedarpy.format_policies(text)
    except ValueError as exc:
        raise CedarError(str(exc)) from None
    return formatted


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
    ids = {*static, *templates, *(str(link.get("newId", "")) for link in links)}
    return policy_set_from_json(json.dumps(document), ids)


def static_policy_text(form: JsonObject) -> str:
    """The Cedar text of one static policy given in Cedar's JSON form (a template's link with
    its slots filled in, to be validated like a policy written out)."""
    document = {"staticPolicies": {"policy0": form}, "templates": {}, "templateLinks": []}
    try:
        return str(cedarpy.policies_from_json_str(json.dumps(document)))
    except ValueError as exc:
        raise CedarError(str(exc)) from None


def policy_set_from_json(document: str, ids: Collection[str]) -> PolicySetHandle:
    """Build a policy set from Cedar's JSON policy-set text whose policy ids are ``ids``
    (the policy index assembles the text from pre-encoded parts)."""
    try:
        handle = cedarpy.PolicySet.from_json_str(document)
    except ValueError as exc:
        message = str(exc)
        if message == _JSON_REFUSED:  # serde_json's recursion limit, in practice
            message = _TOO_DEEP_FOR_JSON
        raise CedarError(message) from None
    return _PolicySet(handle, frozenset(ids))


_JSON_REFUSED = "error serializing/deserializing policy set to/from JSON"
_TOO_DEEP_FOR_JSON = (
    "nested too deeply for Cedar's JSON form of policies (128 levels, about 60 chained operators)"
)


def _check_nesting(text: str, *, policies: bool = False) -> None:
    """CedarError when ``text`` is nested too deeply to hand cedarpy (it crashes on such text)."""
    problem = nesting_problem(text, count_operators=policies)
    if problem is not None:
        raise CedarError(problem)


@dataclass(frozen=True, slots=True)
class _PolicySet:
    """A parsed policy set and its ids (Cedar's error text names a policy only inside prose)."""

    handle: Any
    ids: frozenset[str]


def parse_schema(text: str, *, is_json: bool) -> SchemaHandle:
    """Parse a Cedar schema from its text or JSON form (JSON nesting: serde_json's own bound).

    With the GIL released: Cedar's schema build is superlinear in chained action groups and
    entity types (2,000 chained actions ~2.5 s), and a reload parses on a thread of its own,
    beside the decisions on the event loop (attack round 18: they waited for it)."""
    try:
        if is_json:
            return cedarpy.Schema.from_json_str(text, release_gil=True)
        _check_nesting(text)
        return cedarpy.Schema.from_str(text, release_gil=True)
    except ValueError as exc:
        raise CedarError(str(exc)) from None


@dataclass(frozen=True)
class ValidationIssue:
    """A schema validation failure: the policy's position in the list, Cedar's message about it."""

    position: int
    message: str


def validate(policy_texts: Sequence[str], schema: SchemaHandle) -> list[ValidationIssue]:
    """Validate policies (one text per policy) against a schema; ids are positions in the list.
    The texts are policies parsed before (``policy_to_json`` bounded their nesting)."""
    result = cedarpy.validate_policies("\n".join(policy_texts), schema)
    if result.validation_passed:
        return []
    issues = []
    for error in result.errors:
        position = int(str(error.policy_id).removeprefix("policy"))
        issues.append(ValidationIssue(position, _strip_positional(str(error.error))))
    return issues


def _strip_positional(message: str) -> str:
    # The validator names the positional id ("for policy `policy3`, ..."); callers show ours.
    if message.startswith(_VALIDATION_PREFIX):
        _, _, rest = message.partition("`, ")
        return rest or message
    return message


@dataclass(frozen=True, slots=True, eq=False)
class EntitiesHandle:
    """A parsed, schema-checked Cedar entity set (its ancestors computed), reusable across
    calls; valid only with the schema it was parsed against (Cedar neither re-checks it nor
    adds that schema's action entities when it is used)."""

    handle: Any
    schema: SchemaHandle | None


def parse_entities(
    text: str, schema: SchemaHandle | None, *, release_gil: bool = False
) -> EntitiesHandle:
    """Parse a Cedar JSON entity array once, for many evaluations. ``release_gil`` lets other
    threads run while Cedar parses: for a worker thread, never the event loop's (taking the
    GIL back can then wait a whole switch interval)."""
    try:
        handle = cedarpy.Entities.from_json_str(text, schema, release_gil=release_gil)
    except ValueError as exc:
        raise CedarError(str(exc)) from None
    return EntitiesHandle(handle, schema)


Entities = Sequence[JsonObject] | EntitiesHandle


def _entities_arg(entities: Entities) -> Any:
    """What cedarpy takes: the parsed handle, or a list of Cedar JSON entities."""
    return entities.handle if isinstance(entities, EntitiesHandle) else list(entities)


def schema_actions(schema: SchemaHandle) -> list[JsonObject]:
    """The schema's action entities, each with its ancestors as ``parents`` (Cedar adds these
    to every evaluation's entities; the policy index reads action groups from them)."""
    result: list[JsonObject] = json.loads(str(cedarpy.Entities.from_json_str("[]", schema)))
    return result


def check_entities(entities: Sequence[JsonObject], schema: SchemaHandle | None) -> None:
    """Raise CedarError unless the entities parse (and conform to the schema when given)."""
    try:
        cedarpy.Entities.from_json_str(json.dumps(list(entities)), schema)
    except ValueError as exc:
        raise CedarError(str(exc)) from None


@dataclass(frozen=True, slots=True)
class EvaluationFault:
    """A policy that errored: its id ("" if unknown), a data-free category, Cedar's text.

    The text may quote entity data: show it to operators (CLI, test reports), never log it.
    """

    policy_id: str
    category: str
    text: str


@dataclass(frozen=True, slots=True)
class NoDecisionFault:
    """Why Cedar gave no decision: the request field at fault and a data-free problem, or
    (``entity_data``) entity data that does not conform to the schema. ``kind`` says which of
    Cedar's checks failed (one of ``NO_DECISION_KINDS``) and ``name`` the context attribute
    Cedar named, if any: the engine reads the request against the schema's shape to say more."""

    field: str
    problem: str
    entity_data: bool = False
    kind: str = ""
    name: str = ""


@dataclass(frozen=True, slots=True)
class RawDecision:
    """Cedar's answer: "Allow", "Deny" or "NoDecision" (then ``no_decision`` says why)."""

    decision: str
    reasons: tuple[str, ...]
    errors: tuple[EvaluationFault, ...]
    no_decision: NoDecisionFault | None = None


def is_authorized(
    request: JsonObject,
    policies: PolicySetHandle,
    entities: Entities,
    schema: SchemaHandle | None,
) -> RawDecision:
    """Evaluate one request against pre-parsed policies and an entity slice (or a handle)."""
    result = cedarpy.is_authorized(request, policies.handle, _entities_arg(entities), schema)
    return _raw(result, policies.ids)


def is_authorized_batch(
    requests: Sequence[JsonObject],
    policies: PolicySetHandle,
    entities: Entities,
    schema: SchemaHandle | None,
) -> list[RawDecision]:
    """Evaluate several requests that share one entity set in a single Cedar call."""
    arg = _entities_arg(entities)
    results = cedarpy.is_authorized_batch(list(requests), policies.handle, arg, schema)
    return [_raw(r, policies.ids) for r in results]


def _raw(result: Any, policy_ids: Collection[str]) -> RawDecision:
    diagnostics = result.diagnostics
    decision = str(result.decision.value)
    texts = [str(e) for e in diagnostics.errors]
    if decision == "NoDecision":
        return RawDecision(decision, (), (), classify_no_decision(texts))
    return RawDecision(
        decision=decision,
        reasons=tuple(str(r) for r in diagnostics.reasons),
        errors=tuple(classify_evaluation_error(t, policy_ids) for t in texts),
    )


# --- Cedar's words. Evaluation errors: "error while evaluating policy `<id>`: <reason>".
_EVAL_PREFIX = "error while evaluating policy `"
_MISSING_ATTRIBUTE = re.compile(r"does not have the attribute `([A-Za-z_][A-Za-z0-9_]*)`$")
# (substring of Cedar's message, data-free category we report), checked in order.
_CATEGORIES = (
    ("does not have the tag", "tag not found"),
    ("does not exist", "entity not found"),
    ("overflow", "integer overflow"),
    ("extension function", "extension function error"),
    ("type error", "type error"),
)
# NoDecision: "failed to build request: ..." prefixes, the request field at fault, our problem.
_BUILD_REQUEST = "failed to build request:"
_CONTEXT_PROBLEM = "does not match the schema's context type for this action"
_SCOPE_PROBLEM = "has an entity type the schema does not allow for this action"
_EXTENSION_PROBLEM = "holds an extension value (datetime, ip, decimal, duration) Cedar cannot parse"
# (start of the reason after "failed to build request: ", field, problem, kind), in order.
_REQUEST_FIELDS = (
    ("action ", "action", "is not an action declared in the schema", "action"),
    ("principal ", "principal", _SCOPE_PROBLEM, "scope"),
    ("resource ", "resource", _SCOPE_PROBLEM, "scope"),
    ("context ", "context_json", _CONTEXT_PROBLEM, "type"),
    ("error while evaluating ", "context_json", _EXTENSION_PROBLEM, "extension"),
    ("type error:", "context_json", _EXTENSION_PROBLEM, "extension"),
    (
        "entity ",
        "request",
        "names an entity of an enumerated type with an id the schema does not declare",
        "enum",
    ),
)
# Problems found while Cedar parses the context: (substring, kind); the attribute it names.
_CONTEXT_KINDS = (
    ("expected the record to have an attribute", "missing"),
    ("should not exist according to the schema", "undeclared"),
)
_NAMED_ATTRIBUTE = re.compile(r"attribute `([^`]*)`")
NO_DECISION_KINDS = frozenset(
    {"action", "scope", "type", "extension", "enum", "missing", "undeclared", ""}
)
_ENTITIES_FAILED = "failed to parse entities"
_ENTITY_ATTRIBUTE = re.compile(r"attribute `([^`]+)`")
_QUOTED_UID = re.compile(r'`([A-Za-z_][\w:]*::"(?:[^"\\]|\\.)*")`')
UNDECLARED_ENTITY_TYPE = "has an entity type the schema does not declare"
# (substring of the reason, data-free explanation, whether it is about one attribute).
_ENTITY_PROBLEMS = (
    ("should not exist", "is not declared in the schema", True),
    ("to have attribute", "is required by the schema but missing", True),
    ("type mismatch", "has a value of the wrong type", True),
    ("ancestor of type", "has a parent whose type the schema does not allow", False),
    ("which is not declared in the schema", UNDECLARED_ENTITY_TYPE, False),
    ("transitive closure", "its parents form a cycle back to itself", False),
    ("extension function", "is not a valid value of its extension type", True),
)
_VALIDATION_PREFIX = "for policy `"


def classify_evaluation_error(text: str, policy_ids: Collection[str]) -> EvaluationFault:
    """The policy an evaluation error names (one of ``policy_ids``) and its category."""
    policy_id = ""
    if text.startswith(_EVAL_PREFIX):
        rest = text[len(_EVAL_PREFIX) :]
        # Ids may contain backticks, so match against the known ids, longest first.
        candidates = [pid for pid in policy_ids if rest.startswith(pid + "`: ")]
        policy_id = max(candidates, key=len, default="")
    return EvaluationFault(policy_id, _category(text), text)


def _category(text: str) -> str:
    if match := _MISSING_ATTRIBUTE.search(text):
        return f"attribute `{match.group(1)}` not found"
    for needle, category in _CATEGORIES:
        if needle in text:
            return category
    return "evaluation error"


def classify_no_decision(texts: Sequence[str]) -> NoDecisionFault:
    """Why Cedar returned NoDecision, from its error texts."""
    for text in texts:
        if text.startswith(_ENTITIES_FAILED):
            return NoDecisionFault("", "entity data does not conform to the schema", True)
        if text.startswith(_BUILD_REQUEST):
            return _request_fault(text[len(_BUILD_REQUEST) :].lstrip())
    return NoDecisionFault("request", "could not be evaluated (Cedar returned no decision)")


def _request_fault(reason: str) -> NoDecisionFault:
    for prefix, field, problem, kind in _REQUEST_FIELDS:
        if reason.startswith(prefix):
            return NoDecisionFault(field, problem, kind=kind)
    # Principal, action and resource are plain uids checked before Cedar; any other problem
    # building the request is a context value ("while parsing context, ...").
    for needle, kind in _CONTEXT_KINDS:
        if needle in reason:
            named = _NAMED_ATTRIBUTE.search(reason)
            return NoDecisionFault(
                "context_json", _CONTEXT_PROBLEM, kind=kind, name=named.group(1) if named else ""
            )
    return NoDecisionFault("context_json", _CONTEXT_PROBLEM, kind="type")


@dataclass(frozen=True, slots=True)
class EntityProblem:
    """Why Cedar rejects entities: its reason (may quote entity data, for operators only),
    a data-free explanation, and the attribute the explanation is about, if any."""

    text: str
    explanation: str
    attribute: str | None = None

    def data_free(self) -> str:
        """The entity Cedar names, the attribute and the explanation, never a value: for the
        server's log and ReloadPolicies' answer (Cedar's text quotes the value at fault)."""
        uid = _QUOTED_UID.search(self.text)
        entity = f"{uid.group(1)}: " if uid else ""
        attribute = f"attribute `{self.attribute}` " if self.attribute else ""
        return f"{entity}{attribute}{self.explanation}"


def classify_entity_problem(reason: str) -> EntityProblem:
    """Classify Cedar's reason for rejecting entities (its text after the quoted input). The
    reason names the attribute and states the problem before it quotes any value, so the
    first attribute and the earliest problem phrase are Cedar's own, whatever a value holds."""
    attribute = _ENTITY_ATTRIBUTE.search(reason)
    matches = [
        (at, explanation, about_attribute)
        for needle, explanation, about_attribute in _ENTITY_PROBLEMS
        if (at := reason.find(needle)) >= 0
    ]
    if matches:
        _, explanation, about_attribute = min(matches, key=lambda match: match[0])
        named = attribute.group(1) if about_attribute and attribute else None
        return EntityProblem(reason, explanation, named)
    return EntityProblem(reason, "does not conform to the schema")


def entities_conform(text: str, schema: SchemaHandle | None, *, release_gil: bool = False) -> bool:
    """Whether Cedar accepts the entities document ``text`` (and finds it conforming to
    ``schema``); ``entity_problem`` says why when it does not. ``release_gil`` lets other
    threads run Python meanwhile (call it from a thread of its own)."""
    try:
        cedarpy.Entities.from_json_str(text, schema, release_gil=release_gil)
    except ValueError:
        return False
    return True


_PROBE = {"type": "__verdict_probe", "id": ""}


def entity_problem(
    entities: Sequence[JsonObject], schema: SchemaHandle | None
) -> EntityProblem | None:
    """Why Cedar rejects ``entities`` (None if it accepts them).

    ``Entities.from_json_str`` reports only a summary; evaluation reports the full chain (which
    attribute of which entity), and it parses entities before it looks at the request, so a
    probe request yields exactly the entity error.
    """
    request = {"principal": _PROBE, "action": _PROBE, "resource": _PROBE, "context": {}}
    document = json.dumps(list(entities))
    result = cedarpy.is_authorized(request, _EMPTY_POLICIES, document, schema)
    # Cedar quotes the whole input, then gives its reason, which may quote a value again.
    # The reason is cut where the input (sent as this very text) ends: searching the text for
    # a marker could find one a caller wrote inside a value (attack round 27).
    quoted = f"{_ENTITIES_FAILED} from:\n{document}: "
    for error in result.diagnostics.errors:
        text = str(error)
        if text.startswith(_ENTITIES_FAILED):
            found = text.startswith(quoted)
            return classify_entity_problem(text[len(quoted) :] if found else "")
    return None


_EMPTY_POLICIES = cedarpy.PolicySet.from_str("")


def schema_text(schema: SchemaHandle) -> str:
    """The schema in Cedar's normalized Cedar syntax, whichever syntax it was written in
    (verdict.schema_shape reads it)."""
    return str(schema)


def extension_accepts(name: str, value: Any) -> bool:
    """Whether Cedar reads the context JSON ``value`` as a value of the extension type ``name``
    (ipaddr, decimal, datetime or duration): a string it parses, or an ``__extn`` escape."""
    request = {
        "principal": _PROBE,
        "action": {"type": "Action", "id": name},
        "resource": _PROBE,
        "context": {"value": value},
    }
    result = cedarpy.is_authorized(request, _EMPTY_POLICIES, [], _extension_schema())
    return str(result.decision.value) != "NoDecision"


_EXTENSION_SCHEMA: list[Any] = []


def _extension_schema() -> Any:
    """One action per extension type whose context holds one value of it (built once)."""
    if not _EXTENSION_SCHEMA:
        actions = "".join(
            f"action {name} appliesTo {{ principal: {_PROBE['type']}, "
            f"resource: {_PROBE['type']}, context: {{ value: __cedar::{name} }} }};"
            for name in ("ipaddr", "decimal", "datetime", "duration")
        )
        _EXTENSION_SCHEMA.append(cedarpy.Schema.from_str(f"entity {_PROBE['type']};{actions}"))
    return _EXTENSION_SCHEMA[0]
