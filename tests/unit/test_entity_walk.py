"""One walk of an entity (``check_entity``) checks it and finds its references exactly as the two
walks it replaces (``check_entity_shape``, then ``entity_references``): the same uids, the same
refusals, on generated entities that mix every form Cedar may read as a reference."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verdict.cedar_json import check_entity, check_entity_shape, entity_references
from verdict.errors import RequestError

# Type names Cedar accepts and spellings it does not (a reference only with a valid one).
TYPES = st.sampled_from(["Loan", "Lending::Loan", "User", "9x", "a::", "in", "A B", ""])
IDS = st.sampled_from(["", "l1", "x y", "é", "\ud800", "Loan"])
KEYS = st.sampled_from(["type", "id", "a", "b", "owner", "__entity", "__extn"])


def uid_dict() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({"type": TYPES, "id": IDS})


def values(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Cedar JSON values with escapes (well-formed or not), uid-like records and pairs."""
    escape = st.one_of(
        st.builds(lambda u: {"__entity": u}, uid_dict()),
        st.builds(lambda u, k: {"__entity": u, k: 1}, uid_dict(), KEYS),
        st.builds(lambda a: {"__extn": {"fn": "ip", "arg": a}}, leaves),
        st.builds(lambda a: {"__extn": {"fn": "f", "args": a}}, st.lists(leaves, max_size=2)),
        st.just({"__expr": "1"}),
    )
    uid_like = st.builds(
        lambda u, extra: {**u, **extra}, uid_dict(), st.dictionaries(KEYS, leaves, max_size=2)
    )
    pair = st.lists(st.one_of(TYPES, IDS), min_size=2, max_size=2)
    return st.recursive(
        st.one_of(leaves, escape, uid_like, pair),
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(KEYS, inner, max_size=3)
        ),
        max_leaves=8,
    )


LEAVES = st.one_of(st.integers(-3, 3), st.booleans(), TYPES, IDS)
VALUES = values(LEAVES)


@st.composite
def entities(draw: st.DrawFn) -> dict[str, Any]:
    entity: dict[str, Any] = {"uid": draw(st.one_of(uid_dict(), VALUES))}
    for key in ("attrs", "tags"):
        if draw(st.booleans()):
            entity[key] = draw(
                st.one_of(st.dictionaries(KEYS, values(LEAVES), max_size=4), values(LEAVES))
            )
    if draw(st.booleans()):
        parents = st.one_of(uid_dict(), st.builds(lambda u: {"__entity": u}, uid_dict()), LEAVES)
        entity["parents"] = draw(st.lists(parents, max_size=3))
    if draw(st.integers(0, 9)) == 0:
        entity["extra"] = 1
    return entity


def outcome(function: Any, entity: dict[str, Any]) -> Any:
    """What ``function`` returns for ``entity``, or the refusal it raises (field, problem)."""
    try:
        return function(entity)
    except RequestError as exc:
        return ("refused", exc.field, str(exc))


@pytest.mark.timeout(240)  # ~25 s here; generous for a slower CI machine
@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entities())
def test_one_walk_checks_and_references_like_the_two(entity: dict[str, Any]) -> None:
    kept = copy.deepcopy(entity)
    merged = outcome(lambda e: check_entity(e, "entities[0]"), entity)
    shape = outcome(lambda e: check_entity_shape(e, "entities[0]"), entity)
    if isinstance(shape, tuple) and shape[0] == "refused":
        assert merged == shape
    else:
        assert merged == (shape, entity_references(entity))
    assert entity == kept  # neither walk changes the entity


def test_an_entity_of_every_form_has_every_reference() -> None:
    """A hand-written entity: each form found once, none invented."""
    entity = {
        "uid": {"type": "Loan", "id": "l1"},
        "attrs": {
            "owner": {"__entity": {"type": "User", "id": "u1"}},
            "co": {"type": "User", "id": "u2", "note": "x"},
            "pair": ["User", "u3"],
            "ip": {"__extn": {"fn": "ip", "arg": "10.0.0.1"}},
            "deep": [{"x": [{"__entity": {"type": "User", "id": "u4"}}]}],
            "text": "User",
        },
        "parents": [{"type": "Partner", "id": "p1"}, {"__entity": {"type": "Partner", "id": "p2"}}],
    }
    uid, refs = check_entity(entity, "e")
    assert str(uid) == 'Loan::"l1"'
    assert sorted(str(r) for r in refs) == [
        'Partner::"p1"',
        'Partner::"p2"',
        'User::"u1"',
        'User::"u2"',
        'User::"u3"',
        'User::"u4"',
    ]
    assert refs == entity_references(entity)
