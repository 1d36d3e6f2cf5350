"""text_weight counts what the Redis slice script counts: UTF-8 bytes and the characters that
start a JSON value or key ([ { , :), on any text."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from verdict.model import EntityUid
from verdict.store.base import StoredEntity
from verdict.store.weight import STRUCTURAL, Weight, entity_text, json_weight, text_weight


@given(st.text())
def test_text_weight_is_bytes_and_structural_characters(text: str) -> None:
    expected = Weight(
        len(text.encode("utf-8", "surrogatepass")), sum(text.count(c) for c in STRUCTURAL)
    )
    assert text_weight(text) == expected


def test_an_entity_weighs_its_stored_text() -> None:
    entity = {"uid": {"type": "Partner", "id": "p"}, "attrs": {"n": "é", "l": [1, 2]}}
    text = entity_text(entity)
    assert text == '{"uid":{"type":"Partner","id":"p"},"attrs":{"n":"é","l":[1,2]}}'
    # 3 "{", 1 "[", 4 ",", 6 ":"; "é" is two bytes
    assert text_weight(text) == Weight(len(text) + 1, 3 + 1 + 4 + 6)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)  # past 64 bits: orjson refuses, json writes
    | st.text(alphabet=st.characters(codec=None), max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=15,
)


@settings(max_examples=500)
@given(JSON_VALUES)
def test_the_stored_text_is_compact_json_dumps_without_ascii_escapes(value: object) -> None:
    """orjson writes what json.dumps(ensure_ascii=False, separators=(",", ":")) writes
    (controls, quotes, DEL, line separators, non-ASCII included), and json writes what orjson
    refuses (lone surrogates, integers past 64 bits), in the same form."""
    expected = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    assert entity_text(value) == expected


def test_a_stored_entity_made_with_its_text_is_the_one_its_constructor_makes() -> None:
    """``StoredEntity.with_text`` (a bulk load's) equals the dataclass's own construction and
    weighs its text; a memory store's entity is weighed when made, a given weight is kept."""
    entity = {"uid": {"type": "A", "id": "a"}, "attrs": {"n": [1, {"k": "é"}]}, "parents": []}
    uid, refs, text = EntityUid("A", "a"), frozenset({EntityUid("B", "b")}), '{"x": [1]}'
    fast = StoredEntity.with_text(uid, entity, refs, text)
    made = StoredEntity(uid, entity, refs, text=text)
    assert fast == made
    assert repr(fast) == repr(made)
    assert (fast.uid, fast.json, fast.refs, fast.text) == (made.uid, entity, refs, text)
    assert fast.weight == made.weight == text_weight(text)
    assert fast.parents == made.parents == ()
    plain = StoredEntity(uid, entity, refs)
    assert plain.__dict__["weight"] == json_weight(entity)  # weighed when made
    assert StoredEntity(uid, entity, refs, Weight(7, 9)).weight == Weight(7, 9)
