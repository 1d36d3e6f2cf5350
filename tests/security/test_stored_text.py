"""A bulk load stores a one-line item's text as written: it must mean what the checked entity means.

``verdict entities load`` keeps each one-line item's own text instead of serialising the
parsed entity again (store/entity_file.py, ``storable_text``). The text is what Redis holds,
what Cedar checks (per kind) and what a decision later decodes, so it must decode to the very
entity the strict parse checked, for Python's reader and for Cedar's alike. Items are
generated with what spells one value several ways: escapes (``\\u0041``, ``\\/``, surrogate
pairs), ``-0``, spacing, non-ASCII text, references, records and sets; and with what the
strict parse refuses (duplicate keys, floats, lone surrogates, long integers), which must
never reach storage.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, cast

import cedarpy
from hypothesis import given, settings
from hypothesis import strategies as st

from verdict.entities_load import PartChecks, parse_in_parts
from verdict.errors import RequestError
from verdict.store.entity_file import DEFAULT_HIERARCHY
from verdict.store.weight import entity_text, text_weight

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
    """An entity and one of its one-line spellings."""
    entity = draw(ENTITIES)
    text = json.dumps(
        entity,
        ensure_ascii=draw(st.booleans()),  # \\uXXXX escapes (surrogate pairs for 😀)
        separators=draw(st.sampled_from([(",", ":"), (", ", ": "), (" ,  ", " :\t")])),
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
    """The one entity of the one-line array ``text`` as a bulk load stores it (None: the
    strict parse refused it)."""
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
def test_a_stored_one_line_text_means_the_entity_checked(
    spelling: tuple[dict[str, Any], str],
) -> None:
    entity, text = spelling
    kept = stored(text)
    canonical = entity_text(entity)
    # Stored as written (every spelling here is valid and on one line), but for a -0.
    assert kept == (canonical if re.search(r"-0(?![0-9])", text) else text)
    assert json.loads(kept) == json.loads(canonical) == entity  # Python's reader
    assert cedar_reading(f"[{kept}]") == cedar_reading(f"[{canonical}]")  # and Cedar's
    assert text_weight(kept).values == text_weight(canonical).values


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
