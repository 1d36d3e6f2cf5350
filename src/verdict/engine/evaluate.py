"""The pure, synchronous core of a decision: roots of a slice, and evaluation of one request."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from verdict import cedar
from verdict.cedar import CedarError
from verdict.cedar_json import entity_uid, referenced_uids
from verdict.engine.outcome import interpret
from verdict.errors import RequestError, VerdictError
from verdict.model import AuthorizationRequest, AuthorizationResult, EntityUid, JsonObject
from verdict.policy.snapshot import StoreSnapshot


def slice_roots(request: AuthorizationRequest, store: StoreSnapshot) -> set[EntityUid]:
    """Uids a decision may touch directly; the store adds everything reachable from them."""
    roots = {request.principal, request.action, request.resource, *store.literal_uids}
    roots.update(referenced_uids(request.context))
    for entity in request.extra_entities:
        roots.add(entity_uid(entity))
        roots.update(referenced_uids(entity))
    return roots


def check_extra_entities(
    request: AuthorizationRequest, store: StoreSnapshot, stored: Iterable[EntityUid]
) -> None:
    """Caller-supplied entities must fit the schema and must not shadow stored entities."""
    if not request.extra_entities:
        return
    try:
        cedar.check_entities(request.extra_entities, store.schema)
    except CedarError:
        raise RequestError("entities_json", "does not conform to the store's schema") from None
    supplied = {entity_uid(e): i for i, e in enumerate(request.extra_entities)}
    for uid in stored:
        if uid in supplied:
            raise RequestError(
                f"entities_json[{supplied[uid]}]",
                "names an entity that is already stored; it cannot be replaced per request",
            )


def cedar_request(request: AuthorizationRequest) -> JsonObject:
    """The request document Cedar evaluates; uids as ``{type, id}``, never parsed strings."""
    return {
        "principal": request.principal.to_json(),
        "action": request.action.to_json(),
        "resource": request.resource.to_json(),
        "context": dict(request.context),
    }


def evaluate(
    request: AuthorizationRequest,
    store: StoreSnapshot,
    entities: Iterable[JsonObject],
    entity_version: int = 0,
) -> AuthorizationResult:
    """Evaluate one request with pre-parsed policies and schema; fail closed on any doubt."""
    raw = cedar.is_authorized(
        cedar_request(request), store.policy_set, [*entities, *request.extra_entities], store.schema
    )
    return interpret(raw, store, entity_version)


def evaluate_shared(
    requests: Sequence[AuthorizationRequest],
    store: StoreSnapshot,
    entities: Sequence[JsonObject],
    entity_version: int = 0,
) -> list[AuthorizationResult | VerdictError]:
    """Evaluate requests that share one entity set (and carry no request entities) in one
    Cedar call; each answer is what ``evaluate`` would give for that request alone."""
    assert not any(r.extra_entities for r in requests), "request entities need evaluate()"
    raws = cedar.is_authorized_batch(
        [cedar_request(r) for r in requests], store.policy_set, entities, store.schema
    )
    answers: list[AuthorizationResult | VerdictError] = []
    for raw in raws:
        try:
            answers.append(interpret(raw, store, entity_version))
        except VerdictError as exc:
            answers.append(exc)
    return answers
