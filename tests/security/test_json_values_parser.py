"""The counting JSON parser: its two paths agree exactly, and a refused text is parsed no
further than the limit (the work, not only the answer, is bounded)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verdict.cedar_json import parse_context_json, parse_entities_counted
from verdict.errors import RequestError, ValueBudgetError
from verdict.json_values import (
    C_PARSE_VALUES,
    ValueBudget,
    _Limits,
    _parse_scanning,
    parse_json,
)

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.text(max_size=8),
)
DOCUMENTS = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=40,
)
# Fragments that make a document invalid or refused in every way the parser knows.
NOISE = st.sampled_from(
    ["", " ", "\n", ",", "]", "}", "[", "{", ":", '"', "1.5", "1e3", "NaN", "-Infinity", "01",
     "-", "tru", "nul", '"\\ud800"', '"\\x"', "\x01", '{"a":1,"a":2}', "\ufeff", "[" * 40]
)  # fmt: skip


def outcome(text: str, scanning: bool) -> Any:
    """(value, values, item values) or the refusal, parsed by json.loads (the text is small
    enough for it) or by the counting scanner, called directly."""
    limits = _Limits("f", 32, None, None, None)
    try:
        if scanning:
            parsed = _parse_scanning(text, limits, 10**6)
        else:
            assert 1 + sum(text.count(c) for c in ",[{") <= C_PARSE_VALUES
            parsed = parse_json(text, "f", 32, C_PARSE_VALUES)
    except RequestError as exc:
        return (exc.field, exc.problem)
    return (parsed.value, parsed.values, parsed.item_values)


TOKENS = st.sampled_from(
    ["[", "]", "{", "}", ",", ":", '"a"', '"b"', "0", "01", "-0", "-", "7", "1.5", "1e2", "2E-1",
     "true", "false", "null", "NaN", "Infinity", "tru", " ", "\t", "\r\n", '"\\u00e9"',
     "9223372036854775807", "9223372036854775808", "-9223372036854775808", "\u00a0", "\u0661"]
)  # fmt: skip


@settings(max_examples=1000, deadline=None)
@given(st.lists(TOKENS, max_size=12))
def test_both_paths_agree_on_token_soup(tokens: list[str]) -> None:
    """Random sequences of JSON tokens (mostly invalid, some valid) get the same outcome."""
    text = "".join(tokens)
    assert outcome(text, scanning=False) == outcome(text, scanning=True)


def scanned(text: str, max_values: int) -> Any:
    """The outcome of a parse that the cheap bound sends to the scanner."""
    try:
        parsed = parse_json(text, "f", 32, max_values)
    except RequestError as exc:
        return (exc.field, exc.problem)
    return (parsed.value, parsed.values, parsed.item_values)


@settings(max_examples=300, deadline=None)
@given(DOCUMENTS, st.lists(st.tuples(st.integers(0, 200), NOISE), max_size=2))
def test_both_paths_accept_and_refuse_the_same_texts(document: Any, edits: Any) -> None:
    """json.loads with the strict hooks and the counting scanner give the same value, the
    same counts and the same refusal for valid and broken texts alike."""
    text = json.dumps(document, ensure_ascii=bool(edits and edits[0][0] % 2))
    for position, fragment in edits:
        position = min(position, len(text))
        text = text[:position] + fragment + text[position:]
    assert outcome(text, scanning=False) == outcome(text, scanning=True)


def test_counts_are_exact() -> None:
    """Containers and scalars are values, object keys are not; arrays report each item."""
    parsed = parse_json('[{"a": [1, "x"], "b": {}}, null, [[]]]', "f", max_values=100)
    assert (parsed.values, parsed.item_values) == (9, (5, 1, 2))
    text = '{"s": ",,,,[[[[{{{{", "n": [1,2]}'
    assert scanned(text, 5) == ({"s": ",,,,[[[[{{{{", "n": [1, 2]}, 5, ())


def test_a_refused_text_is_parsed_no_further_than_the_limit() -> None:
    """1.4 million values are refused after 1,001 have been read: the budget, which is
    charged with the work done, shows it."""
    budget = ValueBudget(10**6, "requests")
    text = "[" + "[]," * 1_400_000 + "[]]"
    with pytest.raises(RequestError) as info:
        parse_json(text, "context_json", 32, 1_000, budget=budget)
    assert (info.value.field, info.value.problem) == (
        "context_json",
        "holds more than 1000 JSON values (the server's limit)",
    )
    assert budget.used == 1_001


def test_an_item_over_its_limit_stops_the_parse_and_is_named() -> None:
    """Items of a root array are bounded one by one; the first one over is named."""
    text = json.dumps([[1, 2], list(range(100_000)), [3]])
    with pytest.raises(RequestError) as info:
        parse_json(text, "entities_json", max_item_values=10)
    assert info.value.field == "entities_json[1]"


def test_the_budget_is_blamed_when_it_binds() -> None:
    """With less budget left than the field's limit, passing it refuses the whole call."""
    budget = ValueBudget(100, "requests", used=95)
    with pytest.raises(ValueBudgetError) as info:
        parse_json("[1,2,3,4,5,6]", "context_json", 32, 50, budget=budget)
    assert info.value.field == "requests"
    assert budget.used > budget.limit


@pytest.mark.parametrize("scanning", [False, True])
def test_depth_is_checked_on_both_paths(scanning: bool) -> None:
    """33 levels are refused, 32 pass, whichever path parses."""
    assert outcome("[" * 32 + "]" * 32, scanning)[1] == 32
    field, problem = outcome("[" * 33 + "]" * 33, scanning)
    assert (field, problem) == ("f", "is nested deeper than 32 levels")


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('{"a": [0, [1, {"b c": ["ok", "\\ud800"]}]]}', 'context_json.a[1][1]["b c"][1]'),
        ('{"a": [{"\\ud800": 1}]}', 'context_json.a[0]["\\ud800"]'),
        (
            '{"x": {"__extn": {"fn": "o", "args": [{"__extn": {"fn": "d", "arg": "\\udc00"}}]}}}',
            "context_json.x.__extn.args[0].__extn.arg",
        ),
        (
            '{"x": [[{"__entity": {"type": "U", "id": "i", "v": 1}}]]}',
            "context_json.x[0][0].__entity",
        ),
    ],
)
def test_error_paths_are_joined_only_when_reported(text: str, field: str) -> None:
    """The walk keeps each container's trail instead of a path string; a refused value is
    still named by its full path, through lists, quoted keys and escapes."""
    with pytest.raises(RequestError) as info:
        parse_context_json(text)
    assert info.value.field == field


def test_a_write_that_is_not_an_array_costs_one_entity_at_most() -> None:
    """PutEntities text that is not an array is refused after one entity's worth of values,
    not parsed in full (4 MiB of an object would keep a worker thread busy for seconds)."""
    text = '{"l": [' + "[]," * 1_000_000 + "[]]}"
    with pytest.raises(RequestError) as info:
        parse_entities_counted(text, "entities_json", 64, 1_000)
    assert (info.value.field, info.value.problem) == (
        "entities_json",
        "holds more than 1000 JSON values (the server's limit)",
    )
    with pytest.raises(RequestError) as info:
        parse_entities_counted('{"uid": 1}', "entities_json", 64, 1_000)
    assert info.value.problem == "must be a JSON array of Cedar entities"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("", "line 1 column 1"),
        ("{", "line 1 column 2"),
        ('{\n  "a": 1,\n  "b" 2\n}', "line 3 column 7"),
        ('{"a": [1,\n 2,,]}', "line 2 column 4"),
        ('{"a": "x\n"}', "line 1 column 9"),
        ('{"a": tru}', "line 1 column 7"),
        ("[1]\n\n  x", "line 3 column 3"),
        ('{"a": "unterminated', "line 1 column 7"),
    ],
)
def test_malformed_json_names_line_and_column(text: str, where: str) -> None:
    """Both paths say where malformed JSON breaks, as line and column (1-based)."""
    expected = ("f", f"is not valid JSON at {where}")
    assert outcome(text, scanning=False) == expected
    assert outcome(text, scanning=True) == expected


def test_large_malformed_json_names_line_and_column() -> None:
    """A text past the C parser's bound (the scanner's path) reports the position too."""
    text = "[" + ",".join(["1"] * (C_PARSE_VALUES + 10)) + ",\n]"
    with pytest.raises(RequestError) as info:
        parse_json(text, "context_json", 32, C_PARSE_VALUES * 2)
    assert info.value.problem == "is not valid JSON at line 2 column 1"
