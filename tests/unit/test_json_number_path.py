"""A refused number in a context is named by its attribute, and it is the one the strict parse
refused: the first in document order, never one after an earlier refusal of another kind."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verdict.cedar_json import child_path, parse_context_json
from verdict.errors import RequestError
from verdict.json_number_path import refused_number_path
from verdict.json_values import C_PARSE_VALUES


def refusal(text: str) -> str:
    with pytest.raises(RequestError) as info:
        parse_context_json(text)
    assert info.value.field == "context_json"
    return info.value.problem


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"mfa": 1.5}', "attribute mfa contains a fractional number"),
        ('{"a": 1, "geo": {"x": [1, 2e3]}}', "attribute geo.x[1] contains a fractional number"),
        ('{"x y": {"n": -9223372036854775809}}', 'attribute ["x y"].n contains an integer'),
        ('{"a": [{"b": NaN}]}', "attribute a[0].b contains NaN or Infinity"),
        # The first in document order, as the strict parse meets them.
        ('{"a": 2.5, "b": 1e400}', "attribute a contains a fractional number"),
        ('{"a": 99999999999999999999, "b": 1.5}', "attribute a contains an integer outside"),
    ],
)
def test_the_refused_number_is_named_by_its_attribute(text: str, problem: str) -> None:
    assert refusal(text).startswith(problem)


def test_values_are_never_shown() -> None:
    """The number itself (it may be loan data) is not in the message."""
    assert "123.456" not in refusal('{"amount": 123.456}')


def test_a_repeated_key_closed_first_is_refused_as_such() -> None:
    """An inner object's repeated key closes before a later float: the strict parse refuses
    the repeat, and no attribute is named for a number it never reached."""
    assert refusal('{"a": {"k": 1, "k": 2}, "b": 1.5}') == "repeats a key within one object"


def test_a_number_before_a_repeat_in_its_own_object_is_the_refusal() -> None:
    """Within one object the number is read before the object closes: it is the refusal."""
    problem = refusal('{"k": 1.5, "k": 2}')
    assert problem.startswith("attribute k contains a fractional number")


def test_no_attribute_outside_a_record() -> None:
    """A top-level array is not a context: the plain refusal, no made-up attribute."""
    assert refusal("[1.5]").startswith("contains a fractional number")


def test_a_context_too_large_to_read_twice_keeps_the_plain_refusal() -> None:
    """Past json.loads' one-go size the error path does not parse a second time."""
    text = '{"a": [' + ",".join(["1"] * C_PARSE_VALUES) + '], "b": 1.5}'
    assert refusal(text).startswith("contains a fractional number")


def test_not_json_has_no_path() -> None:
    assert refused_number_path("{", child_path) is None
    assert refused_number_path('{"a": 1}', child_path) is None


scalars = st.one_of(st.booleans(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=5))
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=6), documents, min_size=1, max_size=4), st.data())
def test_the_named_path_leads_to_the_float_that_was_put_there(
    context: dict[str, object], data: st.DataObject
) -> None:
    """Put one float somewhere in a valid context: the message names exactly that place."""
    path, place = _random_place(context, data)
    _set(context, place, 0.5)
    problem = refusal(json.dumps(context))
    assert problem == f"attribute {path} contains a fractional number; Cedar has no floats " + (
        "(use decimal)"
    )


def _random_place(context: dict[str, object], data: st.DataObject) -> tuple[str, list[str | int]]:
    """A path into ``context`` (its display form and its steps) to a value to replace."""
    value: object = context
    shown, steps = "", []
    while True:
        if isinstance(value, dict) and value:
            key = data.draw(st.sampled_from(sorted(value)))
            shown, value = child_path(shown, key), value[key]
            steps.append(key)
        elif isinstance(value, list) and value and steps:
            index = data.draw(st.integers(0, len(value) - 1))
            shown, value = f"{shown}[{index}]", value[index]
            steps.append(index)
        else:
            return shown.removeprefix("."), steps
        if not data.draw(st.booleans()):
            return shown.removeprefix("."), steps


def _set(document: object, steps: list[str | int], new: object) -> None:
    for step in steps[:-1]:
        document = document[step]  # type: ignore[index]
    document[steps[-1]] = new  # type: ignore[index]


def test_an_integer_of_thousands_of_digits_is_named_without_converting_it() -> None:
    """Past 19 digits the re-read refuses without int() (quadratic in the digits; Python
    refuses 4,300 and more): the attribute is named all the same."""
    huge = ",".join(["9" * 4300] * 20)  # 4,300 digits: the most int() converts
    assert refusal('{"a": 1.5, "b": [' + huge + "]}").startswith("attribute a contains a frac")
    assert refusal('{"n": -' + "9" * 20 + "}").startswith("attribute n contains an integer")
    assert refused_number_path('{"n": ' + "9" * 5000 + "}", child_path) == "n"


def test_a_path_deeper_than_the_depth_limit_is_not_named() -> None:
    """A number 33 levels down (past the context's depth limit of 32) keeps the plain text,
    and so does a path that would be longer than MAX_PATH_CHARS."""
    deep = '{"a": ' * 33 + "1.5" + "}" * 33
    assert refusal(deep).startswith("contains a fractional number")
    at_the_limit = '{"a": ' * 32 + "1.5" + "}" * 32
    assert refusal(at_the_limit).startswith("attribute " + ".".join(["a"] * 32) + " contains")
    long_keys = "".join('{"' + letter * 64 + '": ' for letter in "kqzw") + "1.5" + "}" * 4
    assert refusal(long_keys).startswith("contains a fractional number")


def test_a_deep_container_before_a_shallow_float_names_nothing_rather_than_the_wrong_one() -> None:
    """The search stops at the depth limit instead of skipping what lies below it: a float
    down there may be the one the strict parse refused, so no later float is named."""
    text = '{"a": ' + '{"b": ' * 33 + "1.5" + "}" * 33 + ', "c": 2.5}'
    assert refusal(text).startswith("contains a fractional number")
