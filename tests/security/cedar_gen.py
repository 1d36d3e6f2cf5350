"""Hypothesis strategies that generate Cedar JSON inputs: uids, values, entities and requests.

Ids cover Cedar's edges (empty, ``::``, quotes, backslashes, newlines, unicode, 1 KiB); values
cover every Cedar type and extension, including entity references that point at entities that
exist, do not exist, or form hierarchies. A small share of values use non-canonical escapes
(extra keys beside an entity reference or beside ``__extn``) that Verdict must refuse rather than
read differently from Cedar.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

JsonObject = dict[str, Any]
LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1

EDGE_IDS = [
    "",
    "::",
    "a::b",
    '"',
    'a"b',
    "\\",
    "\n",
    "x\ty",
    "é",
    "🙂",
    "blocked",
    "admins",
    "secret-report",
    'a::"b"\n',
    "k" * 1024,
    'Group::"blocked"',
]
ids = st.one_of(st.sampled_from(EDGE_IDS), st.text(max_size=6))
longs = st.one_of(
    st.sampled_from([0, 1, -1, 3, 4, 9000, LONG_MAX, LONG_MIN, LONG_MAX // 2 + 1]),
    st.integers(LONG_MIN, LONG_MAX),
)
strings = st.one_of(
    st.sampled_from(["", "v", "admin", "x secret y", 'q"', "\\"]), st.text(max_size=8)
)


def mostly(common: st.SearchStrategy[Any], rare: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``common``, and about one time in ten ``rare``.

    Hypothesis favours the ends of a range, so the rare branch sits in its middle; ``one_of``
    would pick its last branch far more often than its share.
    """
    return st.integers(0, 59).flatmap(lambda i: rare if 27 <= i <= 32 else common)


def extension(fn: str, valid: list[str], invalid: list[str]) -> st.SearchStrategy[JsonObject]:
    """An ``__extn`` value; about one in thirty has an argument Cedar rejects."""
    args = mostly(st.sampled_from(valid), mostly(st.sampled_from(valid), st.sampled_from(invalid)))
    return args.map(lambda arg: {"__extn": {"fn": fn, "arg": arg}})


decimals = extension(
    "decimal", ["1.5", "0.0001", "-2.25", "922337203685477.5807"], ["abc", "1.2345"]
)
ips = extension("ip", ["127.0.0.1", "10.0.0.0/8", "::1", "192.168.1.3"], ["192.168.1.300", "no"])
datetimes = extension("datetime", ["2019-06-01", "2024-01-01T10:00:00Z"], ["2024-13-01"])
durations = extension("duration", ["1h", "-3d2m"], ["bad"])


def ref(uid: JsonObject) -> JsonObject:
    """The canonical entity reference escape."""
    return {"__entity": dict(uid)}


def non_canonical(uid: JsonObject) -> st.SearchStrategy[Any]:
    """References written in forms Verdict refuses (Cedar reads some of them as references)."""
    return st.sampled_from(
        [
            {"__entity": {**uid, "v": 1}},
            {**uid, "v": 1},
            {"__extn": {"fn": "decimal", "arg": "1.0"}, "y": {"__entity": dict(uid)}},
            {"__entity": dict(uid), "x": 1},
        ]
    )


@dataclass
class World:
    """A pool of uids that generated values and entities draw from, so references collide."""

    uids: list[JsonObject]
    odd_forms: bool = True
    pool: list[JsonObject] = field(default_factory=list)

    def uid(self) -> st.SearchStrategy[JsonObject]:
        return st.sampled_from(self.uids)

    def value(self, depth: int = 2) -> st.SearchStrategy[Any]:
        leaves: list[st.SearchStrategy[Any]] = [
            st.booleans(),
            longs,
            strings,
            self.uid().map(ref),
            decimals,
            ips,
            datetimes,
            durations,
        ]
        if self.odd_forms:
            leaves.append(self.uid().flatmap(non_canonical))
        leaf = st.one_of(*leaves)
        if depth <= 0:
            return leaf
        inner = self.value(depth - 1)
        return st.one_of(
            leaf,
            st.lists(inner, max_size=3),
            st.dictionaries(st.sampled_from(["a", "b", "owner", "level"]), inner, max_size=3),
        )


def world(types: list[str], odd_forms: bool) -> st.SearchStrategy[World]:
    """A pool of 2 to 8 distinct uids of the given types."""
    uid = st.builds(lambda t, i: {"type": t, "id": i}, st.sampled_from(types), ids)
    # The groups the policies name sit last, so any other uid may have them as parents.
    named = [{"type": "Group", "id": "blocked"}, {"type": "Group", "id": "admins"}]
    return st.lists(uid, min_size=2, max_size=8, unique_by=lambda u: (u["type"], u["id"])).map(
        lambda uids: World([u for u in uids if u not in named] + named, odd_forms)
    )


def plain_entity(w: World, uid: JsonObject) -> st.SearchStrategy[JsonObject]:
    """A schema-free entity: any attributes, parents and tags drawn from the world."""
    attrs = st.fixed_dictionaries(
        {"level": mostly(longs, w.value(0)), "name": mostly(strings, w.value(0))},
        optional={
            "owner": mostly(w.uid().map(ref), w.value(0)),
            "manager": w.uid().map(ref),
            "viewers": st.lists(w.uid().map(ref), max_size=3),
            "a": w.value(),
        },
    )
    return st.builds(
        lambda attrs, parents, tags: {
            "uid": uid,
            "attrs": attrs,
            "parents": parents,
            **({"tags": tags} if tags is not None else {}),
        },
        attrs,
        _parents(w, uid),
        st.none() | st.dictionaries(st.sampled_from(["k", "z"]), st.one_of(strings, w.value(0))),
    )


def _parents(
    w: World, uid: JsonObject, candidates: list[JsonObject] | None = None
) -> st.SearchStrategy[list[JsonObject]]:
    """Parents later in the pool (a hierarchy), and rarely any candidate at all (maybe a cycle)."""
    pool = w.uids if candidates is None else candidates
    own = w.uids.index(uid) if uid in w.uids else len(w.uids)
    later = [u for u in pool if w.uids.index(u) > own]

    def pick(any_uid: bool) -> st.SearchStrategy[list[JsonObject]]:
        choices = pool if any_uid else later
        if not choices:
            return st.just([])
        return st.lists(st.sampled_from(choices), max_size=3, unique_by=str)

    return st.integers(0, 59).map(lambda i: i in (29, 30)).flatmap(pick)


typed_decimals = extension("decimal", ["1.5", "0.0001", "-2.25", "3.0"], ["abc", "1.23456"])
typed_ips = extension("ip", ["127.0.0.1", "10.0.0.0/8", "::1", "192.168.0.1"], ["no-ip"])
typed_datetimes = extension("datetime", ["2019-06-01", "2024-01-01T10:00:00Z"], ["2024-13-01"])


def typed_entity(w: World, uid: JsonObject) -> st.SearchStrategy[JsonObject]:
    """An entity of the Bank schema: mostly conforming, sometimes with a wrong attribute."""
    users = [u for u in w.uids if u["type"] == "Bank::User"]
    groups = [u for u in w.uids if u["type"] == "Bank::Group"]
    user_ref = st.sampled_from(users).map(ref)
    group_parents = _parents(w, uid, groups)
    level = (
        st.one_of(longs, longs, longs, st.booleans(), w.uid().map(ref)) if w.odd_forms else longs
    )
    kind = uid["type"]
    if kind == "Bank::User":
        attrs = st.fixed_dictionaries(
            {"level": level, "name": strings},
            optional={"manager": user_ref, "since": typed_datetimes},
        )
        tags = st.dictionaries(st.sampled_from(["role", "x"]), st.sampled_from(["admin", "v"]))
        return st.builds(
            lambda a, p, t: {"uid": uid, "attrs": a, "parents": p, "tags": t},
            attrs,
            group_parents,
            tags,
        )
    if kind == "Bank::Doc":
        doc_attrs: dict[str, st.SearchStrategy[Any]] = {
            "owner": user_ref,
            "name": strings,
            "viewers": st.lists(user_ref, max_size=3, unique_by=lambda r: r["__entity"]["id"]),
        }
        attrs = st.fixed_dictionaries(
            doc_attrs, optional={"limit": typed_decimals, "net": typed_ips}
        )
        return st.builds(lambda a: {"uid": uid, "attrs": a, "parents": []}, attrs)
    return st.builds(lambda p: {"uid": uid, "attrs": {}, "parents": p}, group_parents)


def typed_world(odd_forms: bool) -> st.SearchStrategy[World]:
    """A Bank world: at least one user and one document, and some groups."""

    def uids(kind: str, low: int) -> st.SearchStrategy[list[JsonObject]]:
        return st.lists(
            ids.map(lambda i: {"type": kind, "id": i}), min_size=low, max_size=3, unique_by=str
        )

    return st.builds(
        lambda u, d, g: World(u + d + g, odd_forms),
        uids("Bank::User", 1),
        uids("Bank::Doc", 1),
        uids("Bank::Group", 0),
    )


@dataclass(frozen=True)
class Example:
    """One generated case: the stored entities and two requests against them."""

    store: str
    entities: list[JsonObject]
    requests: list[JsonObject]


PLAIN_TYPES = ["User", "Group", "Doc", "A::B::Thing"]
PLAIN_ACTIONS = [{"type": "Action", "id": i} for i in ["read", "write", "readers", ""]]
TYPED_ACTIONS = [{"type": "Bank::Action", "id": i} for i in ["read", "write"]]
# Declared, but applies to nothing: every request naming it is invalid.
TYPED_GROUP_ACTION = {"type": "Bank::Action", "id": "readers"}
CONTEXT_KEYS = ["mfa", "n", "d", "delegate", "ip", "t", "flag", "extra"]


@st.composite
def examples(draw: st.DrawFn, store: str) -> Example:
    """A world, the entities stored in it, and two requests."""
    typed = store == "typed"
    odd = draw(st.integers(0, 3)) == 1  # some examples use non-canonical forms
    w = draw(typed_world(odd) if typed else world(PLAIN_TYPES, odd))
    # Most uids are stored; the others are referenced but missing.
    keep = draw(
        st.lists(
            st.sampled_from([True, True, True, False]), min_size=len(w.uids), max_size=len(w.uids)
        )
    )
    stored = [uid for uid, kept in zip(w.uids, keep, strict=True) if kept]
    if not typed and draw(st.booleans()):
        # Stored action entities: an action group for `action in Action::"readers"`.
        stored.append({"type": "Action", "id": "read"})
    make = typed_entity if typed else plain_entity
    entities = []
    for uid in stored:
        entity = draw(make(w, uid))
        if not typed and uid == {"type": "Action", "id": "read"}:
            entity = {"uid": uid, "attrs": {}, "parents": [{"type": "Action", "id": "readers"}]}
        entities.append(entity)
    actions = TYPED_ACTIONS if typed else PLAIN_ACTIONS
    requests = [draw(_request(w, actions, typed)) for _ in range(2)]
    return Example(store, entities, requests)


def _request(w: World, actions: list[JsonObject], typed: bool) -> st.SearchStrategy[JsonObject]:
    if not typed:
        context = st.fixed_dictionaries(
            {"flag": mostly(st.booleans(), w.value(0))},
            optional={
                "delegate": w.uid().flatmap(non_canonical) if w.odd_forms else w.uid().map(ref),
                "n": longs,
                "d": st.one_of(decimals, w.value(0)),
                "ip": ips,
                "t": datetimes,
                "extra": w.value(1),
            },
        )
        return st.fixed_dictionaries(
            {
                "principal": w.uid(),
                "action": st.sampled_from(actions),
                "resource": w.uid(),
                "context": context,
            }
        )
    users = [u for u in w.uids if u["type"] == "Bank::User"]
    docs = [u for u in w.uids if u["type"] == "Bank::Doc"]
    context = st.fixed_dictionaries(
        {},
        optional={
            "mfa": st.booleans(),
            "n": longs,
            "d": typed_decimals,
            "delegate": st.sampled_from(users).map(ref),
            "ip": typed_ips,
            "t": typed_datetimes,
        },
    )
    if w.odd_forms:  # undeclared or wrongly typed context attributes
        context = mostly(context, st.dictionaries(st.sampled_from(CONTEXT_KEYS), w.value(1)))
    action = mostly(st.sampled_from(actions), st.just(TYPED_GROUP_ACTION))
    principal = mostly(st.sampled_from(users), w.uid())
    resource = mostly(st.sampled_from(docs), w.uid())
    return st.fixed_dictionaries(
        {
            "principal": principal,
            "action": action,
            "resource": resource,
            "context": context,
        }
    )
