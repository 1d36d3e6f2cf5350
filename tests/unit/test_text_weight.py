"""text_weight counts what the Redis slice script counts: UTF-8 bytes and the characters that
start a JSON value or key ([ { , :), on any text."""

from __future__ import annotations

from hypothesis import given
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
