"""`verdict entities load` hands Cedar its file in parts; a file is accepted in parts exactly
when it is accepted whole (shape, uniqueness and hierarchy checked in Python, then Cedar's parse
and schema check of the whole text), on generated entity sets of both corpus stores: typed
(namespaced schema, groups in groups, tags, extension values, wrong attribute types) and plain,
with action entities (matching the schema's action groups or not), duplicates, cycles and
non-canonical forms, in any order, in parts of one to three entities; and on a schema with a
two-level action hierarchy (Cedar compares an action's closed ancestors with the schema's, so
the actions must reach Cedar together) beside groups whose parents form chains and cycles
across parts (Cedar refuses a cycle only when it sees all of it)."""

from __future__ import annotations

import asyncio
import json
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.security.cedar_corpus import TYPED_SCHEMA
from tests.security.cedar_gen import Example, examples
from verdict import cedar
from verdict.cedar_json import loads_strict
from verdict.entities_load import PartChecks, parse_in_parts
from verdict.errors import RequestError
from verdict.model import JsonObject
from verdict.store.entity_file import DEFAULT_HIERARCHY, shaped_entities

SCHEMAS = {"typed": cedar.parse_schema(TYPED_SCHEMA, is_json=False), "plain": None}
READERS = {"type": "Bank::Action", "id": "readers"}
TYPED_ACTIONS: list[JsonObject] = [
    {"uid": {"type": "Bank::Action", "id": "read"}, "attrs": {}, "parents": [READERS]},
    {"uid": {"type": "Bank::Action", "id": "read"}, "attrs": {}, "parents": []},
    {"uid": READERS, "attrs": {}, "parents": []},
    {"uid": {"type": "Bank::Action", "id": "write"}, "attrs": {}, "parents": [READERS]},
    {"uid": {"type": "Bank::Action", "id": "nope"}, "attrs": {}, "parents": []},
]


def accepted_whole(text: str, schema: cedar.SchemaHandle | None) -> bool:
    try:
        shaped_entities(loads_strict(text, "entities", max_depth=64), hierarchy=DEFAULT_HIERARCHY)
    except RequestError:
        return False
    return cedar.entities_conform(text, schema)


def accepted_in_parts(text: str, schema: cedar.SchemaHandle | None, part_size: int) -> bool:
    checks = PartChecks(schema, threads=2)
    try:
        parse_in_parts(text, checks, DEFAULT_HIERARCHY, part_size)
        return asyncio.run(checks.all_conform())
    except RequestError:
        return False
    finally:
        checks.close()


@settings(max_examples=300, deadline=None)
@given(
    example=st.sampled_from(["typed", "plain"]).flatmap(examples),
    actions=st.lists(st.sampled_from(TYPED_ACTIONS), max_size=3),
    duplicate=st.booleans(),
    seed=st.integers(0, 2**32),
    part_size=st.integers(1, 3),
)
def test_a_file_is_accepted_in_parts_exactly_when_it_is_accepted_whole(
    example: Example, actions: list[JsonObject], duplicate: bool, seed: int, part_size: int
) -> None:
    entities = list(example.entities)
    if example.store == "typed":
        entities += actions
    if duplicate and entities:
        entities.append(entities[0])
    random.Random(seed).shuffle(entities)
    text = json.dumps(entities)
    schema = SCHEMAS[example.store]
    assert accepted_in_parts(text, schema, part_size) == accepted_whole(text, schema), text


HIERARCHY_SCHEMA = cedar.parse_schema(
    "entity G in [G]; entity U in [G];\n"
    "action all; action readers in [all];\n"
    "action read in [readers] appliesTo { principal: [U], resource: [G] };\n",
    is_json=False,
)


def _uid(kind: str, ident: str) -> JsonObject:
    return {"type": kind, "id": ident}


def _entity(kind: str, ident: str, parents: list[JsonObject]) -> JsonObject:
    return {"uid": _uid(kind, ident), "attrs": {}, "parents": parents}


# Each action as declared, or with parents that differ from the declaration.
ACTION_VARIANTS: list[list[JsonObject]] = [
    [_entity("Action", "read", [_uid("Action", "readers")])],
    [_entity("Action", "read", [_uid("Action", "all")])],
    [_entity("Action", "readers", [_uid("Action", "all")])],
    [_entity("Action", "readers", [])],
    [_entity("Action", "all", [])],
    [_entity("Action", "all", [_uid("Action", "readers")])],
]


@st.composite
def hierarchies(draw: st.DrawFn) -> list[JsonObject]:
    """Actions (declared or not as the schema says), groups whose parents are other groups (a
    ring sometimes: a cycle through every group) and users in groups."""
    actions = draw(st.lists(st.sampled_from(ACTION_VARIANTS), max_size=3, unique_by=str))
    count = draw(st.integers(0, 6))
    groups = [_uid("G", f"g{i}") for i in range(count)]
    ring = draw(st.booleans())
    entities: list[JsonObject] = [e for variant in actions for e in variant]
    for index, group in enumerate(groups):
        if ring:
            parents = [groups[(index + 1) % count]]
        else:
            later = groups[index + 1 :]
            parents = (
                draw(st.lists(st.sampled_from(later), max_size=2, unique_by=str)) if later else []
            )
        entities.append({"uid": group, "attrs": {}, "parents": parents})
    for number in range(draw(st.integers(0, 2))):
        parents = (
            draw(st.lists(st.sampled_from(groups), max_size=2, unique_by=str)) if groups else []
        )
        entities.append({"uid": _uid("U", f"u{number}"), "attrs": {}, "parents": parents})
    return entities


@settings(max_examples=300, deadline=None)
@given(entities=hierarchies(), seed=st.integers(0, 2**32), part_size=st.integers(1, 3))
def test_actions_and_group_cycles_are_judged_in_parts_as_whole(
    entities: list[JsonObject], seed: int, part_size: int
) -> None:
    random.Random(seed).shuffle(entities)
    text = json.dumps(entities)
    whole = accepted_whole(text, HIERARCHY_SCHEMA)
    assert accepted_in_parts(text, HIERARCHY_SCHEMA, part_size) == whole, text
