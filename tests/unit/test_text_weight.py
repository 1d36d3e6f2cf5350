"""text_weight counts what the Redis slice script counts: UTF-8 bytes and the characters that
start a JSON value or key ([ { , :), on any text."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from verdict.store.weight import STRUCTURAL, Weight, entity_text, text_weight


@given(st.text())
def test_text_weight_is_bytes_and_structural_characters(text: str) -> None:
    expected = Weight(
        len(text.encode("utf-8", "surrogatepass")), sum(text.count(c) for c in STRUCTURAL)
    )
    assert text_weight(text) == expected


def test_an_entity_weighs_its_stored_text() -> None:
    entity = {"uid": {"type": "Partner", "id": "p"}, "attrs": {"n": "é", "l": [1, 2]}}
    text = entity_text(entity)
    assert text == '{"uid": {"type": "Partner", "id": "p"}, "attrs": {"n": "é", "l": [1, 2]}}'
    # 3 "{", 1 "[", 4 ",", 6 ":"; "é" is two bytes
    assert text_weight(text) == Weight(len(text) + 1, 3 + 1 + 4 + 6)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.text(alphabet=st.characters(codec=None), max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=15,
)


@settings(max_examples=500)
@given(JSON_VALUES)
def test_the_stored_text_is_json_dumps_without_ascii_escapes(value: object) -> None:
    """The encoder made once writes what json.dumps(ensure_ascii=False) writes (controls,
    quotes, non-ASCII and lone surrogates included)."""
    assert entity_text(value) == json.dumps(value, ensure_ascii=False)
