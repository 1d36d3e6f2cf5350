"""Differential test, against Cedar itself: evaluating a request against only the policies the
index selects gives exactly the full set's decision, determining policies and errors, and a
slice rooted only at the uids policies read (not all they name) answers exactly as the old slice
rooted at every named uid, and as all entities.

Random policy sets (static and template-linked, permits and forbids, every kind of scope,
conditions that error), random hierarchies with missing entities, random requests and batches;
with and without a schema (whose action groups then decide ``action in``). The CI profile runs
1,200 + 800 examples, derandomized; VERDICT_INDEX_EXAMPLES scales both.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.security.policy_gen import SCHEMA, PolicySetSpec, hierarchies, policy_sets, requests
from verdict import cedar
from verdict.cedar import RawDecision, SchemaHandle
from verdict.cedar_json import entity_references, entity_uid, referenced_uids
from verdict.engine.evaluate import slice_roots
from verdict.engine.selection import parent_map, selected_policies
from verdict.model import AuthorizationRequest, EntityUid, JsonObject
from verdict.policy.index import (
    PolicyIndex,
    action_parents,
    link_entry,
    static_entry,
    template_part,
)
from verdict.policy.policy_sets import SelectionCacheLimits
from verdict.policy.references import literal_uids, read_uids
from verdict.policy.snapshot import (
    ErrorMode,
    PolicyInfo,
    StoreSettings,
    StoreSnapshot,
    ValidationMode,
)
from verdict.store.base import StoredEntity
from verdict.store.graph import collect_slice

EXAMPLES = int(os.environ.get("VERDICT_INDEX_EXAMPLES", "1200"))
TYPED_SCHEMA = cedar.parse_schema(SCHEMA, is_json=False)


def profile(examples: int) -> settings:
    """The hypothesis settings of one test."""
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=os.environ.get("VERDICT_DIFF_RANDOM") != "1",
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def snapshot(spec: PolicySetSpec, schema: SchemaHandle | None) -> StoreSnapshot:
    """A store of ``spec``'s policies, built the way the loader builds one (links included)."""
    entries = [static_entry(pid, est) for pid, est in spec.static.items()]
    entries += [link_entry(link, spec.templates) for link in spec.links]
    index = PolicyIndex(
        entries,
        {tid: template_part(tid, est) for tid, est in spec.templates.items()},
        action_parents(schema),
        SelectionCacheLimits(max_sets=8),
    )
    effects = {pid: str(est["effect"]) for pid, est in {**spec.static, **spec.templates}.items()}
    effects.update({link["newId"]: effects[link["templateId"]] for link in spec.links})
    sources = [*spec.static.values(), *spec.templates.values(), *spec.links]
    return StoreSnapshot(
        store_id="s",
        root=Path("."),
        policies={
            pid: PolicyInfo(pid, "p.cedar", 1, effect, False) for pid, effect in effects.items()
        },
        index=index,
        schema=schema,
        settings=StoreSettings(ValidationMode.OFF, ErrorMode.SKIP),
        version="v",
        literal_uids=frozenset(u for est in sources for u in literal_uids(est)),
        read_uids=frozenset(u for est in sources for u in read_uids(est)),
    )


def answer(raw: RawDecision) -> tuple[Any, ...]:
    """Everything Cedar said: decision, determining policies, errors (ids, categories and
    texts), and why there was no decision."""
    errors = sorted((e.policy_id, e.category, e.text) for e in raw.errors)
    return raw.decision, sorted(raw.reasons), errors, raw.no_decision


def domain(request: JsonObject) -> AuthorizationRequest:
    """The engine's form of a Cedar request."""
    uid = {
        k: EntityUid(request[k]["type"], request[k]["id"])
        for k in ("principal", "action", "resource")
    }
    return AuthorizationRequest(
        uid["principal"], uid["action"], uid["resource"], request["context"], "s"
    )


def old_roots(request: AuthorizationRequest, store: StoreSnapshot) -> set[EntityUid]:
    """The slice roots before dead weight was dropped: every uid a policy names."""
    roots = {request.principal, request.action, request.resource, *store.literal_uids}
    return roots | set(referenced_uids(request.context))


def check(
    spec: PolicySetSpec,
    graph: list[JsonObject],
    batch: list[JsonObject],
    schema: SchemaHandle | None,
) -> None:
    """The index and the new slices agree with the full set and the old slices, one by one and
    as a batch sharing one Cedar call."""
    store = snapshot(spec, schema)
    full = cedar.build_policy_set(spec.static, spec.templates, spec.links)
    stored = {entity_uid(e): StoredEntity(entity_uid(e), e, entity_references(e)) for e in graph}
    for request in batch:
        item = domain(request)
        whole = answer(cedar.is_authorized(request, full, graph, schema))
        indexed = selected_policies(store, [item], parent_map(graph))
        assert answer(cedar.is_authorized(request, indexed, graph, schema)) == whole
        old = list(collect_slice(old_roots(item, store), stored.get).entities.values())
        new = list(collect_slice(slice_roots(item, store), stored.get).entities.values())
        assert answer(cedar.is_authorized(request, full, old, schema)) == whole
        assert answer(cedar.is_authorized(request, full, new, schema)) == whole
        on_slice = selected_policies(store, [item], parent_map(new))
        assert answer(cedar.is_authorized(request, on_slice, new, schema)) == whole
    if spec.static:
        # One policy alone: others naming the same uids cannot mask a uid left out of its slice.
        first = next(iter(spec.static))
        check_slices(
            PolicySetSpec({first: spec.static[first]}, {}, []), stored, graph, batch, schema
        )
    shared = selected_policies(store, [domain(r) for r in batch], parent_map(graph))
    together = cedar.is_authorized_batch(batch, shared, graph, schema)
    alone = cedar.is_authorized_batch(batch, full, graph, schema)
    assert [answer(r) for r in together] == [answer(r) for r in alone]


def check_slices(
    spec: PolicySetSpec,
    stored: dict[EntityUid, StoredEntity],
    graph: list[JsonObject],
    batch: list[JsonObject],
    schema: SchemaHandle | None,
) -> None:
    """The new slices of ``spec``'s store answer as all entities do."""
    store = snapshot(spec, schema)
    full = cedar.build_policy_set(spec.static, spec.templates, spec.links)
    for request in batch:
        whole = answer(cedar.is_authorized(request, full, graph, schema))
        new = collect_slice(slice_roots(domain(request), store), stored.get).entities.values()
        assert answer(cedar.is_authorized(request, full, list(new), schema)) == whole


@pytest.mark.timeout(300)  # 15-29 s in CI runs: the default 60 s was two slow hours away
@profile(EXAMPLES)
@given(
    spec=policy_sets(),
    graph=hierarchies(typed=False),
    batch=st.lists(requests(typed=False), min_size=1, max_size=3),
)
def test_index_and_slices_match_cedar_without_schema(
    spec: PolicySetSpec, graph: list[JsonObject], batch: list[JsonObject]
) -> None:
    """Without a schema (action groups from entity data), indexed evaluation and dead-weight-
    free slices answer exactly as the full policy set on the old slices and on all entities."""
    check(spec, graph, batch, None)


@profile(EXAMPLES * 2 // 3)
@given(
    spec=policy_sets(),
    graph=hierarchies(typed=True),
    batch=st.lists(requests(typed=True), min_size=1, max_size=3),
)
def test_index_and_slices_match_cedar_with_schema(
    spec: PolicySetSpec, graph: list[JsonObject], batch: list[JsonObject]
) -> None:
    """With a schema (action groups from it), indexed evaluation and dead-weight-free slices
    answer exactly as the full policy set on the old slices and on all entities."""
    check(spec, graph, batch, TYPED_SCHEMA)
