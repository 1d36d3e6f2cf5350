"""Hypothesis strategies for the policy-index differential test: random policy sets (static and
template-linked, permits and forbids, every kind of scope, conditions that read, error or name
uids in every position), random entity hierarchies (some entities missing) and requests.

Everything is drawn from small pools of uids so that scopes, hierarchies and requests meet.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from verdict import cedar

JsonObject = dict[str, Any]

# Small pools, so that scopes, hierarchies and requests meet often.
USERS = ["u0", "u1", "u2", "ghost"]  # "ghost" is never stored
GROUPS = ["g0", "g1", "g2"]
FOLDERS = ["f0", "f1"]
DOCS = ["d0", "d1", "nodoc"]  # "nodoc" is never stored
LEAF_ACTIONS = ["read", "write", "del"]
GROUP_ACTIONS = ["rw", "all"]
LONG_MAX = 2**63 - 1

# With the schema the action hierarchy comes from it: read, write in rw; rw, del in all.
SCHEMA = """
entity Group in [Group];
entity User in [Group, User] = { flag?: Bool, n?: Long, boss?: User } tags Long;
entity Folder in [Folder];
entity Doc in [Folder] = { owner?: User, flag?: Bool, n?: Long };
action all;
action rw in [all];
action del in [all] appliesTo {
  principal: [User, Group], resource: [Doc, Folder, User], context: { k?: Long }
};
action read, write in [rw] appliesTo {
  principal: [User, Group], resource: [Doc, Folder, User], context: { k?: Long }
};
"""


def uid_text(type_: str, id_: str) -> str:
    """A uid in Cedar syntax."""
    return f'{type_}::"{id_}"'


def uid_json(type_: str, id_: str) -> dict[str, str]:
    """A uid in Cedar JSON."""
    return {"type": type_, "id": id_}


users = st.sampled_from(USERS).map(lambda i: uid_text("User", i))
groups = st.sampled_from(GROUPS).map(lambda i: uid_text("Group", i))
folders = st.sampled_from(FOLDERS).map(lambda i: uid_text("Folder", i))
docs = st.sampled_from(DOCS).map(lambda i: uid_text("Doc", i))
principal_parents = st.one_of(groups, users)
resource_parents = st.one_of(folders, docs)
actions = st.sampled_from(LEAF_ACTIONS + GROUP_ACTIONS).map(lambda i: uid_text("Action", i))


@st.composite
def principal_scopes(draw: st.DrawFn, slot: bool) -> str:
    """A principal constraint of any kind; ``slot``: one holding ``?principal``."""
    if slot:
        return draw(
            st.sampled_from(
                [
                    "principal == ?principal",
                    "principal in ?principal",
                    "principal is User in ?principal",
                ]
            )
        )
    kind = draw(st.integers(0, 8))  # half of them unscoped: policies that apply are common
    if kind in (0, 5, 6, 7, 8):
        return "principal"
    if kind == 1:
        return f"principal == {draw(st.one_of(users, groups))}"
    if kind == 2:
        return f"principal in {draw(principal_parents)}"
    if kind == 3:
        return f"principal is {draw(st.sampled_from(['User', 'Group']))}"
    return f"principal is User in {draw(principal_parents)}"


@st.composite
def resource_scopes(draw: st.DrawFn, slot: bool) -> str:
    """A resource constraint of any kind; ``slot``: one holding ``?resource``."""
    if slot:
        return draw(
            st.sampled_from(
                ["resource == ?resource", "resource in ?resource", "resource is Doc in ?resource"]
            )
        )
    kind = draw(st.integers(0, 8))  # half of them unscoped: policies that apply are common
    if kind in (0, 5, 6, 7, 8):
        return "resource"
    if kind == 1:
        return f"resource == {draw(st.one_of(docs, folders, users))}"
    if kind == 2:
        return f"resource in {draw(resource_parents)}"
    if kind == 3:
        return f"resource is {draw(st.sampled_from(['Doc', 'Folder', 'User']))}"
    return f"resource is Doc in {draw(resource_parents)}"


@st.composite
def action_scopes(draw: st.DrawFn) -> str:
    """An action constraint: all, ==, in a group, in a list."""
    kind = draw(st.integers(0, 5))
    if kind in (0, 4, 5):
        return "action"
    if kind == 1:
        return f"action == {draw(actions)}"
    if kind == 2:
        return f"action in {draw(actions)}"
    listed = draw(st.lists(actions, min_size=1, max_size=3, unique=True))
    return f"action in [{', '.join(listed)}]"


@st.composite
def conditions(draw: st.DrawFn) -> str:
    """A condition: reads that may be missing (errors), guarded reads, type errors, overflow,
    and uids named as values, on the right of ``in``, dereferenced, or through records and
    ``if``."""
    u, g, d, f = draw(users), draw(groups), draw(docs), draw(folders)
    return draw(
        st.sampled_from(
            [
                "true",
                "false",
                "principal.flag",
                "principal has flag && principal.flag",
                "resource.owner == principal",
                "resource has owner && resource.owner.flag",
                f"principal in {g}",
                f"principal in [{g}, {u}]",
                f"{u} in principal",
                f"{u} in {g}",
                f"{u} in {draw(users)}",
                f"{d} in resource",
                f"{u}.flag",
                f"{u} has flag",
                f"{u}.boss == principal",
                f"{d}.owner == principal",
                f'{u}.hasTag("t") && {u}.getTag("t") > 0',
                'principal.getTag("t") > 0',
                f"(if principal has flag then {u} else {d}).flag",
                f"{{a: {u}}}.a.flag",
                f"principal == {u}",
                f"[{g}, {u}].contains(principal)",
                "principal.n + 1 > 0",
                'principal.n < "a"',
                f"resource is Doc in {f}",
                f"{d} is Doc in {f}",
                f"action in {draw(actions)}",
                "context.k == 1",
                "context has k && context.k > 0",
                f"principal.boss in {g}",
                "resource.n * 2 < 5",
            ]
        )
    )


@st.composite
def policy_texts(draw: st.DrawFn, template: bool = False) -> str:
    """One policy, or a template with one or two slots."""
    p_slot = r_slot = False
    if template:
        p_slot, r_slot = draw(st.sampled_from([(True, False), (False, True), (True, True)]))
    effect = draw(st.sampled_from(["permit", "forbid"]))
    scope = (
        f"{draw(principal_scopes(p_slot))}, {draw(action_scopes())}, "
        f"{draw(resource_scopes(r_slot))}"
    )
    clauses = draw(
        st.lists(
            st.tuples(st.sampled_from(["when", "unless"]), conditions()), min_size=1, max_size=2
        )
    )
    body = " ".join(f"{kind} {{ {text} }}" for kind, text in clauses)
    return f"{effect}({scope}) {body};"


@functools.lru_cache(maxsize=20_000)
def parsed(text: str) -> JsonObject:
    """Cedar's JSON form of one policy or template (parsing costs ~100 us: remembered)."""
    document = cedar.policy_to_json(text)
    return dict(next(iter({**document["staticPolicies"], **document["templates"]}.values())))


@dataclass(frozen=True)
class PolicySetSpec:
    """Static policies and templates by id (Cedar JSON), and links of the templates."""

    static: dict[str, JsonObject]
    templates: dict[str, JsonObject]
    links: list[JsonObject]


def _slot_values(draw: st.DrawFn, template: JsonObject) -> dict[str, dict[str, str]]:
    values = {}
    for part, slot in (("principal", "?principal"), ("resource", "?resource")):
        if slot in str(template.get(part)):
            pool = USERS if part == "principal" else DOCS
            kinds = ("User", "Group") if part == "principal" else ("Doc", "Folder")
            type_ = draw(st.sampled_from(kinds))
            ids = pool if type_ in ("User", "Doc") else (GROUPS if type_ == "Group" else FOLDERS)
            values[slot] = uid_json(type_, draw(st.sampled_from(ids)))
    return values


@st.composite
def policy_sets(draw: st.DrawFn) -> PolicySetSpec:
    """Up to 10 static policies, up to 2 templates and up to 4 links of them."""
    static = {f"p{i}": parsed(t) for i, t in enumerate(draw(st.lists(policy_texts(), max_size=10)))}
    texts = draw(st.lists(policy_texts(template=True), max_size=2))
    templates = {f"t{i}": parsed(t) for i, t in enumerate(texts)}
    links = []
    if templates:
        for number in range(draw(st.integers(0, 4))):
            template_id = draw(st.sampled_from(sorted(templates)))
            values = _slot_values(draw, templates[template_id])
            links.append({"templateId": template_id, "newId": f"l{number}", "values": values})
    return PolicySetSpec(static, templates, links)


def _entity(
    type_: str, id_: str, attrs: JsonObject, parents: list[dict[str, str]], tags: JsonObject
) -> JsonObject:
    return {"uid": uid_json(type_, id_), "attrs": attrs, "parents": parents, "tags": tags}


@st.composite
def hierarchies(draw: st.DrawFn, typed: bool) -> list[JsonObject]:
    """Groups and folders in acyclic hierarchies (a parent has a higher number), users in
    groups (and under other users), docs in folders, random attributes and tags; without a
    schema (``typed`` false) attributes take any type and actions get random groups."""
    entities = []

    def later(pool: list[str], index: int) -> list[str]:
        return draw(st.lists(st.sampled_from(pool[index + 1 :] or [pool[index]]), max_size=2))

    for index, group in enumerate(GROUPS):
        parents = [uid_json("Group", p) for p in set(later(GROUPS, index)) if p != group]
        entities.append(_entity("Group", group, {}, parents, {}))
    for index, folder in enumerate(FOLDERS):
        parents = [uid_json("Folder", p) for p in set(later(FOLDERS, index)) if p != folder]
        entities.append(_entity("Folder", folder, {}, parents, {}))
    flags = st.booleans() if typed else st.one_of(st.booleans(), st.integers(-2, 2))
    numbers = st.sampled_from([0, 1, -3, LONG_MAX])
    for index, user in enumerate(USERS[:-1]):
        attrs: JsonObject = {}
        if draw(st.booleans()):
            attrs["flag"] = draw(flags)
        if draw(st.booleans()):
            attrs["n"] = draw(numbers)
        if draw(st.booleans()):
            attrs["boss"] = {"__entity": uid_json("User", draw(st.sampled_from(USERS)))}
        parents = [
            uid_json("Group", g)
            for g in draw(st.lists(st.sampled_from(GROUPS), max_size=2, unique=True))
        ]
        parents += [uid_json("User", u) for u in set(later(USERS[:-1], index)) if u != user]
        tags = {"t": draw(numbers)} if draw(st.booleans()) else {}
        entities.append(_entity("User", user, attrs, parents, tags))
    for doc in DOCS[:-1]:
        attrs = {}
        if draw(st.booleans()):
            attrs["owner"] = {"__entity": uid_json("User", draw(st.sampled_from(USERS)))}
        if draw(st.booleans()):
            attrs["flag"] = draw(flags)
        if draw(st.booleans()):
            attrs["n"] = draw(numbers)
        parents = [
            uid_json("Folder", f)
            for f in draw(st.lists(st.sampled_from(FOLDERS), max_size=2, unique=True))
        ]
        entities.append(_entity("Doc", doc, attrs, parents, {}))
    if not typed:
        for action in LEAF_ACTIONS + GROUP_ACTIONS:
            names = draw(st.lists(st.sampled_from(GROUP_ACTIONS), max_size=2, unique=True))
            # No cycles: "all" is never under "rw".
            names = [n for n in names if n != action and not (action == "all" and n == "rw")]
            entities.append(
                _entity("Action", action, {}, [uid_json("Action", n) for n in names], {})
            )
    dropped = draw(
        st.lists(
            st.sampled_from(
                [uid_json("User", "u1"), uid_json("Group", "g1"), uid_json("Doc", "d1")]
            ),
            max_size=2,
        )
    )
    return [e for e in entities if e["uid"] not in dropped]


@st.composite
def requests(draw: st.DrawFn, typed: bool) -> JsonObject:
    """A Cedar request over the pools; with the schema only leaf actions are requested."""
    kind = draw(st.sampled_from(["User", "User", "Group"]))
    principal = uid_json(kind, draw(st.sampled_from(USERS if kind == "User" else GROUPS)))
    kind = draw(st.sampled_from(["Doc", "Doc", "Folder", "User"]))
    pool = {"Doc": DOCS, "Folder": FOLDERS, "User": USERS}[kind]
    resource = uid_json(kind, draw(st.sampled_from(pool)))
    action = draw(st.sampled_from(LEAF_ACTIONS if typed else LEAF_ACTIONS + GROUP_ACTIONS))
    context = draw(st.sampled_from([{}, {"k": 1}, {"k": 0}]))
    return {
        "principal": principal,
        "action": uid_json("Action", action),
        "resource": resource,
        "context": context,
    }
