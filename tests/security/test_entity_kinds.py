"""Entities of one kind (store/entity_kinds.py) are accepted or refused by Cedar together.

A bulk load asks Cedar about one entity of each kind and takes the answer for all of them, so
a key that blanked a value Cedar looks at would let an entity Cedar refuses into Redis. Each
generated entity is checked by Cedar beside a twin whose blanked values (ids, String and Long
attributes, reference ids) were drawn again; the two must have one key and one answer, with
the schema and without one. The values come from pools full of near misses: strings an
``ipaddr``, ``decimal`` or ``datetime`` attribute reads (or refuses), enumerated ids and ids
outside the enumeration, integers at Bool positions, references of the wrong type.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import cedarpy
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from verdict import cedar
from verdict.cedar_json import check_entity, parse_uid
from verdict.errors import RequestError
from verdict.schema_shape import parse_shape
from verdict.store.entity_kinds import EntityKinds

SCHEMA_TEXT = """
namespace Bank {
  entity Role enum ["admin", "viewer"];
  entity Group;
  type Note = { text: String, level?: Long };
  entity User in [Group, Role] = {
    name: String,
    age: Long,
    active: Bool,
    boss?: User,
    role?: Role,
    ip?: ipaddr,
    amount?: decimal,
    when?: datetime,
    wait?: duration,
    labels?: Set<String>,
    note?: Note,
    scores?: Set<Long>,
  };
  entity Account, Ledger in [Group] = { owner: User, balance: Long, code: String };
  action view appliesTo { principal: User, resource: [Account, Ledger] };
}
"""
SCHEMA = cedar.parse_schema(SCHEMA_TEXT, is_json=False)
SHAPE = parse_shape(cedar.schema_text(SCHEMA))
TYPES = ["Bank::User", "Bank::Group", "Bank::Role", "Bank::Account", "Bank::Ledger", "Other"]
IDS = st.sampled_from(["admin", "viewer", "x", "", "Admin", "ü", 'q"uote', "a\\b"])
STRINGS = st.sampled_from(
    [
        "",
        "x",
        "10.0.0.1",
        "10.0.0.0/8",
        "::1",
        "1.5",
        "1.23456",
        "-0.5",
        "2024-01-01",
        "2024-01-01T10:00:00Z",
        "1h30m",
        "-2d",
        "garbage",
        "ü",
        "admin",
    ]
)
INTS = st.sampled_from([0, 1, -1, 7, 2**63 - 1, -(2**63)])


def uid(type_: str, id_: str, wrapped: bool = False) -> dict[str, Any]:
    plain = {"type": type_, "id": id_}
    return {"__entity": plain} if wrapped else plain


def values(depth: int = 0) -> st.SearchStrategy[Any]:
    """Cedar JSON values: scalars, references, extension escapes, and (shallow) records/sets."""
    scalars = st.one_of(
        STRINGS,
        INTS,
        st.booleans(),
        st.builds(lambda t, i: {"__entity": uid(t, i)}, st.sampled_from(TYPES), IDS),
        st.builds(
            lambda fn, arg: {"__extn": {"fn": fn, "arg": arg}},
            st.sampled_from(["ip", "decimal", "datetime", "duration"]),
            STRINGS,
        ),
        st.builds(lambda t, i: {"type": t, "id": i}, st.sampled_from(TYPES), IDS),
    )
    if depth >= 1:
        return scalars
    return st.one_of(
        scalars,
        st.lists(scalars, max_size=3),
        st.dictionaries(st.sampled_from(["text", "level", "other"]), values(depth + 1), max_size=3),
    )


ATTRIBUTES = [
    "name",
    "age",
    "active",
    "boss",
    "role",
    "ip",
    "amount",
    "when",
    "wait",
    "labels",
    "note",
    "scores",
    "owner",
    "balance",
    "code",
    "unknown",
]


EXTENSION_STRINGS = {
    "ip": ["10.0.0.1", "::1", "10.0.0.0/8", "garbage", "1.5"],
    "decimal": ["1.5", "1.23456", "-0.5", "1.234567", "garbage"],
    "datetime": ["2024-01-01", "2024-01-01T10:00:00Z", "2024-13-01", "garbage"],
    "duration": ["1h30m", "-2d", "1x", "garbage"],
}


def extension(fn: str) -> st.SearchStrategy[Any]:
    """A value for an extension attribute: a bare string, or either escape form."""
    arg = st.sampled_from(EXTENSION_STRINGS[fn])
    return st.one_of(
        arg,
        st.builds(lambda a: {"__extn": {"fn": fn, "arg": a}}, arg),
        st.builds(lambda a: {"fn": fn, "arg": a}, arg),
    )


def ref(type_: str, ids: st.SearchStrategy[str] = IDS) -> st.SearchStrategy[Any]:
    return st.builds(lambda i: {"__entity": uid(type_, i)}, ids)


ROLE_IDS = st.sampled_from(["admin", "viewer", "boss"])
# Each declared attribute: (required, a value of its declared type, mostly).
DECLARED: dict[str, dict[str, tuple[bool, st.SearchStrategy[Any]]]] = {
    "Bank::User": {
        "name": (True, STRINGS),
        "age": (True, INTS),
        "active": (True, st.booleans()),
        "boss": (False, ref("Bank::User")),
        "role": (False, ref("Bank::Role", ROLE_IDS)),
        "ip": (False, extension("ip")),
        "amount": (False, extension("decimal")),
        "when": (False, extension("datetime")),
        "wait": (False, extension("duration")),
        "labels": (False, st.lists(STRINGS, max_size=3)),
        "note": (
            False,
            st.fixed_dictionaries({"text": STRINGS}, optional={"level": INTS}),
        ),
        "scores": (False, st.lists(INTS, max_size=3)),
    },
    "Bank::Account": {
        "owner": (True, ref("Bank::User")),
        "balance": (True, INTS),
        "code": (True, STRINGS),
    },
}
DECLARED["Bank::Ledger"] = DECLARED["Bank::Account"]
PARENT_TYPES = {
    "Bank::User": ["Bank::Group", "Bank::Role"],
    "Bank::Account": ["Bank::Group"],
    "Bank::Ledger": ["Bank::Group"],
}


@st.composite
def entities(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly entities the schema accepts, each with a fair chance of one mistake: a value of
    another kind, a missing or unknown attribute, a parent of another type, an id outside an
    enumeration."""
    type_ = draw(st.sampled_from(TYPES))
    declared = DECLARED.get(type_, {})
    attrs: dict[str, Any] = {}
    for name, (required, typed) in declared.items():
        if required or draw(st.booleans()):
            attrs[name] = draw(typed if draw(st.integers(0, 9)) else values())
    if not declared or not draw(st.integers(0, 9)):
        for name in draw(st.lists(st.sampled_from(ATTRIBUTES), unique=True, max_size=3)):
            attrs[name] = draw(values())
    if attrs and not draw(st.integers(0, 14)):
        del attrs[draw(st.sampled_from(sorted(attrs)))]
    allowed = PARENT_TYPES.get(type_, [])
    mistaken = draw(st.integers(0, 9)) == 0
    parent_types = st.sampled_from(TYPES if mistaken or not allowed else allowed)
    parent_ids = st.one_of(ROLE_IDS, IDS)
    parents = draw(
        st.lists(st.builds(uid, parent_types, parent_ids, st.booleans()), max_size=2, unique_by=str)
    )
    id_ = draw(ROLE_IDS if type_ == "Bank::Role" else IDS)
    return {"uid": uid(type_, id_, draw(st.booleans())), "attrs": attrs, "parents": parents}


def twin(
    entity: dict[str, Any], kinds: EntityKinds, draw: Callable[[st.SearchStrategy[Any]], Any]
) -> dict[str, Any]:
    """``entity`` with every value its key blanks drawn again (found by asking the key which
    replacements keep it: a replacement Cedar might read differently must change the key)."""
    base = kinds.key(entity)
    copy: dict[str, Any] = json.loads(json.dumps(entity))

    def keeps(change: dict[str, Any]) -> bool:
        return kinds.key(change) == base

    for field, options in (("uid", IDS),):
        trial = json.loads(json.dumps(copy))
        inner = trial[field].get("__entity", trial[field])
        inner["id"] = draw(options)
        if keeps(trial):
            copy = trial
    for index in range(len(copy["parents"])):
        trial = json.loads(json.dumps(copy))
        inner = trial["parents"][index].get("__entity", trial["parents"][index])
        inner["id"] = draw(IDS)
        if keeps(trial):
            copy = trial
    for name, value in list(copy["attrs"].items()):
        trial = json.loads(json.dumps(copy))
        if isinstance(value, str):
            trial["attrs"][name] = draw(STRINGS)
        elif isinstance(value, int) and not isinstance(value, bool):
            trial["attrs"][name] = draw(INTS)
        elif isinstance(value, dict) and "__entity" in value:
            trial["attrs"][name]["__entity"]["id"] = draw(IDS)
        else:
            continue
        if keeps(trial):
            copy = trial
    return copy


def accepts(entity: dict[str, Any], schema: cedar.SchemaHandle | None) -> bool:
    try:
        cedarpy.Entities.from_json_str(json.dumps([entity]), schema)
    except ValueError:
        return False
    return True


PROFILE = settings(
    max_examples=int(os.environ.get("VERDICT_KINDS_EXAMPLES", "1500")),
    deadline=None,
    derandomize=os.environ.get("VERDICT_DIFF_RANDOM") != "1",
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def canonical(entity: dict[str, Any]) -> bool:
    """What a load hands on: canonical form, and no entity its own parent (a cycle, refused by
    the hierarchy check before Cedar; a twin with another parent id is no cycle)."""
    try:
        own, _ = check_entity(entity, "entity")
    except RequestError:
        return False
    return all(parse_uid(parent) != own for parent in entity["parents"])


@pytest.mark.timeout(300)  # 15-22 s in CI runs: the default 60 s was two slow hours away
@pytest.mark.parametrize("with_schema", [True, False])
@PROFILE
@given(data=st.data())
def test_twins_of_one_kind_get_one_answer(with_schema: bool, data: st.DataObject) -> None:
    """With the schema (its shape read) and without one."""
    schema = SCHEMA if with_schema else None
    kinds = EntityKinds(with_schema, SHAPE if with_schema else None)
    entity = data.draw(entities().filter(canonical))
    other = twin(entity, kinds, data.draw)
    assume(canonical(other))
    assert kinds.key(other) == kinds.key(entity)
    assert accepts(other, schema) == accepts(entity, schema), (entity, other)


def test_what_the_key_keeps_and_blanks() -> None:
    """Blanked: ids of plain types, String and Long attributes, reference ids; kept: enum ids,
    strings of extension attributes, Bool values and the kind of each value."""
    kinds = EntityKinds(True, SHAPE)

    def user(**attrs: Any) -> dict[str, Any]:
        base = {"name": "a", "age": 1, "active": True}
        return {"uid": uid("Bank::User", "u1"), "attrs": {**base, **attrs}, "parents": []}

    same = [
        (user(), {**user(), "uid": uid("Bank::User", "u2")}),
        (user(name="a"), user(name="b")),
        (user(age=1), user(age=2**63 - 1)),
        (
            user(boss={"__entity": uid("Bank::User", "a")}),
            user(boss={"__entity": uid("Bank::User", "b")}),
        ),
    ]
    for one, two in same:
        assert kinds.key(one) == kinds.key(two)
    apart = [
        (user(ip="10.0.0.1"), user(ip="garbage")),
        (
            user(role={"__entity": uid("Bank::Role", "admin")}),
            user(role={"__entity": uid("Bank::Role", "boss")}),
        ),
        (user(active=True), user(active=1)),
        (user(age=1), user(age="1")),
        (user(name="a"), user(name=["a"])),
        (user(labels=["a"]), user(labels=["b"])),
        (
            {**user(), "parents": [uid("Bank::Role", "admin")]},
            {**user(), "parents": [uid("Bank::Role", "x")]},
        ),
    ]
    for one, two in apart:
        assert kinds.key(one) != kinds.key(two), (one, two)
    action = {"uid": uid("Bank::Action", "view"), "attrs": {}, "parents": []}
    assert kinds.key(action) is None
    assert EntityKinds(True, None).key(user()) is None  # a schema whose shape was not read
