"""Judge entity sets against the hierarchy limits: slices, request entities, whole store versions.

The graph walks themselves live in ``verdict.store.parent_graph`` (the stores check whole entity
files with them too); they are re-exported here for the engine's callers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from verdict.engine.limits import EntityLimits, HierarchyLimits
from verdict.model import JsonObject
from verdict.store.parent_graph import (
    CYCLE,
    Graph,
    HierarchyProblem,
    check_graph,
    count_ancestors,
    graph_of,
    parents_first,
    parents_of,
)
from verdict.store.version_handles import SetShape, Vet

__all__ = [
    "CYCLE",
    "Graph",
    "HierarchyProblem",
    "check_graph",
    "closure_bound",
    "count_ancestors",
    "entity_set_vet",
    "graph_of",
    "needs_check",
    "one_level",
    "parents_first",
    "parents_of",
    "whole_set_shape",
]


def closure_bound(entities: Iterable[JsonObject]) -> tuple[int, int]:
    """(parent edges, an upper bound of the entity-ancestor pairs), by counting edges only.

    An entity has at most as many ancestors as there are edges, and only entities with
    parents have any; the usual small slice is measured in a few microseconds.
    """
    edges = children = 0
    for entity in entities:
        count = len(entity.get("parents", ()))
        if count:
            edges += count
            children += 1
    return edges, children * edges


def needs_check(edges: int, pairs: int, limits: HierarchyLimits) -> bool:
    """Whether entities of this ``closure_bound`` might break a limit (depth and ancestors are
    at most the number of edges). Cycles short enough to pass are reported by Cedar, safely."""
    return edges > min(limits.max_depth, limits.max_ancestors) or pairs > limits.max_pairs


def one_level(entities: Iterable[JsonObject], limits: HierarchyLimits) -> bool:
    """True when no entity's parent has parents of its own here (depth at most 1) and the
    parents fit the limits: the common "members of groups" slice, told apart in one pass with
    plain tuple keys instead of a full graph check."""
    entities = list(entities)
    children = {_key(e["uid"]) for e in entities if e.get("parents")}
    edges = 0
    for entity in entities:
        parents = entity.get("parents") or ()
        if len(parents) > limits.max_ancestors or any(_key(p) in children for p in parents):
            return False
        edges += len(parents)
    return edges <= limits.max_pairs


def _key(value: JsonObject) -> tuple[str, str]:
    """A shape-checked uid (``{"type","id"}`` or ``{"__entity": ...}``) as a plain tuple."""
    inner = value.get("__entity", value)
    return inner["type"], inner["id"]


def whole_set_shape(entities: Sequence[JsonObject], limits: HierarchyLimits) -> SetShape:
    """Judge a store's whole entity set once (per version), for the memory store's handle.

    REFUSED when some entity is on a cycle, too deep or has too many ancestors (Cedar must
    not close such a graph; decisions walk their slice and refuse what they reach of it).
    BOUNDED when no slice of it can break a hierarchy limit: a slice holds, with each entity,
    all of its stored ancestors, so its depths and ancestor counts are the whole set's and
    its pair count (each entity's path-count bound, or its exact count past max_ancestors, as
    ``check_graph`` computes it) is at most the whole set's.
    """
    edges, pairs = closure_bound(entities)
    if not needs_check(edges, pairs, limits) or one_level(entities, limits):
        return SetShape.BOUNDED
    try:
        pairs = check_graph(graph_of(entities), limits, count_pairs=False)
    except HierarchyProblem:
        return SetShape.REFUSED
    return SetShape.BOUNDED if pairs <= limits.max_pairs else SetShape.UNBOUNDED


def entity_set_vet(limits: EntityLimits) -> Vet:
    """``whole_set_shape`` under ``limits``, for the memory store to call on each version."""

    def vet(entities: Sequence[JsonObject]) -> SetShape:
        return whole_set_shape(entities, limits.hierarchy)

    return vet
