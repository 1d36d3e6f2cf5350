"""A bulk load stores one serialisation of each entity, whatever the file spells, as checked.

``verdict entities load`` stores each entity as ``entity_text`` of what the strict parse decoded
(compact JSON, non-ASCII as it is), never the item's own text in the file: for a while it kept
one-line items as written, and then what an entity weighs in a slice (its stored bytes and
``[{,:`` characters) depended on the file's spacing and escapes (attack round 25, finding 1),
and Cedar, which checks one stored text per kind, read a ``-0`` the file spelled as a float
where Python reads 0. Items are generated with what spells one value several ways: escapes
(``\\u0041``, ``\\/``, surrogate pairs), ``-0``, spacing, non-ASCII text, references, records and
sets. The stored text is the same for every spelling, decodes to the entity in Python and in
Cedar, and weighs what the memory store and PutEntities weigh; what the strict parse refuses
(duplicate keys, floats, lone surrogates, long integers) never reaches storage.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, cast

import cedarpy
from hypothesis import given, settings
from hypothesis import strategies as st

from verdict.entities_load import PartChecks, parse_in_parts
from verdict.errors import RequestError
from verdict.store.entity_file import DEFAULT_HIERARCHY, read_entities_file
from verdict.store.weight import entity_text, json_weight, text_weight

STRINGS = st.one_of(
    st.sampled_from(["", "a", 'q"uote', "back\\slash", "ü", "😀", "\u2028", "tab\there", "/"]),
    st.text(max_size=6),
)
SCALARS = st.one_of(STRINGS, st.integers(-(2**63), 2**63 - 1), st.booleans(), st.just(0))
REFERENCE = st.builds(
    lambda t, i: {"__entity": {"type": t, "id": i}}, st.sampled_from(["A", "B::C"]), STRINGS
)
VALUES = st.recursive(
    st.one_of(SCALARS, REFERENCE),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["k", "ü", "x y", "n"]), inner, max_size=3),
    ),
    max_leaves=8,
)
ENTITIES = st.builds(
    lambda i, attrs, parents: {
        "uid": {"type": "A", "id": i},
        "attrs": attrs,
        "parents": [{"type": "B::C", "id": p} for p in parents],
    },
    STRINGS,
    st.dictionaries(st.sampled_from(["name", "n", "ref", "rec", "ü"]), VALUES, max_size=4),
    st.lists(STRINGS, max_size=2, unique=True),
)


@st.composite
def spellings(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """An entity and one of its spellings."""
    entity = draw(ENTITIES)
    text = json.dumps(
        entity,
        ensure_ascii=draw(st.booleans()),  # \\uXXXX escapes (surrogate pairs for 😀)
        separators=draw(st.sampled_from([(",", ":"), (", ", ": "), (" ,  ", " :\t")])),
        indent=draw(st.sampled_from([None, None, 2])),
    )
    if draw(st.booleans()):
        text = text.replace("/", "\\/")  # an escaped solidus inside strings
    if draw(st.booleans()):
        text = re.sub(r"(?<=[:\[,]) ?0(?=[,\]}])", "-0", text)  # -0 for some zeros
    return entity, text


def cedar_reading(text: str) -> Any:
    """Cedar's rendering of the entities it parsed from ``text``, every list sorted (Cedar's
    sets render in no fixed order); None when it refused them."""
    try:
        rendered = str(cedarpy.Entities.from_json_str(text))
    except ValueError:
        return None
    return _sorted(json.loads(rendered))


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _sorted(item) for key, item in value.items()}
    if isinstance(value, list):
        return sorted((_sorted(item) for item in value), key=json.dumps)
    return value


def stored(text: str) -> str | None:
    """The one entity of the array ``[text]`` as a bulk load stores it (None: the strict parse
    refused it)."""
    try:
        (entity,) = parse_in_parts(f"[{text}]", cast(PartChecks, _NoChecks()), DEFAULT_HIERARCHY)
    except RequestError:
        return None
    assert entity.text is not None
    return entity.text


class _NoChecks:
    def submit(self, entities: Any) -> None:
        return None


# VERDICT_STORED_TEXT_EXAMPLES=20000 for a longer run.
@settings(max_examples=int(os.environ.get("VERDICT_STORED_TEXT_EXAMPLES", "800")), deadline=None)
@given(spelling=spellings())
def test_every_spelling_is_stored_as_one_text_meaning_the_entity_checked(
    spelling: tuple[dict[str, Any], str],
) -> None:
    entity, text = spelling
    kept = stored(text)
    canonical = entity_text(entity)
    assert kept == canonical  # one text, whatever the spelling
    assert text_weight(kept) == json_weight(entity)  # as the memory store and PutEntities weigh
    assert json.loads(kept) == entity  # Python's reader
    # Cedar reads the stored text as the entity (as json.dumps' escaped spelling of it).
    assert cedar_reading(f"[{kept}]") == cedar_reading(f"[{json.dumps(entity)}]")


REFUSED = [
    '{"uid":{"type":"A","id":"x"},"attrs":{"n":1,"n":2},"parents":[]}',
    '{"uid":{"type":"A","id":"x","id":"y"},"attrs":{},"parents":[]}',
    '{"uid":{"type":"A","id":"x"},"attrs":{"n":1.5},"parents":[]}',
    '{"uid":{"type":"A","id":"x"},"attrs":{"n":1e2},"parents":[]}',
    '{"uid":{"type":"A","id":"x"},"attrs":{"n":9223372036854775808},"parents":[]}',
    '{"uid":{"type":"A","id":"\\ud800"},"attrs":{},"parents":[]}',
    '{"uid":{"type":"A","id":"x"},"attrs":{"n":"\\udfff"},"parents":[]}',
    '{"uid":{"type":"A","id":"x"},"attrs":{"n":NaN},"parents":[]}',
    '{"uid":{"type":"A","id":"x"},"attrs":{"__entity":{"type":"A","id":"y"}},"parents":[]}',
]


def test_what_readers_could_read_two_ways_is_never_stored() -> None:
    for text in REFUSED:
        assert stored(text) is None, text


def test_a_minus_zero_is_read_alike_by_a_load_and_by_a_servers_memory_store(
    tmp_path: Path,
) -> None:
    """Cedar reads ``-0`` as a float, Python as 0. A server's memory store asked Cedar about
    the file's own text and refused it ("entities do not parse") where ``entities load``,
    which asks Cedar about the stored text, accepted it (attack round 25's note): both now
    ask about the one serialisation of what was parsed, and both read 0."""
    text = '{"uid":{"type":"A","id":"a"},"attrs":{"n":-0,"s":[-0],"r":{"k":-0}},"parents":[]}'
    path = tmp_path / "entities.json"
    path.write_text(f"[{text}]")
    (served,) = read_entities_file(path, None).values()
    assert served.json["attrs"] == {"n": 0, "s": [0], "r": {"k": 0}}
    assert stored(text) == entity_text(served.json)
