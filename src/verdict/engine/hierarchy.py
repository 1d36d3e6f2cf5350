"""Check parent graphs in Python, iteratively, before Cedar computes their closure.

Cedar computes every entity's ancestors when it reads entities: quadratic in chain length, and a
long parent cycle crashes cedarpy (stack overflow). So cycles, depth and ancestor counts are
bounded here first, without recursion, in time linear in the graph plus the bounded closure.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

from verdict.cedar_json import entity_uid, parse_uid
from verdict.engine.limits import EntityLimits, HierarchyLimits
from verdict.model import EntityUid, JsonObject
from verdict.store.version_handles import SetShape, Vet

Graph = Mapping[EntityUid, Sequence[EntityUid]]
CYCLE = "its parents form a cycle back to itself"


class HierarchyProblem(Exception):
    """An entity breaks a hierarchy limit; ``problem`` is data-free text for the caller."""

    def __init__(self, uid: EntityUid, problem: str) -> None:
        self.uid = uid
        self.problem = problem
        super().__init__(problem)


def parents_of(entity: JsonObject) -> list[EntityUid]:
    """The parent uids of a shape-checked Cedar JSON entity."""
    return [u for p in entity.get("parents", ()) if (u := parse_uid(p)) is not None]


def graph_of(entities: Iterable[JsonObject]) -> dict[EntityUid, list[EntityUid]]:
    """uid -> parents for shape-checked entities (a later entity with the same uid wins)."""
    return {entity_uid(e): parents_of(e) for e in entities}


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


def check_graph(
    graph: Graph,
    limits: HierarchyLimits,
    *,
    judged: Collection[EntityUid] | None = None,
    count_pairs: bool = True,
) -> int:
    """Raise HierarchyProblem for the first entity of ``judged`` (default: all) that is on a
    cycle, sits too deep, or has too many ancestors; with ``count_pairs`` also for the entity
    at which the closure of the whole graph grows past ``max_pairs``. Returns the pairs
    counted (an upper bound of the closure's size)."""
    order = parents_first(graph, judged)
    cap = max(limits.max_ancestors, limits.max_pairs) + 1
    depth: dict[EntityUid, int] = {}
    # An upper bound of each entity's ancestor count: paths, not distinct ancestors.
    bound: dict[EntityUid, int] = {}
    pairs = 0
    for uid in order:
        parents = graph[uid]
        depth[uid] = max((depth.get(p, 0) + 1 for p in parents), default=0)
        bound[uid] = min(cap, sum(1 + bound.get(p, 0) for p in set(parents)))
        if judged is not None and uid not in judged:
            continue
        if depth[uid] > limits.max_depth:
            raise HierarchyProblem(uid, f"its parent chain is longer than {limits.max_depth}")
        if bound[uid] > limits.max_ancestors or (
            count_pairs and pairs + bound[uid] > limits.max_pairs
        ):
            # Diamonds make the path count overshoot: count the distinct ancestors, capped.
            bound[uid] = count_ancestors(graph, uid, limits.max_ancestors + 1)
        if bound[uid] > limits.max_ancestors:
            raise HierarchyProblem(uid, f"has more than {limits.max_ancestors} ancestors")
        pairs += bound[uid]
        if count_pairs and pairs > limits.max_pairs:
            raise HierarchyProblem(
                uid, f"the entities' hierarchy exceeds {limits.max_pairs} entity-ancestor pairs"
            )
    return pairs


def parents_first(graph: Graph, judged: Collection[EntityUid] | None = None) -> list[EntityUid]:
    """The graph's uids with every parent before its children; HierarchyProblem on a cycle.

    Kahn's algorithm: an entity is ready once all its parents inside the graph are placed.
    Parents outside the graph (not loaded, or missing) have no ancestors of their own here.
    """
    waiting: dict[EntityUid, int] = {}
    children: dict[EntityUid, list[EntityUid]] = {}
    for uid, parents in graph.items():
        inside = {p for p in parents if p in graph}
        waiting[uid] = len(inside)
        for parent in inside:
            children.setdefault(parent, []).append(uid)
    ready = [uid for uid, count in waiting.items() if count == 0]
    order: list[EntityUid] = []
    while ready:
        uid = ready.pop()
        order.append(uid)
        for child in children.get(uid, ()):
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    if len(order) < len(graph):
        raise HierarchyProblem(_on_cycle(graph, waiting, judged), CYCLE)
    return order


def count_ancestors(graph: Graph, uid: EntityUid, cap: int) -> int:
    """Distinct ancestors of ``uid`` (parents outside the graph count), at most ``cap``."""
    seen: set[EntityUid] = set()
    stack = list(graph.get(uid, ()))
    while stack and len(seen) < cap:
        parent = stack.pop()
        if parent not in seen:
            seen.add(parent)
            stack.extend(graph.get(parent, ()))
    return len(seen)


def _on_cycle(
    graph: Graph, waiting: Mapping[EntityUid, int], judged: Collection[EntityUid] | None
) -> EntityUid:
    """An entity on a cycle, preferably one of ``judged``.

    Every entity Kahn could not place has a parent it could not place either, so walking up
    from one of them must come back to an entity already on the walk.
    """
    uid = next(u for u, count in waiting.items() if count > 0)
    position: dict[EntityUid, int] = {}
    walk: list[EntityUid] = []
    while uid not in position:
        position[uid] = len(walk)
        walk.append(uid)
        uid = next(p for p in graph[uid] if waiting.get(p, 0) > 0)
    cycle = walk[position[uid] :]
    preferred = [u for u in cycle if judged is None or u in judged]
    return (preferred or cycle)[0]


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
