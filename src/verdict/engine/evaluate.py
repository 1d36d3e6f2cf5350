"""The pure, synchronous core of a decision: roots of a slice, and evaluation of one request."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from verdict import cedar
from verdict.cedar import EntitiesHandle
from verdict.cedar_json import entity_uid, referenced_uids
from verdict.engine.limits import DEFAULT_LIMITS, EntityLimits
from verdict.engine.outcome import interpret
from verdict.engine.request_entities import check_before_fetch, check_slice
from verdict.engine.selection import ParentMap, parent_map, selected_policies
from verdict.errors import InternalError, VerdictError
from verdict.model import AuthorizationRequest, AuthorizationResult, EntityUid, JsonObject
from verdict.policy.snapshot import StoreSnapshot


def slice_roots(request: AuthorizationRequest, store: StoreSnapshot) -> set[EntityUid]:
    """Uids a decision may touch directly; the store adds everything reachable from them.
    Of the uids policies name, only those whose data a condition reads (store.read_uids)."""
    roots = {request.principal, request.action, request.resource, *store.read_uids}
    roots.update(referenced_uids(request.context))
    for entity in request.extra_entities:
        roots.add(entity_uid(entity))
        roots.update(referenced_uids(entity))
    return roots


def check_extra_entities(
    request: AuthorizationRequest,
    store: StoreSnapshot,
    stored: Mapping[EntityUid, JsonObject],
    limits: EntityLimits = DEFAULT_LIMITS,
) -> None:
    """Every check of request entities and the slice's hierarchy (see request_entities), for
    callers that hold the slice already; the Authorizer runs the two halves around its read."""
    check_before_fetch(request, store, limits)
    check_slice(request, store, stored, limits)


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
    entities: Iterable[JsonObject] | EntitiesHandle,
    entity_version: int = 0,
    parents: ParentMap | None = None,
) -> AuthorizationResult:
    """Evaluate one request against the policies whose scope can match it; fail closed on any
    doubt. ``entities`` is the stored slice, or a parsed handle of it (only without request
    entities); with a handle, ``parents`` gives the ancestry the policy index selects by."""
    given = _with_request(entities, request)
    if parents is None:
        if isinstance(given, EntitiesHandle):
            raise InternalError  # a caller's bug: a handle needs the parents of its slice
        parents = parent_map(given)
    elif request.extra_entities:
        parents = {**parents, **parent_map(request.extra_entities)}
    policies = selected_policies(store, [request], parents)
    raw = cedar.is_authorized(cedar_request(request), policies, given, store.schema)
    return interpret(raw, store, entity_version, request)


def evaluate_shared(
    requests: Sequence[AuthorizationRequest],
    store: StoreSnapshot,
    entities: Sequence[JsonObject] | EntitiesHandle,
    entity_version: int = 0,
    parents: ParentMap | None = None,
) -> list[AuthorizationResult | VerdictError]:
    """Evaluate requests that share one entity set (and carry no request entities) in one
    Cedar call per policy selection; each answer is what ``evaluate`` would give for that
    request alone."""
    assert not any(r.extra_entities for r in requests), "request entities need evaluate()"
    if parents is None:
        if isinstance(entities, EntitiesHandle):
            raise InternalError
        parents = parent_map(entities)
    groups = _policy_groups(requests, store, parents, isinstance(entities, EntitiesHandle))
    answers: list[AuthorizationResult | VerdictError | None] = [None] * len(requests)
    for key, numbers in groups.items():
        raws = cedar.is_authorized_batch(
            [cedar_request(requests[n]) for n in numbers],
            store.index.policy_set(key),
            entities,
            store.schema,
        )
        for number, raw in zip(numbers, raws, strict=True):
            try:
                answers[number] = interpret(raw, store, entity_version, requests[number])
            except VerdictError as exc:
                answers[number] = exc
    return [a if a is not None else InternalError() for a in answers]


def _policy_groups(
    requests: Sequence[AuthorizationRequest],
    store: StoreSnapshot,
    parents: ParentMap,
    parsed: bool,
) -> dict[tuple[int, ...], list[int]]:
    """Which requests share a Cedar call, by the policies selected for it. Cedar evaluates
    every policy of the set it is given for every request, so over ``parsed`` entities (a
    handle, shared as is) each request gets the set its own scopes select and a batch of
    different requests costs what each costs alone, not the union of their policies. A list
    of entities is parsed again by each call: one call, with the union of the selections."""
    if not parsed:
        triples = [(r.principal, r.action, r.resource) for r in requests]
        return {store.index.select(triples, parents): list(range(len(requests)))}
    groups: dict[tuple[int, ...], list[int]] = {}
    for number, request in enumerate(requests):
        key = store.index.select([(request.principal, request.action, request.resource)], parents)
        groups.setdefault(key, []).append(number)
    return groups


def _with_request(
    entities: Iterable[JsonObject] | EntitiesHandle, request: AuthorizationRequest
) -> cedar.Entities:
    if isinstance(entities, EntitiesHandle):
        if request.extra_entities:  # a caller's bug; never evaluate without them
            raise InternalError
        return entities
    return [*entities, *request.extra_entities]
