"""Hypothesis strategies for the policy-index differential test: random policy sets (static and
template-linked, permits and forbids, every kind of scope, conditions that read, error or name
uids in every position), random entity hierarchies (some entities missing) and requests.

Everything is drawn from small pools of uids so that scopes, hierarchies and requests meet.
"""

from __future__ import annotations

import functools
import string
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


# Strategies are built once, here: building them inside a draw cost more than Cedar did.
UNSCOPED_SHARE = st.integers(0, 8)  # 0 and 5-8 unscoped: about half; policies often apply
PRINCIPAL_SLOTS = st.sampled_from(
    ["principal == ?principal", "principal in ?principal", "principal is User in ?principal"]
)
RESOURCE_SLOTS = st.sampled_from(
    ["resource == ?resource", "resource in ?resource", "resource is Doc in ?resource"]
)
principal_values = st.one_of(users, groups)
resource_values = st.one_of(docs, folders, users)
principal_types = st.sampled_from(["User", "Group"])
resource_types = st.sampled_from(["Doc", "Folder", "User"])


@st.composite
def principal_scopes(draw: st.DrawFn) -> str:
    """A principal constraint of any kind without a slot."""
    kind = draw(UNSCOPED_SHARE)
    if kind == 1:
        return f"principal == {draw(principal_values)}"
    if kind == 2:
        return f"principal in {draw(principal_parents)}"
    if kind == 3:
        return f"principal is {draw(principal_types)}"
    if kind == 4:
        return f"principal is User in {draw(principal_parents)}"
    return "principal"


@st.composite
def resource_scopes(draw: st.DrawFn) -> str:
    """A resource constraint of any kind without a slot."""
    kind = draw(UNSCOPED_SHARE)
    if kind == 1:
        return f"resource == {draw(resource_values)}"
    if kind == 2:
        return f"resource in {draw(resource_parents)}"
    if kind == 3:
        return f"resource is {draw(resource_types)}"
    if kind == 4:
        return f"resource is Doc in {draw(resource_parents)}"
    return "resource"


ACTION_KINDS = st.integers(0, 5)
action_lists = st.lists(actions, min_size=1, max_size=3, unique=True)


@st.composite
def action_scopes(draw: st.DrawFn) -> str:
    """An action constraint: all, ==, in a group, in a list."""
    kind = draw(ACTION_KINDS)
    if kind == 1:
        return f"action == {draw(actions)}"
    if kind == 2:
        return f"action in {draw(actions)}"
    if kind == 3:
        return f"action in [{', '.join(draw(action_lists))}]"
    return "action"


# $u, $v a user, $g a group, $d a doc, $f a folder, $a an action (string.Template).
CONDITIONS = [
    "true",
    "false",
    "principal.flag",
    "principal has flag && principal.flag",
    "resource.owner == principal",
    "resource has owner && resource.owner.flag",
    "principal in $g",
    "principal in [$g, $u]",
    "$u in principal",
    "$u in $g",
    "$u in $v",
    "$d in resource",
    "$u.flag",
    "$u has flag",
    "$u.boss == principal",
    "$d.owner == principal",
    '$u.hasTag("t") && $u.getTag("t") > 0',
    'principal.getTag("t") > 0',
    "(if principal has flag then $u else $d).flag",
    "{a: $u}.a.flag",
    "principal == $u",
    "[$g, $u].contains(principal)",
    "principal.n + 1 > 0",
    'principal.n < "a"',
    "resource is Doc in $f",
    "$d is Doc in $f",
    "action in $a",
    "context.k == 1",
    "context has k && context.k > 0",
    "principal.boss in $g",
    "resource.n * 2 < 5",
]
# Conditions that read a named uid's data come up three times as often: a slice that left out
# such an entity would change their value, which is what the slice check must see.
READING = [c for c in CONDITIONS if c.startswith(("$", "(if", "{a:"))]
condition_templates = st.sampled_from([string.Template(c) for c in CONDITIONS + READING * 2])


@st.composite
def conditions(draw: st.DrawFn) -> str:
    """A condition: reads that may be missing (errors), guarded reads, type errors, overflow,
    and uids named as values, on the right of ``in``, dereferenced, or through records and
    ``if``."""
    template = draw(condition_templates)
    names = {"u": users, "v": users, "g": groups, "d": docs, "f": folders, "a": actions}
    text: str = template.template
    return template.substitute({k: draw(v) for k, v in names.items() if f"${k}" in text})


SLOT_CHOICES = st.sampled_from([(True, False), (False, True), (True, True)])
EFFECTS = st.sampled_from(["permit", "forbid"])
clause_lists = st.lists(
    st.tuples(st.sampled_from(["when", "unless"]), conditions()), min_size=1, max_size=2
)
PRINCIPAL_SCOPES, RESOURCE_SCOPES, ACTION_SCOPES = (
    principal_scopes(),
    resource_scopes(),
    action_scopes(),
)


@st.composite
def policy_texts(draw: st.DrawFn, template: bool = False) -> str:
    """One policy, or a template with one or two slots."""
    p_slot, r_slot = draw(SLOT_CHOICES) if template else (False, False)
    principal = draw(PRINCIPAL_SLOTS if p_slot else PRINCIPAL_SCOPES)
    resource = draw(RESOURCE_SLOTS if r_slot else RESOURCE_SCOPES)
    scope = f"{principal}, {draw(ACTION_SCOPES)}, {resource}"
    body = " ".join(f"{kind} {{ {text} }}" for kind, text in draw(clause_lists))
    return f"{draw(EFFECTS)}({scope}) {body};"


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


SLOT_KINDS = {
    "?principal": st.sampled_from(["User", "Group"]),
    "?resource": st.sampled_from(["Doc", "Folder"]),
}
IDS = {
    type_: st.sampled_from(pool)
    for type_, pool in (("User", USERS), ("Group", GROUPS), ("Doc", DOCS), ("Folder", FOLDERS))
}
LINK_COUNTS = st.integers(0, 4)


def _slot_values(draw: st.DrawFn, template: JsonObject) -> dict[str, dict[str, str]]:
    values = {}
    for part, slot in (("principal", "?principal"), ("resource", "?resource")):
        if slot in str(template.get(part)):
            type_ = draw(SLOT_KINDS[slot])
            values[slot] = uid_json(type_, draw(IDS[type_]))
    return values


@st.composite
def policy_sets(draw: st.DrawFn) -> PolicySetSpec:
    """Up to 10 static policies, up to 2 templates and up to 4 links of them."""
    static = {f"p{i}": parsed(t) for i, t in enumerate(draw(st.lists(policy_texts(), max_size=10)))}
    texts = draw(st.lists(policy_texts(template=True), max_size=2))
    templates = {f"t{i}": parsed(t) for i, t in enumerate(texts)}
    links = []
    if templates:
        for number in range(draw(LINK_COUNTS)):
            template_id = sorted(templates)[draw(st.integers(0, len(templates) - 1))]
            values = _slot_values(draw, templates[template_id])
            links.append({"templateId": template_id, "newId": f"l{number}", "values": values})
    return PolicySetSpec(static, templates, links)


def _entity(
    type_: str, id_: str, attrs: JsonObject, parents: list[dict[str, str]], tags: JsonObject
) -> JsonObject:
    return {"uid": uid_json(type_, id_), "attrs": attrs, "parents": parents, "tags": tags}


def _later(pool: list[str]) -> list[st.SearchStrategy[list[str]]]:
    """Per position, up to two parents of a higher position (no cycles)."""
    return [
        st.lists(st.sampled_from(pool[index + 1 :] or [pool[index]]), max_size=2)
        for index in range(len(pool))
    ]


LATER = {"Group": _later(GROUPS), "Folder": _later(FOLDERS), "User": _later(USERS[:-1])}
FLAGS = {True: st.booleans(), False: st.one_of(st.booleans(), st.integers(-2, 2))}
NUMBERS = st.sampled_from([0, 1, -3, LONG_MAX])
group_sets = st.lists(st.sampled_from(GROUPS), max_size=2, unique=True)
folder_sets = st.lists(st.sampled_from(FOLDERS), max_size=2, unique=True)
action_group_sets = st.lists(st.sampled_from(GROUP_ACTIONS), max_size=2, unique=True)
any_user = st.sampled_from(USERS)
DROPPED = st.lists(
    st.sampled_from([uid_json("User", "u1"), uid_json("Group", "g1"), uid_json("Doc", "d1")]),
    max_size=2,
)


@st.composite
def hierarchies(draw: st.DrawFn, typed: bool) -> list[JsonObject]:
    """Groups and folders in acyclic hierarchies (a parent has a higher number), users in
    groups (and under other users), docs in folders, random attributes and tags; without a
    schema (``typed`` false) attributes take any type and actions get random groups."""
    entities = []
    for type_, pool in (("Group", GROUPS), ("Folder", FOLDERS)):
        for index, name in enumerate(pool):
            above = set(draw(LATER[type_][index])) - {name}
            entities.append(_entity(type_, name, {}, [uid_json(type_, p) for p in above], {}))
    flags = FLAGS[typed]
    for index, user in enumerate(USERS[:-1]):
        attrs: JsonObject = {}
        if draw(st.booleans()):
            attrs["flag"] = draw(flags)
        if draw(st.booleans()):
            attrs["n"] = draw(NUMBERS)
        if draw(st.booleans()):
            attrs["boss"] = {"__entity": uid_json("User", draw(any_user))}
        parents = [uid_json("Group", g) for g in draw(group_sets)]
        parents += [uid_json("User", u) for u in set(draw(LATER["User"][index])) - {user}]
        tags = {"t": draw(NUMBERS)} if draw(st.booleans()) else {}
        entities.append(_entity("User", user, attrs, parents, tags))
    for doc in DOCS[:-1]:
        attrs = {}
        if draw(st.booleans()):
            attrs["owner"] = {"__entity": uid_json("User", draw(any_user))}
        if draw(st.booleans()):
            attrs["flag"] = draw(flags)
        if draw(st.booleans()):
            attrs["n"] = draw(NUMBERS)
        parents = [uid_json("Folder", f) for f in draw(folder_sets)]
        entities.append(_entity("Doc", doc, attrs, parents, {}))
    if not typed:
        for action in LEAF_ACTIONS + GROUP_ACTIONS:
            names = draw(action_group_sets)
            # No cycles: "all" is never under "rw".
            names = [n for n in names if n != action and not (action == "all" and n == "rw")]
            entities.append(
                _entity("Action", action, {}, [uid_json("Action", n) for n in names], {})
            )
    dropped = draw(DROPPED)
    return [e for e in entities if e["uid"] not in dropped]


PRINCIPAL_KINDS = st.sampled_from(["User", "User", "Group"])
RESOURCE_KINDS = st.sampled_from(["Doc", "Doc", "Folder", "User"])
REQUEST_ACTIONS = {
    True: st.sampled_from(LEAF_ACTIONS),
    False: st.sampled_from(LEAF_ACTIONS + GROUP_ACTIONS),
}
CONTEXTS = st.sampled_from([{}, {"k": 1}, {"k": 0}])


@st.composite
def requests(draw: st.DrawFn, typed: bool) -> JsonObject:
    """A Cedar request over the pools; with the schema only leaf actions are requested."""
    principal_kind, resource_kind = draw(PRINCIPAL_KINDS), draw(RESOURCE_KINDS)
    return {
        "principal": uid_json(principal_kind, draw(IDS[principal_kind])),
        "action": uid_json("Action", draw(REQUEST_ACTIONS[typed])),
        "resource": uid_json(resource_kind, draw(IDS[resource_kind])),
        "context": dict(draw(CONTEXTS)),
    }
