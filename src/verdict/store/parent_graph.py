"""Parent graphs checked in Python, iteratively, before Cedar is handed them to close.

Cedar computes every entity's ancestors when it reads entities: quadratic in chain length, and a
long parent cycle crashes cedarpy (SIGSEGV: a 10,000-entity cycle, or a 30,000-entity chain).
So cycles, depth and ancestor counts are bounded here first, without recursion, in time linear
in the graph plus the bounded closure: for request entities and writes (the engine) and for
whole entity files (the stores and `verdict entities load`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from verdict.cedar_json import entity_uid, parse_uid
from verdict.model import EntityUid, JsonObject

if TYPE_CHECKING:  # the settings module costs 0.1 s to import; entities load needs no more
    from verdict.config import Settings

Graph = Mapping[EntityUid, Sequence[EntityUid]]
CYCLE = "its parents form a cycle back to itself"


@dataclass(frozen=True)
class HierarchyLimits:
    """Bounds on parent graphs; Cedar's ancestor computation is quadratic in chain length."""

    # Longest parent chain, in edges (an entity without parents has depth 0).
    max_depth: int = 100
    # Distinct ancestors of any one entity.
    max_ancestors: int = 200
    # Entity-ancestor pairs in one evaluation: the size of the closure Cedar computes.
    max_pairs: int = 20_000

    @classmethod
    def of(cls, settings: Settings) -> HierarchyLimits:
        """The bounds the settings give (``VERDICT_MAX_HIERARCHY_*``)."""
        return cls(
            max_depth=settings.max_hierarchy_depth,
            max_ancestors=settings.max_entity_ancestors,
            max_pairs=settings.max_hierarchy_pairs,
        )


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
