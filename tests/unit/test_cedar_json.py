"""Tests of strict parsing of caller JSON (context and entities) and uid references."""

from __future__ import annotations

import json
from typing import Any

import cedarpy
import pytest

from verdict import cedar_json
from verdict.cedar_json import (
    check_entity_shape,
    entity_references,
    parse_context_json,
    parse_entities_json,
    parse_uid,
    referenced_uids,
)
from verdict.errors import RequestError
from verdict.model import EntityUid


def test_context_keeps_every_cedar_value_losslessly() -> None:
    """64-bit longs, sets, records, entity refs and extension values pass through unchanged."""
    text = (
        '{"big": 9223372036854775807, "neg": -9223372036854775808, "s": "x", "b": true,'
        ' "set": [1, 2], "rec": {"a": {"b": 1}}, "e": {"__entity": {"type": "T", "id": "i"}},'
        ' "ip": {"__extn": {"fn": "ip", "arg": "10.0.0.1"}}}'
    )
    context = parse_context_json(text)
    assert context["big"] == 2**63 - 1
    assert context["neg"] == -(2**63)
    assert context["ip"] == {"__extn": {"fn": "ip", "arg": "10.0.0.1"}}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[1, 2]", "must be a JSON object"),
        ('"x"', "must be a JSON object"),
        ("{", "is not valid JSON at line 1 column 2"),
        ('{\n  "a": 1,\n  "b" 2\n}', "is not valid JSON at line 3 column 7"),
        ('{"a": 1} x', "is not valid JSON at line 1 column 10"),
        ('{"a": 1.5}', "Cedar has no floats"),
        ('{"a": 1e3}', "Cedar has no floats"),
        ('{"a": NaN}', "contains NaN or Infinity, which are not JSON"),
        ('{"a": 9223372036854775808}', "outside Cedar's 64-bit range"),
        ('{"a": 1, "b": {"c": 1, "c": 1}}', "repeats a key within one object"),
    ],
)
def test_bad_context_names_the_field(text: str, problem: str) -> None:
    """Invalid context is a RequestError on context_json with a clear problem."""
    with pytest.raises(RequestError) as info:
        parse_context_json(text)
    assert info.value.field == "context_json"
    assert problem in info.value.problem


def test_deeply_nested_context_is_rejected() -> None:
    """Nesting past the limit (and far past the interpreter's stack) is a clear error."""
    for depth in (40, 100_000):
        with pytest.raises(RequestError, match="nested deeper than 32"):
            parse_context_json('{"a": ' * depth + "1" + "}" * depth)


def test_empty_context_is_the_empty_record() -> None:
    """An empty or blank context string means {}."""
    assert parse_context_json("") == {}
    assert parse_context_json("  ") == {}


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("{}", "entities_json"),
        ("[1]", "entities_json[0]"),
        ('[{"uid": {"type": "T"}}]', "entities_json[0].uid"),
        ('[{"uid": {"type": "T", "id": "a"}, "attrs": []}]', "entities_json[0].attrs"),
        ('[{"uid": {"type": "T", "id": "a"}, "parents": ["T::b"]}]', "entities_json[0].parents[0]"),
        ('[{"uid": {"type": "T", "id": "a"}, "parents": {}}]', "entities_json[0].parents"),
        ('[{"uid": {"type": "T", "id": "a"}, "extra": 1}]', "entities_json[0]"),
    ],
)
def test_bad_entities_name_the_item(text: str, field: str) -> None:
    """Malformed request entities point at the exact item and key."""
    with pytest.raises(RequestError) as info:
        parse_entities_json(text)
    assert info.value.field == field


def test_uids_in_both_json_forms_are_read() -> None:
    """A uid may be written {type, id} or {"__entity": {type, id}}; other shapes are not uids."""
    assert parse_uid({"type": "T", "id": 'a"\\\n'}) == EntityUid("T", 'a"\\\n')
    assert parse_uid({"__entity": {"type": "T", "id": "a"}}) == EntityUid("T", "a")
    assert parse_uid({"type": "NS::T", "id": ""}) == EntityUid("NS::T", "")
    assert parse_uid({"type": "T", "id": "a", "x": 1}) is None
    assert parse_uid({"type": "in", "id": "a"}) is None
    assert parse_uid({"__entity": {"type": "T", "id": "a"}, "x": 1}) is None


def test_entity_references_follow_parents_attributes_and_tags() -> None:
    """References come from parents, nested attributes (both uid forms) and tags."""
    entity = {
        "uid": {"type": "Doc", "id": "d"},
        "parents": [{"type": "Folder", "id": "f"}],
        "attrs": {
            "owner": {"__entity": {"type": "User", "id": "u"}},
            "meta": {"reviewers": [{"type": "User", "id": "r"}]},
            "addr": {"__extn": {"fn": "ip", "arg": "1.2.3.4"}},
        },
        "tags": {"t": {"__entity": {"type": "Tag", "id": "t"}}},
    }
    assert entity_references(entity) == {
        EntityUid("Folder", "f"),
        EntityUid("User", "u"),
        EntityUid("User", "r"),
        EntityUid("Tag", "t"),
    }


X = {"type": "User", "id": "x"}


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ({"a": {"__entity": {**X, "v": 1}}}, "context_json.a.__entity"),
        ({"a": {"__entity": {"type": "User"}}}, "context_json.a.__entity"),
        ({"a": {"__entity": {"type": "bad type", "id": "x"}}}, "context_json.a.__entity"),
        ({"a": {"__entity": {"type": "User", "id": 5}}}, "context_json.a.__entity"),
        ({"a": {"__entity": 'User::"x"'}}, "context_json.a.__entity"),
        ({"a": {"__entity": X, "b": 1}}, "context_json.a"),
        ({"a": [1, {"__extn": {"fn": "ip", "arg": "1.2.3.4"}, "y": 1}]}, "context_json.a[1]"),
        ({"a": {"__extn": "ip"}}, "context_json.a.__extn"),
        ({"a": {"__extn": {"fn": 5, "arg": "1.2.3.4"}}}, "context_json.a.__extn"),
        ({"a": {"__extn": {"fn": "ip"}}}, "context_json.a.__extn"),
        ({"a": {"__extn": {"fn": "ip", "arg": "1", "q": 1}}}, "context_json.a.__extn"),
        ({"a": {"__extn": {"fn": "ip", "args": "1.2.3.4"}}}, "context_json.a.__extn"),
        ({"a": {"__extn": {"fn": "ip", "arg": "1", "args": ["1"]}}}, "context_json.a.__extn"),
        (
            {"a": {"__extn": {"fn": "ip", "arg": {"__entity": {**X, "v": 1}}}}},
            "context_json.a.__extn.arg.__entity",
        ),
        ({"a": {"__expr": 'User::"x"'}}, "context_json.a"),
        ({"__extn": {"fn": "ip", "arg": "1.2.3.4"}, "d": {"__entity": X}}, "context_json"),
        ({"__entity": X}, "context_json"),
        ({"a b": {"c": {"__entity": X, "z": 1}}}, 'context_json["a b"].c'),
    ],
)
def test_non_canonical_escapes_are_rejected_with_their_path(value: object, field: str) -> None:
    """Every escape Cedar might read differently from Verdict is refused, naming its path."""
    with pytest.raises(RequestError) as info:
        parse_context_json(json.dumps(value))
    assert info.value.field == field


def test_non_canonical_escapes_in_entities_name_the_attribute() -> None:
    """The same rule holds in entity attrs, tags and uids, naming the item and attribute."""
    cases: dict[str, dict[str, Any]] = {
        "entities_json[0].attrs.owner.__entity": {"attrs": {"owner": {"__entity": {**X, "v": 1}}}},
        "entities_json[0].tags.t": {"tags": {"t": {"__entity": X, "v": 1}}},
        "entities_json[0].attrs": {"attrs": {"__extn": {"fn": "ip", "arg": "1.2.3.4"}}},
        "entities_json[0].parents[0].__entity": {"parents": [{"__entity": {**X, "v": 1}}]},
        "entities_json[0].parents[1]": {"parents": [X, {**X, "v": 1}]},
    }
    for field, extra in cases.items():
        item = {"uid": {"type": "Doc", "id": "d"}, **extra}
        with pytest.raises(RequestError) as info:
            parse_entities_json(json.dumps([item]))
        assert info.value.field == field


def test_canonical_values_pass_unchanged() -> None:
    """Canonical escapes, both extension forms and nested records are accepted as written."""
    value = {
        "e": {"__entity": {"type": "Lending::Loan", "id": ""}},
        "ip": {"__extn": {"fn": "ip", "args": ["10.0.0.1"]}},
        "at": {
            "__extn": {
                "fn": "offset",
                "args": [
                    {"__extn": {"fn": "datetime", "arg": "2024-01-01"}},
                    {"__extn": {"fn": "duration", "arg": "1h"}},
                ],
            }
        },
        "rec": {"type": "loan", "id": "l1", "amount": 5, "list": [{"k": "__entity"}]},
    }
    assert parse_context_json(json.dumps(value)) == value


def test_referenced_uids_reads_what_cedar_may_read_as_references() -> None:
    """Escapes are references, and so are records with string type and id (extra keys too)."""
    value = {
        "a": {"__entity": {"type": "User", "id": "a"}},
        "b": [{"type": "User", "id": "b", "v": {"__entity": {"type": "User", "id": "c"}}}],
        "c": {"__extn": {"fn": "f", "arg": {"type": "User", "id": "d"}}},
        "d": {"type": "not a type", "id": "e"},
    }
    assert set(referenced_uids(value)) == {EntityUid("User", i) for i in "abcd"}


@pytest.mark.parametrize(
    ("entity", "lacking"),
    [
        ({"uid": {"type": "User", "id": "a"}, "attrs": {}}, '"parents"'),
        ({"uid": {"type": "User", "id": "a"}, "parents": []}, '"attrs"'),
        ({"uid": {"type": "User", "id": "a"}}, '"attrs" and "parents"'),
    ],
)
def test_an_entity_without_attrs_or_parents_is_refused_by_name(
    entity: dict[str, object], lacking: str
) -> None:
    """Cedar requires both: the refusal names what is missing, not a schema (round 15), and
    agrees with Cedar, which refuses the same entity."""
    with pytest.raises(RequestError) as refused:
        check_entity_shape(entity, "entities_json[0]")
    assert refused.value.field == "entities_json[0]"
    assert refused.value.problem.startswith(f"lacks {lacking}")
    with pytest.raises(ValueError, match="deserialization"):
        cedarpy.Entities.from_json_str(json.dumps([entity]))


def test_the_type_names_remembered_for_uids_stay_bounded() -> None:
    """Valid type names are remembered so uids are checked without a call; a caller sending
    endless distinct names (or long ones) cannot grow that memory."""
    for i in range(3_000):
        assert cedar_json.parse_uid({"type": f"T{i}", "id": "x"}) is not None
    long_name = "L" * 10_000
    assert cedar_json.parse_uid({"type": long_name, "id": "x"}) is not None
    assert len(cedar_json._TYPE_NAMES) <= cedar_json._TYPE_NAMES_KEPT
    assert long_name not in cedar_json._TYPE_NAMES
    # and what it remembers changes no answer: a bad name is refused however often it comes
    for _ in range(3):
        assert cedar_json.parse_uid({"type": "not a type", "id": "x"}) is None
