"""Request (inline) entities: what a caller may assert for one decision, checked before Cedar.

Stored data is authoritative. A caller may describe only entities of the types its store lists
in ``request_entity_types``, never an action, never an entity the store holds or a policy names,
and never one a stored entity of the slice points at (a stored user's missing group would
otherwise be the caller's to define). Their parents are other inline entities of the same
request only: membership in anything else is privilege the caller cannot grant itself. Their
number and hierarchy are bounded too (docs/decisions.md, "Request entities" and "Entity
limits").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from verdict import cedar
from verdict.cedar import CedarError, SchemaHandle
from verdict.cedar_json import entity_references, entity_uid
from verdict.engine.hierarchy import (
    HierarchyProblem,
    check_graph,
    closure_bound,
    graph_of,
    needs_check,
    one_level,
    parents_of,
)
from verdict.engine.limits import EntityLimits
from verdict.errors import EntityDataError, RequestError
from verdict.model import AuthorizationRequest, EntityUid, JsonObject
from verdict.policy.snapshot import StoreSnapshot
from verdict.policy.store_settings import is_action_type
from verdict.store.json_lines import entity_index

FIELD = "entities_json"


def check_before_fetch(
    request: AuthorizationRequest, store: StoreSnapshot, limits: EntityLimits
) -> None:
    """Count, types, parents and the inline hierarchy: everything that needs no stored data
    (the transport has bounded the uids a request names, ``max_request_references``)."""
    entities = request.extra_entities
    if len(entities) > limits.max_request_entities:
        raise RequestError(
            FIELD, f"holds more than {limits.max_request_entities} entities (the server's limit)"
        )
    if not entities:
        return
    for index, entity in enumerate(entities):
        _check_type(entity_uid(entity), store, f"{FIELD}[{index}]")
    _check_parents_inline(entities)
    _check_hierarchy(request, graph_of(entities), limits)


def _check_type(uid: EntityUid, store: StoreSnapshot, field: str) -> None:
    if is_action_type(uid.type):
        raise RequestError(field, "is an action; actions are never accepted per request")
    if uid.type not in store.settings.request_entity_types:
        raise RequestError(
            field,
            "has an entity type this store does not accept per request "
            "(request_entity_types in store.toml)",
        )
    if uid in store.literal_uids:
        # A uid a policy names (``principal in Team::"eng"``) is the store's to define, even
        # when nothing is stored under it: describing it would grant what the policy tests.
        raise RequestError(
            field, "names an entity the store's policies name; only the store may define it"
        )


def _check_parents_inline(entities: Sequence[JsonObject]) -> None:
    """Every parent is another entity of this request. A parent that is stored, named by a
    policy or absent from the store would make the caller a member of a group it does not
    own (an inline Doc under ``Role::"admin"``); chains through inline entities are covered,
    since each link's parent must itself be inline."""
    inline = {entity_uid(e) for e in entities}
    for index, entity in enumerate(entities):
        for position, parent in enumerate(parents_of(entity)):
            if parent not in inline:
                raise RequestError(
                    f"{FIELD}[{index}].parents[{position}]",
                    "must be another entity of this request; "
                    "a request entity cannot join a stored or unknown group",
                )


def check_slice(
    request: AuthorizationRequest,
    store: StoreSnapshot,
    stored: Mapping[EntityUid, JsonObject],
    limits: EntityLimits,
) -> int:
    """Before Cedar sees a slice: inline entities neither replace nor complete stored data,
    the hierarchy of stored and inline entities together is bounded, and inline entities
    fit the schema. Returns a bound of the entity-ancestor pairs Cedar will compute."""
    if request.extra_entities:
        _check_not_stored(request, stored)
    entities = [*stored.values(), *request.extra_entities]
    edges, pairs = closure_bound(entities)
    if needs_check(edges, pairs, limits.hierarchy):
        if one_level(entities, limits.hierarchy):
            pairs = edges  # each entity's ancestors are just its parents
        else:
            pairs = _check_hierarchy(request, graph_of(entities), limits)
    if request.extra_entities:
        try:
            cedar.check_entities(request.extra_entities, store.schema)
        except CedarError:
            raise _nonconforming(request.extra_entities, store.schema) from None
    return pairs


def _nonconforming(entities: Sequence[JsonObject], schema: SchemaHandle | None) -> RequestError:
    """Which inline entity Cedar refuses, its attribute and why, never the value. One more
    evaluation of the same entities (Cedar's detailed reason), on the error path only: asking
    entity by entity would let one request cost a Cedar call per inline entity."""
    problem = cedar.entity_problem(entities, schema)
    if problem is None:  # only the summary was refused: say no more than that
        return RequestError(FIELD, "does not conform to the store's schema")
    index = entity_index(problem.text, list(entities))
    field = FIELD if index is None else f"{FIELD}[{index}]"
    return RequestError(field, problem.data_free())


def _check_not_stored(
    request: AuthorizationRequest, stored: Mapping[EntityUid, JsonObject]
) -> None:
    supplied = {entity_uid(e): i for i, e in enumerate(request.extra_entities)}
    for uid, index in supplied.items():
        if uid in stored:
            raise RequestError(
                f"{FIELD}[{index}]",
                "names an entity that is already stored; it cannot be replaced per request",
            )
    for entity in stored.values():
        for uid in entity_references(entity) & supplied.keys():
            raise RequestError(
                f"{FIELD}[{supplied[uid]}]",
                "names an entity a stored entity refers to; only the store may define it",
            )


def _check_hierarchy(
    request: AuthorizationRequest,
    graph: Mapping[EntityUid, list[EntityUid]],
    limits: EntityLimits,
) -> int:
    try:
        return check_graph(graph, limits.hierarchy)
    except HierarchyProblem as exc:
        for index, entity in enumerate(request.extra_entities):
            if entity_uid(entity) == exc.uid:
                raise RequestError(f"{FIELD}[{index}]", exc.problem) from None
        raise EntityDataError(f"stored entity hierarchy: {exc.problem}") from None
