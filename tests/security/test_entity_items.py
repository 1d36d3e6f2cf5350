"""``entity_items`` (json's decoder without hooks, a chunk at a time, proven or read
strictly) against the strict parse it replaces in ``verdict entities load``: for every file,
the same entities with the same stored text, or the same refusal naming the same item. The
fast reading drops the strict parse's hooks (duplicate keys, floats, integers past 64 bits,
depth), so a file that slips one past it would be loaded with a value Cedar never checked the
way Verdict did."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verdict import entity_items as entity_items_module
from verdict.entities_load import PartChecks, shape_items
from verdict.entity_items import entity_items
from verdict.errors import RequestError
from verdict.json_values import (
    FLOAT_PROBLEM,
    LONG_PROBLEM,
    ArrayItems,
    array_items,
    guess_item_start,
)
from verdict.store.entity_file import EntityShaper
from verdict.store.parent_graph import HierarchyLimits

MAX_DEPTH = 64
Outcome = tuple[str, Any]


@contextlib.contextmanager
def chunks_of(chars: int) -> Iterator[None]:
    """Chunks of about ``chars`` characters (the real ones hold ~1,000 entities)."""
    saved = entity_items_module.CHUNK_CHARS
    entity_items_module.CHUNK_CHARS = chars
    try:
        yield
    finally:
        entity_items_module.CHUNK_CHARS = saved


def strict(text: str, stop: int | None = None) -> Outcome:
    """What the load did before: the strict parse, each item shaped in turn."""
    items = array_items(text, "entities", MAX_DEPTH, stop=stop)
    if items is None:
        return "not an array", None
    return _shaped(lambda shaper: [shaper.add(item) for item in items], lambda: items.aligned)


def fast(text: str, stop: int | None = None) -> Outcome:
    """What the load does now: ``entity_items`` through the load's own ``shape_items``."""
    items = entity_items(text, "entities", MAX_DEPTH, stop=stop)
    if items is None:
        return "not an array", None
    checks = PartChecks(None, threads=1)
    try:
        return _shaped(
            lambda shaper: shape_items(items, shaper, checks, _NO_LIMITS), lambda: items.aligned
        )
    finally:
        checks.close()


_NO_LIMITS = HierarchyLimits(10_000, 10_000)


def _shaped(run: Callable[[EntityShaper], object], aligned: Callable[[], bool | None]) -> Outcome:
    shaper = EntityShaper("entities", keep_text=True)
    try:
        run(shaper)
    except RequestError as exc:
        return "refused", (exc.field, exc.problem)
    found = [(uid, entity.json, entity.text) for uid, entity in shaper.entities.items()]
    return "ok", (found, aligned())


def agree(text: str, chars: int = 40) -> Outcome:
    with chunks_of(chars):
        expected = strict(text)
        assert fast(text) == expected, text
        offset = guess_item_start(text, len(text) // 2)
        if offset is not None:
            assert fast(text, stop=offset) == strict(text, stop=offset), (text, offset)
    return expected


def entity(i: int, attrs: str = '{"n": 1}', parents: str = "[]") -> str:
    return f'{{"uid": {{"type": "User", "id": "u{i}"}}, "attrs": {attrs}, "parents": {parents}}}'


def array(*items: str) -> str:
    return "[" + ", ".join(items) + "]"


PLAIN = [entity(i) for i in range(6)]


def refusal_at(text: str) -> tuple[str, str]:
    outcome = agree(text)
    assert outcome[0] == "refused", outcome
    return outcome[1]  # type: ignore[no-any-return]


# --- What the fast reading cannot see, refused as the strict parse refuses it ---------------


@pytest.mark.parametrize(
    "attrs",
    [
        '{"n": 1, "n": 2}',  # kept: the last
        '{"n": "a:b", "n": 2}',  # the dropped value held a colon
        '{"n": 2, "n": "a:b"}',
        '{"r": {"x": 1, "x": 1}}',  # deep, and equal
        '{"l": [{"x": 1}, {"x": 1, "x": 1}]}',
    ],
)
def test_a_duplicate_key_anywhere_is_refused_as_the_strict_parse_refuses_it(attrs: str) -> None:
    field, problem = refusal_at(array(*PLAIN[:3], entity(9, attrs), *PLAIN[3:]))
    assert (field, problem) == ("entities", "repeats a key within one object")


def test_a_duplicate_key_spelled_with_an_escape_is_refused() -> None:
    """``\\u003a`` spells a colon the count would miss: such chunks are read strictly."""
    attrs = '{"n": 1, "n": "\\u003a"}'
    assert refusal_at(array(*PLAIN, entity(9, attrs), *PLAIN)) == (
        "entities",
        "repeats a key within one object",
    )


@pytest.mark.parametrize(
    ("attrs", "problem"),
    [
        ('{"n": 1.5}', FLOAT_PROBLEM),
        ('{"n": 1e3}', FLOAT_PROBLEM),
        ('{"n": [1, 2, 0.0]}', FLOAT_PROBLEM),
        ('{"n": {"__extn": {"fn": "decimal", "arg": 1.0}}}', FLOAT_PROBLEM),
        ('{"n": 9223372036854775808}', LONG_PROBLEM),  # orjson: an int past 64 bits
        ('{"n": -9223372036854775809}', LONG_PROBLEM),  # orjson: a float
        ('{"n": 18446744073709551616}', LONG_PROBLEM),  # orjson: a float
    ],
)
def test_numbers_cedar_has_not_are_refused_with_the_strict_parses_words(
    attrs: str, problem: str
) -> None:
    assert refusal_at(array(*PLAIN, entity(9, attrs), *PLAIN)) == ("entities", problem)


def test_a_float_where_a_string_belongs_is_a_float_not_a_bad_id() -> None:
    """The walk would say "id must be a string"; the strict parse finds the float first."""
    item = '{"uid": {"type": "User", "id": 1.5}, "attrs": {}, "parents": []}'
    assert refusal_at(array(*PLAIN, item)) == ("entities", FLOAT_PROBLEM)


def test_nesting_past_the_limit_is_refused_as_the_strict_parse_refuses_it() -> None:
    deep = "[" * 70 + "]" * 70
    field, problem = refusal_at(array(*PLAIN, entity(9, f'{{"d": {deep}}}')))
    assert field == "entities"
    assert "nest" in problem
    # and a float inside the deep item is what the strict parse finds first
    deep_float = "[" * 70 + "1.5" + "]" * 70
    assert refusal_at(array(*PLAIN, entity(9, f'{{"d": {deep_float}}}'))) == (
        "entities",
        FLOAT_PROBLEM,
    )


def test_many_brackets_but_shallow_is_accepted() -> None:
    parents = json.dumps([{"type": "Group", "id": f"g{i}"} for i in range(100)])
    outcome = agree(array(*PLAIN, entity(9, parents=parents), entity(10), entity(11)))
    assert outcome[0] == "ok"


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        " [ ] ",
        "",
        "{}",
        array(*PLAIN) + " x",
        array(*PLAIN) + "]",
        array(*PLAIN)[:-1],
        array(*PLAIN[:3], "1", *PLAIN[3:]),
        array(*PLAIN[:3], entity(0), *PLAIN[3:]),  # a duplicate entity
        array(*PLAIN, '{"uid": {"type": "User", "id": "\\ud800"}, "attrs": {}, "parents": []}'),
        array(*PLAIN, entity(9, '{"n": NaN}')),
        array(*PLAIN, entity(9, '{"n" : 1, "m"\t:2}')),  # spaces before colons: fine
        array(*PLAIN, entity(9, '{"n": "é:ü", "k": "\\n\\"x\\":"}')),
        array(*PLAIN, entity(9, '{"__entity": {"type": "User", "id": "u0"}}')),
        array(*PLAIN, entity(9, '{"n": 1}').replace('"parents"', '"bogus"')),
        # looks like entities inside an attribute: a guessed chunk end inside an item
        array(*PLAIN, entity(9, "{" + f'"list": [{entity(20)}, {entity(21)}]' + "}"), *PLAIN),
        "[\n" + ",\n".join(PLAIN) + "\n]\n",
    ],
)
def test_edge_files_get_the_strict_answer(text: str) -> None:
    for chars in (0, 1, 40, 200, 10_000):
        agree(text, chars)


def test_the_fast_reading_is_what_reads_an_ordinary_file() -> None:
    """A guard against a fast path silently never taken: of 2,000 plain entities, all but
    the last chunk's come with their stored text made by the fast reading."""
    text = array(*(entity(i, '{"n": 1, "note": "a: b"}') for i in range(2_000)))
    with chunks_of(4_000):
        items = entity_items(text, "entities", MAX_DEPTH)
        assert items is not None
        fast_items = sum(items.last_text is not None for _ in items)
    assert fast_items >= 1_900
    assert fast(text) == strict(text)


def test_a_strict_stretch_pauses_at_the_first_item_past_its_mark() -> None:
    text = array(*PLAIN)
    mark = text.index(PLAIN[3]) - 3  # inside item 2's spacing: the pause is item 3's start
    items = ArrayItems(text, 1, "entities", MAX_DEPTH, pause=mark)
    assert len(list(items)) == 3
    assert items.paused_at == text.index(PLAIN[3])
    done = ArrayItems(text, 1, "entities", MAX_DEPTH, pause=len(text))
    assert len(list(done)) == 6
    assert done.paused_at is None


# --- Generated files --------------------------------------------------------------------------


@dataclass(frozen=True)
class Obj:
    """A JSON object as written: its pairs, a key possibly twice."""

    pairs: tuple[tuple[str, Any], ...]


KEYS = st.sampled_from(["n", "a", "b", "type", "id", "__entity", "fn", "arg", "é:", 'q"'])
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.integers(min_value=-5, max_value=5)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.sampled_from('ab:"\\{}[],é\u2028 \n'), max_size=6)
)
VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=3).map(list)
        | st.lists(st.tuples(KEYS, children), max_size=3).map(lambda p: Obj(tuple(p)))
    ),
    max_leaves=12,
)


@st.composite
def entity_values(draw: st.DrawFn) -> Obj:
    uid = Obj((("type", draw(st.sampled_from(["User", "Loan", "bad type"]))), ("id", draw(
        st.sampled_from(["a", "b", "c", "d:e"]) | st.integers(0, 3)
    ))))  # fmt: skip
    attrs = draw(st.lists(st.tuples(KEYS, VALUES), max_size=4))
    pairs: list[tuple[str, Any]] = [("uid", uid), ("attrs", Obj(tuple(attrs))), ("parents", [])]
    if draw(st.booleans()):
        pairs.append(draw(st.sampled_from([("attrs", Obj(())), ("tags", Obj(())), ("x", 1)])))
    return Obj(tuple(draw(st.permutations(pairs))))


@dataclass(frozen=True)
class Spelling:
    colon: str
    comma: str
    ascii: bool
    escaped_colons: bool  # ":" inside strings written as \u003a


def write_string(value: str, spelling: Spelling) -> str:
    written = json.dumps(value, ensure_ascii=spelling.ascii)
    return written.replace(":", "\\u003a") if spelling.escaped_colons else written


def write(value: Any, spelling: Spelling) -> str:
    if isinstance(value, Obj):
        members = (
            write_string(key, spelling) + spelling.colon + write(item, spelling)
            for key, item in value.pairs
        )
        return "{" + spelling.comma.join(members) + "}"
    if isinstance(value, list):
        return "[" + spelling.comma.join(write(item, spelling) for item in value) + "]"
    if isinstance(value, str):
        return write_string(value, spelling)
    return json.dumps(value)


SPELLINGS = st.builds(
    Spelling,
    colon=st.sampled_from([":", ": ", " : ", "\n:"]),
    comma=st.sampled_from([",", ", ", ",\n  "]),
    ascii=st.booleans(),
    escaped_colons=st.booleans(),
)


@settings(
    max_examples=600,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    items=st.lists(entity_values(), max_size=12),
    spelling=SPELLINGS,
    chars=st.integers(min_value=0, max_value=400),
    tail=st.sampled_from(["", " ", "\n", " x", "]", ","]),
)
def test_generated_files_get_the_strict_answer(
    items: list[Obj], spelling: Spelling, chars: int, tail: str
) -> None:
    text = "[" + spelling.comma.join(write(item, spelling) for item in items) + "]" + tail
    agree(text, chars)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    count=st.integers(min_value=1, max_value=30),
    broken=st.integers(min_value=0, max_value=29),
    attrs=st.sampled_from(
        [
            '{"n": 1, "n": 1}',
            '{"n": 0.5}',
            '{"n": 9223372036854775807}',
            '{"n": -9223372036854775808}',
            '{"n": 9223372036854775808}',
            '{"s": "\\u0041:"}',
            '{"n": 1, "n": "\\u003a"}',
            '{"n": "\\u003a", "n": 1}',
            '{"s": "\\ud83d\\ude00"}',
            '{"s": "\\udc00"}',
            '{"r": ' + "[" * 63 + "]" * 63 + "}",
            '{"r": ' + "[" * 62 + "]" * 62 + "}",
        ]
    ),
    chars=st.integers(min_value=0, max_value=600),
)
def test_one_odd_item_among_plain_ones_gets_the_strict_answer(
    count: int, broken: int, attrs: str, chars: int
) -> None:
    items = [entity(i) for i in range(count)]
    items.insert(min(broken, count), entity(999, attrs))
    agree(array(*items), chars)


def count_strict_items(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A one-item list counting the items read strictly again from here on."""
    count = [0]
    strict_item = entity_items_module.EntityItems._strict_item

    def counted(self: entity_items_module.EntityItems, start: int, position: int) -> Any:
        count[0] += 1
        return strict_item(self, start, position)

    monkeypatch.setattr(entity_items_module.EntityItems, "_strict_item", counted)
    return count


def test_a_reading_that_disagrees_makes_the_rest_strict(monkeypatch: pytest.MonkeyPatch) -> None:
    """Should the fast reading ever differ from the strict one (it must not; a wrong reading
    is simulated here: every chunk read with a float in each item), the item the walk refuses
    is read strictly and accepted, and the rest of the file is read strictly: the strict
    answer, with one item read twice, not every item (round 26: a poisoned key cache had
    every item re-read, ~n^2/2 parses a chunk)."""
    real = entity_items_module._fast_chunk

    def misread(chunk: str) -> tuple[list[Any], list[str]] | None:
        fast_chunk = real(chunk)
        if fast_chunk is None:
            return None
        items, texts = fast_chunk
        return [{**item, "attrs": {"n": 0.5}} for item in items], texts

    monkeypatch.setattr(entity_items_module, "_fast_chunk", misread)
    rereads = count_strict_items(monkeypatch)
    text = array(*(entity(i) for i in range(300)))
    with chunks_of(2_000):
        assert fast(text) == strict(text)
    assert rereads == [1]


def test_a_depth_walk_that_disagrees_makes_the_rest_strict(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same for the depth check: were it to call an item too deep that the strict parse
    reads whole (it must not: both walk with one function), the strict item is the answer and
    the rest is read strictly, one item read twice."""
    monkeypatch.setattr(entity_items_module, "_within", lambda item, max_depth: False)
    rereads = count_strict_items(monkeypatch)
    parents = json.dumps([{"type": "Group", "id": f"g{i}"} for i in range(70)])
    text = array(*(entity(i, parents=parents) for i in range(200)))
    with chunks_of(20_000):
        assert fast(text) == strict(text)
    assert rereads == [1]
