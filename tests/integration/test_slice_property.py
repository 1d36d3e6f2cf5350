"""Property: a decision made on the entity slice equals Cedar's answer with every entity loaded,
on the memory store and on the Redis store alike (random graphs, random requests)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.redis_support import RedisProcess
from tests.stores import write_store
from verdict import cedar
from verdict.app import build_app
from verdict.config import Settings
from verdict.engine.authorizer import Authorizer
from verdict.engine.evaluate import cedar_request
from verdict.engine.outcome import interpret
from verdict.model import AuthorizationRequest, EntityUid, JsonObject
from verdict.store.entity_file import build_entities
from verdict.store.memory import MemoryEntityStore
from verdict.store.redis_store import RedisEntityStore

POLICIES = """
@id("member") permit(principal in Group::"g0", action, resource);
@id("owner-chain") permit(principal, action, resource)
  when { resource has owner && resource.owner has manager && resource.owner.manager == principal };
@id("delegate") permit(principal, action, resource)
  when { context has delegate && context.delegate has trusted && context.delegate.trusted };
@id("blocked") forbid(principal in Group::"g3", action, resource);
@id("flagged") forbid(principal, action, resource) when { principal has flag && principal.flag };
"""
# "skip" (exact Cedar semantics) needs a schema and strict validation.
SCHEMA = """
entity Group in [Group];
entity User in [Group] = { manager?: User, flag?: Bool, trusted?: Bool };
entity Doc = { owner?: User };
action view appliesTo { principal: [User], resource: [Doc], context: { delegate?: User } };
"""
USERS = [f"u{i}" for i in range(6)]
GROUPS = [f"g{i}" for i in range(5)]
DOCS = [f"d{i}" for i in range(4)]


def uid(type_: str, id_: str) -> dict[str, str]:
    return {"type": type_, "id": id_}


@st.composite
def graphs(draw: st.DrawFn) -> list[JsonObject]:
    """Random users, an acyclic group hierarchy, and documents owned by users."""
    entities: list[JsonObject] = []
    for index, group in enumerate(GROUPS):  # a group's parents have higher numbers: no cycles
        parents = draw(st.lists(st.sampled_from(GROUPS[index + 1 :] or [group]), max_size=2))
        entities.append(
            {
                "uid": uid("Group", group),
                "attrs": {},
                "parents": [uid("Group", p) for p in set(parents) if p != group],
            }
        )
    for user in USERS:
        attrs: dict[str, Any] = {}
        if draw(st.booleans()):
            attrs["manager"] = {"__entity": uid("User", draw(st.sampled_from(USERS)))}
        if draw(st.booleans()):
            attrs["flag"] = draw(st.booleans())
        if draw(st.booleans()):
            attrs["trusted"] = draw(st.booleans())
        groups = draw(st.lists(st.sampled_from(GROUPS), max_size=2, unique=True))
        entities.append(
            {"uid": uid("User", user), "attrs": attrs, "parents": [uid("Group", g) for g in groups]}
        )
    for doc in DOCS:
        attrs = {}
        if draw(st.booleans()):
            attrs["owner"] = {"__entity": uid("User", draw(st.sampled_from([*USERS, "ghost"])))}
        entities.append({"uid": uid("Doc", doc), "attrs": attrs, "parents": []})
    dropped = draw(st.lists(st.sampled_from(USERS), max_size=2, unique=True))  # missing entities
    return [e for e in entities if e["uid"]["id"] not in dropped]


@st.composite
def requests(draw: st.DrawFn) -> AuthorizationRequest:
    context: dict[str, Any] = {}
    if draw(st.booleans()):
        context["delegate"] = {"__entity": uid("User", draw(st.sampled_from(USERS)))}
    return AuthorizationRequest(
        EntityUid("User", draw(st.sampled_from(USERS))),
        EntityUid("Action", "view"),
        EntityUid("Doc", draw(st.sampled_from(DOCS))),
        context,
        "s",
    )


def test_slices_decide_like_the_whole_entity_set(tmp_path: Path, redis: RedisProcess) -> None:
    """For random graphs and requests, memory and Redis slices decide exactly as Cedar does
    with all entities (same decision, determining and erroring policies), and batches answer
    exactly as single requests."""
    files = {"p.cedar": POLICIES, "schema.cedarschema": SCHEMA}
    write_store(tmp_path, "s", {**files, "store.toml": 'on_evaluation_error = "skip"'})
    memory = build_app(Settings(stores=tmp_path))
    on_redis = build_app(Settings(stores=tmp_path, redis_url=redis.url))
    redis_store = on_redis.entities
    assert isinstance(redis_store, RedisEntityStore)
    store = memory.policies.current.resolve("s")
    loop = asyncio.new_event_loop()

    @settings(
        max_examples=60,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(graph=graphs(), batch=st.lists(requests(), min_size=1, max_size=5))
    def check(graph: list[JsonObject], batch: list[AuthorizationRequest]) -> None:
        entities = build_entities(graph, store.schema)
        in_memory = Authorizer(memory.policies, MemoryEntityStore({"s": entities}))
        redis.cli("FLUSHALL")
        loop.run_until_complete(redis_store.put("s", list(entities.values())))
        redis_store.cache.subscribed()  # no other writer: trust (and empty) the local cache
        for request in batch:
            whole = interpret(
                cedar.is_authorized(cedar_request(request), store.policy_set, graph, store.schema),
                store,
            )
            # Memory, Redis read through (miss), memory, Redis from the local cache (hit).
            for index, authorizer in enumerate((in_memory, on_redis.authorizer) * 2):
                if index == 3:
                    # No other writer: settle the read, as the listener's next pong would.
                    redis_store.cache.heard(time.monotonic())
                sliced = loop.run_until_complete(authorizer.authorize(request))
                assert sliced.decision == whole.decision
                assert set(sliced.determining_policies) == set(whole.determining_policies)
                assert {e.policy_id for e in sliced.errors} == {e.policy_id for e in whole.errors}
        # A batch shares one Cedar call over the union of slices: same answers as one by one.
        for authorizer in (in_memory, on_redis.authorizer):
            together = loop.run_until_complete(authorizer.authorize_batch(list(batch)))
            alone = [loop.run_until_complete(authorizer.authorize(r)) for r in batch]
            assert together == alone

    try:
        check()
    finally:
        loop.run_until_complete(redis_store.close())
        loop.close()
