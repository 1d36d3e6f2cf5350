"""Translate between protobuf messages and domain types; every field problem is a RequestError."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict.cedar_json import (
    entity_references,
    entity_uid,
    parse_context_json,
    parse_entities_json,
    referenced_uids,
)
from verdict.errors import RequestError
from verdict.json_values import DEFAULT_MAX_DEPTH, ValueBudget
from verdict.model import (
    TYPE_NAME_PROBLEM,
    AuthorizationRequest,
    AuthorizationResult,
    Decision,
    DenyKind,
    EntityUid,
    JsonObject,
    is_type_name,
)

MAX_UID_PART_BYTES = 1024
DEFAULT_MAX_REFERENCES = 1_000
DEFAULT_MAX_CONTEXT_BYTES = 1024 * 1024


@dataclass(frozen=True)
class RequestLimits:
    """What one decision request may make the server parse and look up; defaults match
    ``verdict.config.Settings`` (the JSON value limits: docs/security.md, "JSON values")."""

    max_depth: int = DEFAULT_MAX_DEPTH
    max_references: int = DEFAULT_MAX_REFERENCES
    max_context_values: int = 1_000
    max_entity_values: int = 1_500  # all of entities_json together
    max_batch_values: int = 4_000  # context and entities of a batch's items together
    max_context_bytes: int = DEFAULT_MAX_CONTEXT_BYTES  # checked before parsing
    max_id_bytes: int = MAX_UID_PART_BYTES

    def batch_budget(self) -> ValueBudget:
        """A fresh budget for the items of one BatchAuthorize call."""
        return ValueBudget(self.max_batch_values, "requests")


def uid_from_proto(
    message: pb.IsAuthorizedRequest, field: str, max_bytes: int = MAX_UID_PART_BYTES
) -> EntityUid:
    """Read a required EntityUid field, naming ``field`` when it is missing or malformed."""
    if not message.HasField(field):  # type: ignore[arg-type]
        raise RequestError(field, "is required")
    return checked_uid(getattr(message, field), field, max_bytes)


def checked_uid(uid: pb.EntityUid, field: str, max_bytes: int = MAX_UID_PART_BYTES) -> EntityUid:
    """A present uid: a Cedar type name and any id (the empty one too, as in Cedar)."""
    type_name, entity_id = uid.type, uid.id
    for part, text in (("type", type_name), ("id", entity_id)):
        # A character is at most 4 bytes of UTF-8: short parts need no encoding to be measured.
        if len(text) * 4 > max_bytes and len(text.encode()) > max_bytes:
            raise RequestError(f"{field}.{part}", f"exceeds {max_bytes} bytes")
    if not is_type_name(type_name):
        raise RequestError(f"{field}.type", TYPE_NAME_PROBLEM)
    return EntityUid(type_name, entity_id)


def request_from_proto(
    message: pb.IsAuthorizedRequest,
    limits: RequestLimits = RequestLimits(),
    deadline: float | None = None,
    budget: ValueBudget | None = None,
) -> AuthorizationRequest:
    """Convert and check one request; raises RequestError naming the first bad field. JSON
    values are counted while parsing (each field against its limit, and against ``budget``,
    the whole batch's, if given) before anything else looks at them."""
    # Counted before parsing: the parse is the work the limit bounds.
    if len(message.context_json.encode()) > limits.max_context_bytes:
        raise RequestError("context_json", f"is larger than {limits.max_context_bytes} bytes")
    principal = uid_from_proto(message, "principal", limits.max_id_bytes)
    action = uid_from_proto(message, "action", limits.max_id_bytes)
    resource = uid_from_proto(message, "resource", limits.max_id_bytes)
    context = parse_context_json(
        message.context_json, limits.max_depth, limits.max_context_values, budget
    )
    entities = parse_entities_json(
        message.entities_json, "entities_json", limits.max_depth, limits.max_entity_values, budget
    )
    request = AuthorizationRequest(
        principal=principal,
        action=action,
        resource=resource,
        context=context,
        store_id=message.policy_store_id,
        extra_entities=entities,
        min_entity_version=message.min_entity_version,
        deadline=deadline,
        explain=message.explain,
    )
    check_reference_count(request, limits.max_references)
    return request


def check_reference_count(request: AuthorizationRequest, limit: int) -> None:
    """Bound the uids a caller makes the store look up: each one costs a read (and a cache
    entry), so thousands of invented references would flush the cache and stall the store."""
    seen: set[EntityUid] = set()
    for field, uids in (
        ("context_json", referenced_uids(request.context)),
        ("entities_json", _inline_uids(request.extra_entities)),
    ):
        for uid in uids:
            seen.add(uid)
            if len(seen) > limit:
                raise RequestError(field, f"names more than {limit} distinct entities")


def _inline_uids(entities: Sequence[JsonObject]) -> Iterator[EntityUid]:
    for entity in entities:
        yield entity_uid(entity)
        yield from entity_references(entity)


def response_to_proto(result: AuthorizationResult) -> pb.IsAuthorizedResponse:
    """Build the wire response; only data-free error categories are sent."""
    return pb.IsAuthorizedResponse(
        decision=pb.DECISION_ALLOW if result.decision is Decision.ALLOW else pb.DECISION_DENY,
        determining_policies=list(result.determining_policies),
        errors=[
            pb.EvaluationError(policy_id=e.policy_id, message=e.message) for e in result.errors
        ],
        policy_version=result.policy_version,
        policy_store_id=result.store_id,
        entity_version=result.entity_version,
        deny_kind=_DENY_KINDS[result.deny_kind],
        explanations=[
            pb.PolicyExplanation(
                policy_id=e.policy_id,
                effect=e.effect,
                applies=e.applies,
                conditions=[
                    pb.ConditionCheck(kind=c.kind, outcome=c.outcome, conjunct=c.conjunct)
                    for c in e.conditions
                ],
            )
            for e in result.explanations
        ],
    )


_DENY_KINDS = {
    None: pb.DENY_KIND_UNSPECIFIED,
    DenyKind.EXPLICIT_FORBID: pb.DENY_KIND_EXPLICIT_FORBID,
    DenyKind.NO_PERMIT_MATCHED: pb.DENY_KIND_NO_PERMIT_MATCHED,
    DenyKind.EVALUATION_ERROR: pb.DENY_KIND_EVALUATION_ERROR,
    DenyKind.ENTITY_MISSING: pb.DENY_KIND_ENTITY_MISSING,
}
