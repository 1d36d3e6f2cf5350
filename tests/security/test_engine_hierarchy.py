"""Parent cycles, deep chains and huge closures are refused in Python before Cedar sees them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.stores import entity, write_store
from verdict.app import App, build_app
from verdict.config import Settings
from verdict.engine.authorizer import Authorizer
from verdict.engine.entity_writes import EntityWrites
from verdict.engine.hierarchy import HierarchyProblem, check_graph, graph_of
from verdict.engine.limits import EntityLimits, HierarchyLimits
from verdict.errors import EntityDataError, RequestError
from verdict.model import AuthorizationRequest, Decision, EntityUid
from verdict.policy.holder import PolicyHolder
from verdict.store.entity_file import build_entities
from verdict.store.memory import MemoryEntityStore

Files = dict[str, str | list[Any]]
GROUP_STORE: Files = {
    "p.cedar": '@id("top") permit(principal in G::"top", action, resource);\n',
    "entities.json": [entity("Doc", "d")],
    "store.toml": 'request_entity_types = ["G"]\n',
}


def chain(count: int, prefix: str = "n", *, cycle: bool = False, top: str = "top") -> list[Any]:
    """G::<prefix>0 -> G::<prefix>1 -> ... (the last one's parent is G::top, or n0 if a cycle)."""
    last = f"{prefix}0" if cycle else top
    return [
        entity("G", f"{prefix}{i}", parents=[("G", f"{prefix}{i + 1}" if i + 1 < count else last)])
        for i in range(count)
    ]


def ask(principal: str, *entities: Any) -> AuthorizationRequest:
    return AuthorizationRequest(
        EntityUid("G", principal),
        EntityUid("Action", "read"),
        EntityUid("Doc", "d"),
        extra_entities=tuple(entities),
    )


def app_for(stores: Path, **limits: Any) -> App:
    return build_app(Settings(stores=stores, **limits))


async def refused(app: App, request: AuthorizationRequest) -> RequestError:
    with pytest.raises(RequestError) as info:
        await app.authorizer.authorize(request)
    return info.value


async def test_too_many_inline_entities_are_refused_before_the_store_is_read(
    tmp_path: Path,
) -> None:
    """More than max_request_entities (default 100) inline entities is INVALID_ARGUMENT."""
    write_store(tmp_path, "s", GROUP_STORE)
    error = await refused(app_for(tmp_path), ask("n0", *chain(101)))
    assert (error.field, error.problem) == (
        "entities_json",
        "holds more than 100 entities (the server's limit)",
    )


async def test_the_crashing_inline_cycle_is_refused_even_with_a_raised_count_limit(
    tmp_path: Path,
) -> None:
    """The ~10,000-entity parent cycle that crashes cedarpy is named as a cycle, in Python."""
    write_store(tmp_path, "s", GROUP_STORE)
    app = app_for(tmp_path, max_request_entities=20_000)
    error = await refused(app, ask("n0", *chain(10_000, cycle=True)))
    assert error.field.startswith("entities_json[")
    assert error.problem == "its parents form a cycle back to itself"


async def test_an_inline_chain_deeper_than_the_limit_is_refused(tmp_path: Path) -> None:
    """An inline parent chain longer than max_hierarchy_depth names the entity that breaks it."""
    write_store(tmp_path, "s", GROUP_STORE)
    app = app_for(tmp_path, max_hierarchy_depth=20)
    # Inline parents must be inline too, so each chain ends at an inline root.
    error = await refused(app, ask("n0", *chain(21, top="n21"), entity("G", "n21")))
    assert (error.field, error.problem) == (
        "entities_json[0]",
        "its parent chain is longer than 20",
    )
    result = await app.authorizer.authorize(ask("n0", *chain(20, top="n20"), entity("G", "n20")))
    # Accepted and evaluated: an invented chain reaches no group a policy names.
    assert (result.decision, result.errors) == (Decision.DENY, ())


async def test_inline_entities_cannot_hang_under_a_stored_chain(tmp_path: Path) -> None:
    """An inline entity never takes a stored parent, so stored depth cannot add to inline depth."""
    write_store(
        tmp_path, "s", {**GROUP_STORE, "entities.json": [*chain(15, "s"), entity("Doc", "d")]}
    )
    app = app_for(tmp_path, max_hierarchy_depth=20)
    shallow = [entity("G", "x0", parents=[("G", "x1")]), entity("G", "x1", parents=[("G", "s0")])]
    error = await refused(app, ask("x0", *shallow))
    assert error.field == "entities_json[1].parents[0]"
    deep = chain(6, "x", top="s0")  # x0 would sit 6 + 15 = 21 deep
    assert (await refused(app, ask("x0", *deep))).field == "entities_json[5].parents[0]"


async def test_a_stored_slice_with_too_many_ancestor_pairs_fails_closed(tmp_path: Path) -> None:
    """Stored data whose closure exceeds max_hierarchy_pairs is never handed to Cedar."""
    write_store(tmp_path, "s", GROUP_STORE)
    app = app_for(tmp_path)
    # 150 members of a 90-deep chain: each within depth and ancestor limits, 13,500+ pairs...
    members = [entity("G", f"m{i}", parents=[("G", "n0")]) for i in range(250)]
    graph = build_entities([*chain(90), *members], None)
    holder = PolicyHolder(app.policies.current)
    authorizer = Authorizer(holder, MemoryEntityStore({"s": graph}))
    # ...reached together through one request's context: 250 x 91 pairs > 20,000.
    context = {f"k{i}": {"__entity": {"type": "G", "id": f"m{i}"}} for i in range(250)}
    request = AuthorizationRequest(
        EntityUid("G", "m0"), EntityUid("Action", "read"), EntityUid("Doc", "d"), context
    )
    with pytest.raises(EntityDataError, match="entity-ancestor pairs"):
        await authorizer.authorize(request)
    alone = AuthorizationRequest(
        EntityUid("G", "m0"), EntityUid("Action", "read"), EntityUid("Doc", "d")
    )
    assert (await authorizer.authorize(alone)).decision is Decision.ALLOW


def test_diamonds_are_counted_by_distinct_ancestors() -> None:
    """A lattice with 2**30 parent paths but 60 distinct ancestors is within the limits."""
    entities = []
    for layer in range(30):
        parents = [("G", f"l{layer + 1}a"), ("G", f"l{layer + 1}b")]
        entities += [
            entity("G", f"l{layer}a", parents=parents),
            entity("G", f"l{layer}b", parents=parents),
        ]
    pairs = check_graph(graph_of(entities), HierarchyLimits())
    assert 1860 <= pairs <= HierarchyLimits().max_pairs  # 1860 distinct pairs


def test_checks_are_iterative() -> None:
    """A 30,000-entity chain and cycle (far past any recursion limit) are measured in a loop."""
    long_chain = graph_of(chain(30_000))
    limits = HierarchyLimits(max_depth=10**6, max_ancestors=10**6, max_pairs=10**12)
    with pytest.raises(HierarchyProblem):
        check_graph(long_chain, HierarchyLimits())
    with pytest.raises(HierarchyProblem, match="cycle"):
        check_graph(graph_of(chain(30_000, cycle=True)), limits)


def test_an_entity_with_too_many_ancestors_is_refused() -> None:
    """An entity listing more parents than max_entity_ancestors breaks the limit."""
    wide = entity("G", "w", parents=[("G", f"p{i}") for i in range(201)])
    with pytest.raises(HierarchyProblem, match="more than 200 ancestors"):
        check_graph(graph_of([wide]), HierarchyLimits(), count_pairs=False)


# Writes: the same limits, with the stored ancestors counted.


def writes_for(app: App, **limits: Any) -> EntityWrites:
    return EntityWrites(app.policies, app.entities, EntityLimits(**limits))


async def refused_write(writes: EntityWrites, entities: list[Any]) -> RequestError:
    with pytest.raises(RequestError) as info:
        await writes.put("s", json.dumps(entities))
    return info.value


async def test_the_crashing_cycle_is_refused_as_a_write(tmp_path: Path) -> None:
    """PutEntities with the 10,000-entity parent cycle names an item on the cycle."""
    write_store(tmp_path, "s", GROUP_STORE)
    app = app_for(tmp_path)
    error = await refused_write(app.writes, chain(10_000, cycle=True))
    assert error.field.startswith("entities_json[")
    assert error.problem.endswith("its parents form a cycle back to itself")


async def test_a_chain_grown_write_by_write_is_bounded(tmp_path: Path) -> None:
    """Each write's depth includes its stored ancestors, so a chain cannot grow past the limit."""
    write_store(tmp_path, "s", GROUP_STORE)
    app = app_for(tmp_path, max_hierarchy_depth=100)
    top = chain(60, "a")  # a0 -> ... -> a59 -> G::top: depth 60
    await app.writes.put("s", json.dumps(top))
    below = chain(40, "b", top="a0")  # b0 sits 100 deep: allowed
    await app.writes.put("s", json.dumps(below))
    error = await refused_write(app.writes, [entity("G", "c", parents=[("G", "b0")])])
    assert error.field == "entities_json[0]"
    assert error.problem == 'G::"c": its parent chain is longer than 100'


async def test_a_write_closing_a_cycle_through_stored_entities_is_refused(tmp_path: Path) -> None:
    """A write whose parent's stored ancestors lead back to it is refused, naming it."""
    write_store(tmp_path, "s", GROUP_STORE)
    app = app_for(tmp_path)
    await app.writes.put("s", json.dumps(chain(50, "a", top="z")))
    error = await refused_write(app.writes, [entity("G", "z", parents=[("G", "a0")])])
    assert error.field == "entities_json[0]"
    assert "cycle" in error.problem


async def test_too_many_entities_in_one_write_are_refused(tmp_path: Path) -> None:
    """More than max_write_entities per PutEntities is INVALID_ARGUMENT."""
    write_store(tmp_path, "s", GROUP_STORE)
    app = app_for(tmp_path, max_write_entities=10)
    error = await refused_write(app.writes, [entity("G", f"g{i}") for i in range(11)])
    assert (error.field, error.problem) == ("entities_json", "holds more than 10 entities")
