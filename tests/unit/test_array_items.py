"""``array_items`` parses an array item by item exactly as ``parse_json`` parses it whole: the
same items, and for every malformed text the same refusal at the same line and column."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verdict.errors import RequestError
from verdict.json_values import array_items, parse_json

MAX_DEPTH = 8


def whole(text: str) -> tuple[str, Any]:
    """``parse_json``'s answer: ("ok", value) or ("refused", message)."""
    try:
        return "ok", parse_json(text, "entities", MAX_DEPTH).value
    except RequestError as exc:
        return "refused", str(exc)


def one_by_one(text: str) -> tuple[str, Any] | None:
    """``array_items``' answer in the same form; None when it leaves the text to ``parse_json``."""
    items = array_items(text, "entities", MAX_DEPTH)
    if items is None:
        return None
    try:
        return "ok", list(items)
    except RequestError as exc:
        return "refused", str(exc)


def agree(text: str) -> None:
    expected = whole(text)
    got = one_by_one(text)
    if got is None:  # not an array: parse_json speaks, and never yields a list here
        assert expected[0] == "refused" or not isinstance(expected[1], list), text
        return
    assert got == expected, text


CASES = [
    "[]",
    " [ ] ",
    '[{"uid": {"type": "A", "id": "a"}, "attrs": {}, "parents": []}]',
    '[\n  {"a": 1},\n  {"b": [1, 2, {"c": null}]}\n]\n',
    "[1, 2, 3]",
    "[1 2]",
    "[1,]",
    "[,1]",
    "[1,,2]",
    "[1]]",
    "[1] x",
    "[1",
    "[",
    "[{",
    '[{"a": 1, "a": 2}]',
    "[1.5]",
    "[NaN]",
    "[99999999999999999999]",
    "[[[[[[[[[[1]]]]]]]]]]",
    "[[[[[[[[1]]]]]]]]",
    "[" + "[" * 5000 + "]" * 5000 + "]",
    '["\\ud800"]',
    '["a\\u0000b"]',
    "\ufeff[1]",
    "",
    "   ",
    "{}",
    '"text"',
    "[true, false, null]",
    "[tru]",
    '[{"k": "v"} {"k": "v"}]',
    "[\t1\r\n,\r\n2\t]",
]


@pytest.mark.parametrize("text", CASES)
def test_array_items_agrees_with_the_whole_parse(text: str) -> None:
    agree(text)


def test_a_refusal_inside_a_later_item_names_its_line_and_column() -> None:
    text = '[\n {"a": 1},\n {"b": 2 3}\n]'
    items = array_items(text, "entities", MAX_DEPTH)
    assert items is not None
    taken = iter(items)
    assert next(taken) == {"a": 1}  # the first item is handed on before the second is read
    with pytest.raises(RequestError) as info:
        next(taken)
    assert str(info.value) == whole(text)[1]
    assert str(info.value) == "entities: is not valid JSON at line 3 column 10"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(
    items=st.lists(json_values, max_size=5),
    indent=st.sampled_from([None, 0, 2]),
    cut=st.integers(0, 10_000),
    insert=st.sampled_from(["", ",", "]", "[", "{", "}", " ", ":", '"', "1.0", "x"]),
)
def test_array_items_agrees_on_generated_and_mangled_texts(
    items: list[Any], indent: int | None, cut: int, insert: str
) -> None:
    """Valid arrays of every JSON kind (integers past 64 bits, nesting past the limit), and the
    same text with one character sequence inserted or one character dropped anywhere."""
    text = json.dumps(items, indent=indent)
    agree(text)
    at = cut % (len(text) + 1)
    agree(text[:at] + insert + text[at:])
    agree(text[:at] + text[at + 1 :])
