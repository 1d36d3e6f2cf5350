"""Attack round 26: ``verdict entities load`` reads its file with orjson, a chunk at a time.

``entity_items.EntityItems`` replaced the strict parse (``json_values.ArrayItems``) in the load:
orjson reads chunks of ~256 KB (ends guessed by ``guess_item_start``), and a chunk is taken
only when proven to read as the strict parse reads it (no ``\\u``, as many ``:`` in the chunk
as in its items' stored forms, the walk for floats and 64-bit integers, brackets for depth),
else it is read strictly. The claim: for every file, the same entities (the same Python values,
the same stored text) or the same refusal (field and problem) as the strict parse. Attacked as
the author of an entities file (a partner bank uploading entity data): duplicate keys whose
colons balance, escapes near colons, guesses fooled at every item, numbers at and past the
64-bit edges, Unicode and BOMs, depth around the limit, odd structure, every ``stop`` offset
(the halves path), the re-reads it may be made to do, and the real command end to end.

The differential oracles are ``strict`` (tests/security/test_entity_items.py: the strict parse,
each item shaped) and ``fast_read`` (``entity_items`` through the load's own ``shape_items``,
without Cedar's threads). orjson keeps a process-wide cache of object keys, so every file
holding a colliding key is read in a fresh interpreter: it must never reach this process.

Findings (all four fixed: the chunks are read by json's C decoder without hooks, which
compares keys by their text; its stored forms are made under the same guard; a divergence
makes the rest strict; ``error_line`` places a refusal in a file nested past the interpreter's
limit by its index):

1. orjson's key cache makes a key read as another key. orjson 3.13 caches keys of up to 64
   bytes under their XXH3-64 hash alone (``get_unicode_key``: no comparison of the text on a
   hit), so a key with the hash of ``"parents"`` reads as ``"parents"`` once ``"parents"`` was
   seen (always: every entity has one). Such keys are found in ~20 s (a 4-list generalised
   birthday over the four 16-byte blocks of XXH3's 33-64-byte path; ``COLLIDING``). The key
   count stays, so the colon count proves nothing; the walk sees a sound entity. An entity
   whose file text has no ``"parents"`` member, only ``"6xNW...Jk2F": [{"type": "Role", ...}]``,
   is loaded as a member of that role, where the strict parse refused the file ("has unknown
   keys"); end to end, ``entities load`` of the lending store switched to it (the old command
   refused). In a store without a schema, a record ``{"rUuF...XFuT": {"type", "id"}}`` is
   stored as the entity reference ``{"__entity": ...}`` that the strict reading does not hold.
   What a reviewer reads (and a seal's digest covers) is not what is loaded.
2. The same cache, poisoned first: quadratic re-reads. A colliding key seen before the first
   ``"parents"`` (the first item's attribute) makes every later ``"parents"`` read as that
   key; every item then fails the walk and ``strict_again`` reads its chunk again from its
   start: ~n^2/2 item parses per chunk of n items. A 419 KB file of 6,000 small entities:
   ``entities load`` 0.8 s before, 31.8 s now (one chunk of ~3,700 items); each further
   256 KB chunk adds ~30 s (the 512 MiB file bound: hours).
3. An item nested ~1,000 to 1,021 levels deep crashes the load with RecursionError. orjson reads
   up to 1,024 levels; ``_fast_chunk`` makes every item's stored form first, and
   ``entity_text``'s fallback (``json``'s C encoder, for what orjson's 255-level encoder
   refuses) raises RecursionError, uncaught; the strict parse refuses the item ("is nested
   deeper than 64 levels").
4. (Before this change, still there) ``error_line`` parses a refused file with ``json.loads``
   to place the error: RecursionError on any file nested ~1,000 deep, so ``entities load``
   and ``read_entities_file`` (store loads) end with a traceback instead of a refusal, old
   reader or new.

Held: every other attack below (see each test).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest
from redis import Redis as SyncRedis

from benchmarks.bench_entities_load import lending_entities
from tests.redis_support import RedisProcess, redis_fixture  # noqa: F401 (fixture)
from tests.security.test_attack_round24 import (
    ENV,
    LENDING_SCHEMA,
    LENDING_SHAPE,
    ROOT,
    lending_stores,
    load,
    staging_keys,
)
from tests.security.test_entity_items import MAX_DEPTH, Outcome, chunks_of, entity, strict
from tests.stores import write_store
from verdict import entity_items as entity_items_module
from verdict import json_values
from verdict.cli.common import EXIT_USAGE
from verdict.entities_load import shape_items
from verdict.entity_items import entity_items
from verdict.errors import RequestError
from verdict.json_values import FLOAT_PROBLEM, LONG_PROBLEM, guess_item_start
from verdict.store.entity_file import EntityShaper, read_entities_file
from verdict.store.json_lines import error_line
from verdict.store.parent_graph import HierarchyLimits
from verdict.store.redis_keys import StoreKeys

REAL = entity_items_module.CHUNK_CHARS
CHUNKS = (0, 37, 700, REAL)  # one item a chunk, a few, a dozen, the real size
PAD = [entity(i) for i in range(100, 4_100)]  # ~300 KB: the first chunk is read fast
# Keys of 64 ASCII characters whose XXH3-64 hash is that of the key they are filed under
# (checked against libxxhash's XXH3_64bits when found).
COLLIDING = {
    "parents": "6xNWQ1tPgJpAL3pQqT5BzaLrijpmQP06fue4Xa3JIPoW9toSCynwqqEz6H0uJk2F",
    "__entity": "rUuFMMuUeJY1hDeWmHOUmsSCKzzTtU6jErGWxeTuLWfaisdhvmwUiEaB4D5HXFuT",
    "approval_limit": "vsfVsGveWxJieMVjp2QZKoxA2xdUAc7REZetmsUaszpZl1nJJX2sbePtxTrUJ6tL",
}
_NO_LIMITS = HierarchyLimits(10_000, 10_000)


class _NoChecks:
    """``PartChecks`` without Cedar: the parse is what is attacked here."""

    def submit(self, entities: object) -> None:
        pass


def fast_read(text: str, stop: int | None = None) -> Outcome:
    """What the load does now (``entity_items`` through ``shape_items``), any exception an
    outcome of its own: a crash is a disagreement too."""
    items = entity_items(text, "entities", MAX_DEPTH, stop=stop)
    if items is None:
        return "not an array", None
    shaper = EntityShaper("entities", keep_text=True)
    try:
        shape_items(items, shaper, _NoChecks(), _NO_LIMITS)  # type: ignore[arg-type]
    except RequestError as exc:
        return "refused", (exc.field, exc.problem)
    except Exception as exc:
        return "crashed", f"{type(exc).__name__}: {exc}"[:200]
    found = [(uid, entity.json, entity.text) for uid, entity in shaper.entities.items()]
    return "ok", (found, items.aligned)


def summary(outcome: Outcome) -> Any:
    """An outcome as JSON (for answers from a fresh interpreter)."""
    kind, detail = outcome
    if kind == "ok":
        return [kind, [text for _, _, text in detail[0]], detail[1]]
    return [kind, detail]


def same(text: str, chunks: tuple[int, ...] = CHUNKS) -> Outcome:
    """The strict outcome of ``text``, after checking the load's reading gives it at every
    chunk size in ``chunks``."""
    expected = strict(text)
    for chars in chunks:
        with chunks_of(chars):
            assert fast_read(text) == expected, chars
    return expected


def array(*items: str) -> str:
    return "[" + ", ".join(items) + "]"


def padded(*odd: str) -> str:
    """``odd`` items early in a file long enough that the real first chunk is read fast."""
    return array(entity(0), *odd, *PAD)


def refusal(text: str) -> tuple[str, str]:
    outcome = same(text)
    assert outcome[0] == "refused", outcome
    return outcome[1]  # type: ignore[no-any-return]


def fresh(script: str, *args: str, timeout: float = 50) -> Any:
    """``script``'s JSON answer from a fresh interpreter (orjson's key cache empty)."""
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


_BOTH_READINGS = """
import json, sys
from tests.security.test_attack_round26 import fast_read, strict, summary
text = open(sys.argv[1], encoding="utf-8").read()
print(json.dumps({"fast": summary(fast_read(text)), "strict": summary(strict(text))}))
"""


# ---------------------------------------------------------------------------------------------
# Findings


def test_a_key_hashed_like_parents_does_not_give_an_entity_parents(tmp_path: Path) -> None:
    hidden = entity(1, "{}", parents="[]").replace(
        '"parents": []', f'"{COLLIDING["parents"]}": [{{"type": "Role", "id": "admin"}}]'
    )
    path = tmp_path / "entities.json"
    path.write_text(padded(hidden), encoding="utf-8")
    answer = fresh(_BOTH_READINGS, str(path))
    assert answer["strict"][0] == "refused"  # has unknown keys [...] (and lacks "parents")
    assert answer["fast"] == answer["strict"]


def test_a_key_hashed_like_an_escape_does_not_make_a_record_a_reference(tmp_path: Path) -> None:
    first = entity(0, '{"boss": {"__entity": {"type": "User", "id": "u100"}}}')
    record = f'{{"owner": {{"{COLLIDING["__entity"]}": {{"type": "User", "id": "alice"}}}}}}'
    path = tmp_path / "entities.json"
    path.write_text(array(first, entity(1, record), *PAD), encoding="utf-8")
    answer = fresh(_BOTH_READINGS, str(path))
    assert answer["strict"][0] == "ok"
    assert COLLIDING["__entity"] in answer["strict"][1][1]  # a record, as written
    assert answer["fast"] == answer["strict"]


def test_the_command_refuses_parents_spelled_with_a_colliding_key(
    tmp_path: Path, redis: RedisProcess
) -> None:
    mallory = {
        "uid": {"type": "Employee", "id": "mallory"},
        "attrs": {
            "name": "M",
            "partner": {"__entity": {"type": "Partner", "id": "p1"}},
            "department": "lending",
            "approval_limit": 5,
            "suspended": False,
        },
        "parents": [],
    }
    hidden = json.dumps(mallory).replace(
        '"parents": []', f'"{COLLIDING["parents"]}": [{{"type": "Role", "id": "underwriter"}}]'
    )
    stores = lending_stores(tmp_path, [])
    items = [json.dumps(item) for item in lending_entities(2_000)]
    items.insert(300, hidden)
    (stores / "lending" / "entities.json").write_text("[" + ",\n".join(items) + "]")
    done = subprocess.run(
        [sys.executable, "-m", "verdict", "entities", "load", "--stores", str(stores),
         "--redis-url", redis.url],
        env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=50, check=False,
    )  # fmt: skip
    client = SyncRedis.from_url(redis.url)
    stored = client.hgetall(StoreKeys.of("lending").entities)
    client.close()
    assert not any(b"mallory" in value for value in stored.values()), "mallory was loaded"
    assert done.returncode == EXIT_USAGE
    assert "entities[300]: has unknown keys" in done.stderr


def test_a_colliding_key_beside_the_key_it_collides_with_is_read_strictly(
    tmp_path: Path,
) -> None:
    """Held: in one object, the two keys are one to orjson, a member is dropped and the
    colon count sends the chunk to the strict parse (which keeps both, or refuses)."""
    beside = entity(1).replace(
        '"parents": []', f'"parents": [], "{COLLIDING["parents"]}": [{{"type": "R", "id": "a"}}]'
    )
    limit = entity(2, f'{{"approval_limit": 5, "{COLLIDING["approval_limit"]}": 1000000000}}')
    first = entity(0, '{"approval_limit": 1}')
    for items, kind in (((beside,), "refused"), ((limit,), "ok")):
        path = tmp_path / "entities.json"
        path.write_text(array(first, *items, *PAD), encoding="utf-8")
        answer = fresh(_BOTH_READINGS, str(path))
        assert answer["strict"][0] == kind
        assert answer["fast"] == answer["strict"]


_POISONED_FIRST = """
import json, sys, time
from verdict import entity_items
from tests.security.test_attack_round26 import fast_read
entity_items.CHUNK_CHARS = int(sys.argv[2])
reread = [0, 0]
real = entity_items.EntityItems._strict_item
def counting(self, chunk_start, position):
    reread[0] += 1
    reread[1] += position + 1
    return real(self, chunk_start, position)
entity_items.EntityItems._strict_item = counting
text = open(sys.argv[1], encoding="utf-8").read()
started = time.perf_counter()
outcome = fast_read(text)
seconds = time.perf_counter() - started
print(json.dumps({"kind": outcome[0], "calls": reread[0], "items": reread[1], "s": seconds}))
"""


def test_a_key_cached_before_parents_costs_no_rereads(tmp_path: Path) -> None:
    """1,200 small entities in chunks of 16 KB (~190 items; the real ones hold ~3,700 such
    items: 30 s a chunk). The load may read an item again once (``strict_again`` before a
    refusal), never every item."""
    first = entity(0, f'{{"{COLLIDING["parents"]}": 1}}')
    path = tmp_path / "entities.json"
    path.write_text(array(first, *PAD[:1_199]), encoding="utf-8")
    answer = fresh(_POISONED_FIRST, str(path), str(16 * 1024))
    assert answer["kind"] == "ok"
    assert answer["calls"] <= 1, answer
    assert answer["items"] <= 1_200, answer


DEEP_ITEM = entity(9, '{"d": ' + "[" * 1_015 + "]" * 1_015 + "}")  # within orjson's 1,024


@pytest.mark.parametrize("halves", [False, True])
def test_an_item_nested_a_thousand_deep_is_refused_not_a_crash(halves: bool) -> None:
    """The item is in the first chunk; loaded in halves, the parent's half spans two."""
    text = array(entity(0), DEEP_ITEM, *(entity(i) for i in range(100, 9_100)))
    stop = guess_item_start(text, len(text) // 2) if halves else None
    expected = strict(text, stop)
    assert expected == ("refused", ("entities", "is nested deeper than 64 levels"))
    assert fast_read(text, stop) == expected


def test_a_deep_file_is_refused_with_a_line_not_a_recursion_error(tmp_path: Path) -> None:
    deep = array(entity(0), entity(9, '{"d": ' + "[" * 1_100 + "]" * 1_100 + "}"))
    refused = RequestError("entities", "is nested deeper than 64 levels")
    crashed = None
    try:
        assert error_line(deep, refused) >= 1
    except RecursionError as exc:
        crashed = exc
    path = tmp_path / "entities.json"
    path.write_text(deep)
    with pytest.raises(Exception, match="nested deeper than 64 levels") as raised:
        read_entities_file(path, None)
    assert crashed is None
    assert not isinstance(raised.value, RecursionError)


def test_the_command_refuses_a_deep_file_in_one_line(tmp_path: Path, redis: RedisProcess) -> None:
    stores = tmp_path / "stores"
    write_store(stores, "plain", {"policy.cedar": "permit(principal, action, resource);\n"})
    (stores / "plain" / "entities.json").write_text(padded(DEEP_ITEM))
    done = subprocess.run(
        [sys.executable, "-m", "verdict", "entities", "load", "--stores", str(stores),
         "--redis-url", redis.url],
        env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=50, check=False,
    )  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr[-600:]
    assert "invalid entities: entities: is nested deeper than 64 levels" in done.stderr
    assert done.returncode == EXIT_USAGE


# ---------------------------------------------------------------------------------------------
# Held: duplicate keys, escapes, numbers, Unicode, depth, structure


DUPLICATE = "repeats a key within one object"


@pytest.mark.parametrize(
    "item",
    [
        entity(9, '{"a:": 1, "a:": 2}'),  # the key holds a colon
        entity(9, '{"n": "x", "n": "::::"}'),  # the kept value holds more colons
        entity(9, '{"n": "::::", "n": "x"}'),
        entity(9, '{"/": 1, "\\/": 2}'),  # one key, two spellings
        entity(9, '{"\\\\": ":", "\\\\": ":"}'),
        entity(9, '{"\\"": "\\":", "\\"": 1}'),
        entity(9, '{"n" : 1, "n"\n:\t2}'),
        entity(9, '{"e": {"__extn": {"fn": "decimal", "arg": {"x": 1, "x": 1}}}}'),
        entity(9, '{"l": [[[{"k": {"k": 1, "k": {}}}]]]}'),
        entity(9).replace('"attrs": {"n": 1}', '"attrs": {"a": "::"}, "attrs": {}'),
        entity(9).replace('"parents": []', '"parents": [], "parents": []'),
        entity(9).replace('"id": "u9"', '"id": "u9", "id": "root"'),
        entity(9).replace('"parents": []', '"parents": [], "tags": {}, "tags": {"t": ":"}'),
        # another item's colons cannot make up for the dropped member's
        entity(9, '{"n": 1, "n": 2}') + ", " + entity(10, '{"s": ":", ":": ""}'),
    ],
)
def test_duplicate_keys_are_refused_however_their_colons_balance(item: str) -> None:
    assert refusal(padded(item)) == ("entities", DUPLICATE)


@pytest.mark.parametrize(
    "attrs",
    [
        '{"a\\\\": ":"}',
        '{"k\\":": "\\":"}',
        '{"\\/": ":\\/:", "\\/\\/": "/"}',
        '{"n" : 1, "m"\n:\t2, "o"\r\n :3}',
        '{"s": "\\\\u0041"}',  # an escaped backslash, then "u0041": read strictly
        '{"s": "\\b\\f\\n\\r\\t:\\\\:\\""}',
        '{"s": "}, {\\"uid\\": {}}"}',
        '{"uid": {"type": "User", "id": "u1"}, "attrs": {}, "parents": []}',
    ],
)
def test_escapes_and_spacing_near_colons_store_what_the_strict_parse_reads(attrs: str) -> None:
    assert same(padded(entity(9, attrs)))[0] == "ok"


@pytest.mark.parametrize(
    ("item", "problem"),
    [
        (entity(9, '{"n": -0}'), None),
        (entity(9, '{"n": [0, [-0, [9223372036854775807, -9223372036854775808]]]}'), None),
        (entity(9, '{"n": -0.0}'), FLOAT_PROBLEM),
        (entity(9, '{"n": 0e0}'), FLOAT_PROBLEM),
        (entity(9, '{"n": 1E2}'), FLOAT_PROBLEM),
        (entity(9, '{"n": 1e-0}'), FLOAT_PROBLEM),
        (entity(9, '{"n": 1e400}'), FLOAT_PROBLEM),  # orjson: infinity, refused
        (entity(9, '{"n": -1e-400}'), FLOAT_PROBLEM),
        (entity(9, '{"n": 9223372036854775808}'), LONG_PROBLEM),
        (entity(9, '{"n": -9223372036854775809}'), LONG_PROBLEM),
        (entity(9, '{"n": 18446744073709551615}'), LONG_PROBLEM),  # orjson: an int
        (entity(9, '{"n": 18446744073709551616}'), LONG_PROBLEM),  # orjson: a float
        (entity(9, '{"n": -18446744073709551616}'), LONG_PROBLEM),
        (entity(9, '{"n": 1' + "0" * 300 + "}"), LONG_PROBLEM),
        (entity(9, '{"n": 1' + "0" * 400 + "}"), LONG_PROBLEM),  # orjson: refused
        # Past int()'s digit limit: refused by its length (it read as "not valid JSON" when
        # int() was asked first).
        (entity(9, '{"n": 1' + "0" * 5_000 + "}"), "contains an integer outside"),
        (entity(9, '{"e": {"__extn": {"fn": "decimal", "arg": 1e2}}}'), FLOAT_PROBLEM),
        (entity(9, '{"e": {"__extn": {"fn": "ip", "args": [-0, 2.5]}}}'), FLOAT_PROBLEM),
        (entity(9, '{"e": {"__extn": {"fn": "ip", "arg": 99999999999999999999}}}'), LONG_PROBLEM),
        (entity(9, '{"r": {"__entity": {"type": "User", "id": 1.5}}}'), FLOAT_PROBLEM),
        (entity(9, '{"r": {"__entity": {"type": "User", "id": -0}}}'), "id must be a string"),
        (entity(9).replace('"id": "u9"', '"id": 9223372036854775808'), LONG_PROBLEM),
        (entity(9, parents='[{"type": "User", "id": 1e2}]'), FLOAT_PROBLEM),
        (entity(9).replace('"parents": []', '"parents": [], "tags": {"t": 0.5}'), FLOAT_PROBLEM),
        ("1.5", FLOAT_PROBLEM),  # an item that is a number
        ("-0", "must be an object with uid, attrs and parents"),
        ("9223372036854775808", LONG_PROBLEM),
    ],
)
def test_numbers_at_and_past_the_64_bit_edges_get_the_strict_answer(
    item: str, problem: str | None
) -> None:
    outcome = same(padded(item))
    if problem is None:
        assert outcome[0] == "ok"
    else:
        assert outcome[0] == "refused"
        assert problem in outcome[1][1]


@pytest.mark.parametrize(
    "text",
    [
        padded(entity(9, '{"s": "😀\u2028\u2029\x7f\x85", "😀": "é:ü"}')),
        padded(entity(9, '{"s": "\ufeff"}')),  # a BOM inside a string: text
        padded(entity(9, '{"n":\ufeff1}')),  # as whitespace: refused where it is
        "[" + entity(0) + ",\ufeff" + ", ".join(PAD) + "]",
        "[\ufeff" + ", ".join(PAD) + "]",
        "\ufeff" + array(*PAD),
        padded(entity(9, '{"s": "\x00"}')),  # raw control characters
        padded(entity(9, '{"s": "\t"}')),
        padded(entity(9, '{"s": "\\ud83d\\ude00", "t": "\\udc00"}')),  # read strictly (\u)
        padded(entity(9, '{"n": NaN}')),
        padded(entity(9, '{"n": -Infinity}')),
    ],
)
def test_unicode_and_byte_order_marks_get_the_strict_answer(text: str) -> None:
    same(text)


def test_a_lone_surrogate_in_the_text_itself_gets_the_strict_answer() -> None:
    """A file is read as UTF-8 and cannot hold one; the reader is handed a str that does."""
    for raw in ("\ud800", "\udbff\udfff", "x\udc00"):
        same(padded(entity(9, '{"s": "' + raw + '"}')))
        same(padded(entity(9, '{"' + raw + '": 1}')))


@pytest.mark.parametrize("levels", [59, 60, 61, 62, 63, 64, 65, 300, 1_100])
@pytest.mark.parametrize("kind", ["list", "record"])
def test_depth_around_the_limit_gets_the_strict_answer(levels: int, kind: str) -> None:
    """Nested in attrs (the array, the entity and attrs are three levels of 64); 300 levels
    are past orjson's encoder (255, json's then), 1,100 past orjson's reader (1,024)."""
    if kind == "list":
        value = "[" * levels + "1" + "]" * levels
    else:
        value = '{"a": ' * levels + "1" + "}" * levels
    same(padded(entity(9, f'{{"d": {value}}}')), chunks=(37, REAL))


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        " [ ] ",
        "[",
        "[,]",
        array(*PAD) + " x",
        array(*PAD) + "]",
        array(*PAD)[:-1],
        array(*PAD) + ", " + entity(0) + "]",
        "[" + ", ".join(PAD) + ",]",
        "[" + ", ".join(PAD[:10]) + ",, " + ", ".join(PAD[10:]) + "]",
        "[" + entity(0) + "][" + ", ".join(PAD) + "]",
        padded("1"),
        padded('"s"'),
        padded("null"),
        padded("[]"),
        padded("{}"),
        padded("true"),
        padded(entity(100)),  # a duplicate entity
        padded(entity(9).replace('"parents"', '"bogus"')),
        array(
            *PAD[:2000],
            '{"uid": {"type": "Action", "id": "view"}, "attrs": {}, "parents": []}',
            '{"uid": {"type": "NS::Action", "id": "v"}, "attrs": {}, "parents": []}',
            *PAD[2000:],
        ),
        "[\r\n" + ",\r\n".join(PAD) + "\r\n]\r\n",
    ],
)
def test_odd_structure_gets_the_strict_answer(text: str) -> None:
    same(text)


# ---------------------------------------------------------------------------------------------
# Held: stops (the halves path), guesses fooled, re-reads bounded


def _fooled(i: int) -> str:
    """An entity whose attrs hold records that look like entity boundaries."""
    fake = '{"uid": {"type": "User", "id": "z"}, "attrs": {}, "parents": []}'
    return entity(i, '{"r": [{"a": 1}, ' + ", ".join([fake] * 3) + "]}")


STOP_FILES = {
    "fooled": array(entity(0), _fooled(1), entity(2), _fooled(3), entity(4)),
    "float": array(entity(0), entity(1), entity(2, '{"n": 1.5}'), entity(3)),
    "duplicate": array(entity(0), entity(1), entity(2, '{"n": 1, "n": 2}'), entity(3)),
    "escape": array(entity(0), entity(1, '{"s": "\\u003a"}'), entity(2), entity(3)),
    "deep": array(entity(0), entity(1, '{"d": ' + "[" * 70 + "]" * 70 + "}"), entity(2)),
    "trailing": array(entity(0), entity(1), entity(2)) + " ,",
    "spaced": "[\n " + " ,\n ".join(entity(i) for i in range(4)) + " \n]\n",
}


@pytest.mark.parametrize("name", sorted(STOP_FILES))
def test_every_stop_offset_gets_the_strict_answer(name: str) -> None:
    """The parent's half of a split load ends at ``stop`` (and says whether an item starts
    there): every offset of small files, at chunk sizes that cut them everywhere."""
    text = STOP_FILES[name]
    for chars in (0, 150):
        with chunks_of(chars):
            for stop in range(len(text) + 2):
                assert fast_read(text, stop) == strict(text, stop), (chars, stop)


def test_real_size_stops_near_the_split_get_the_strict_answer() -> None:
    text = array(*PAD[:2_000], _fooled(1), *PAD[2_000:], *(_fooled(i) for i in range(5, 800)))
    for near in (len(text) // 3, len(text) // 2, 2 * len(text) // 3):
        stop = guess_item_start(text, near)
        assert stop is not None
        for offset in (stop, stop - 1, stop + 1):
            assert fast_read(text, offset) == strict(text, offset), offset


class _Counted:
    """The strict parse's decoder, its calls (one per item) counted."""

    def __init__(self, decoder: Any) -> None:
        self.decoder = decoder
        self.calls = 0

    def raw_decode(self, text: str, index: int) -> Any:
        self.calls += 1
        return self.decoder.raw_decode(text, index)


def _work(monkeypatch: pytest.MonkeyPatch, text: str) -> tuple[Outcome, int, int]:
    """The load's reading of ``text``: its outcome, the items read strictly, and the
    characters handed to orjson."""
    counted = _Counted(json_values._DECODER)
    monkeypatch.setattr(json_values, "_DECODER", counted)
    chars = [0]
    real_fast_chunk = entity_items_module._fast_chunk

    def fast_chunk(chunk: str) -> Any:
        chars[0] += len(chunk)
        return real_fast_chunk(chunk)

    monkeypatch.setattr(entity_items_module, "_fast_chunk", fast_chunk)
    outcome = fast_read(text)
    monkeypatch.undo()
    return outcome, counted.calls, chars[0]


def test_guesses_fooled_at_every_item_cost_at_most_one_reading_of_each_kind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every item holds fake boundaries every ~70 characters, so nearly every chunk's guess
    falls inside an item and orjson fails it: each character goes to orjson at most once and
    each item is read strictly at most once (no stretch read twice, no blow-up)."""
    fake = '{"uid": {"type": "User", "id": "z"}, "attrs": {}, "parents": []}'
    items = [entity(i, '{"r": [{"a": 1}, ' + ", ".join([fake] * 60) + "]}") for i in range(300)]
    text = array(*items)
    assert len(text) > 4 * REAL
    outcome, strict_items, orjson_chars = _work(monkeypatch, text)
    assert outcome == strict(text)
    assert strict_items <= len(items)
    assert orjson_chars <= len(text)


def test_an_item_refused_late_in_a_chunk_is_read_again_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A float in the last item of the first chunk: the chunk's items are read strictly at
    most once more (``strict_again``), then the load ends."""
    first = guess_item_start(padded(), REAL)
    assert first is not None
    count = padded()[:first].count('"uid"')
    text = array(entity(0), *PAD[: count - 2], entity(9, '{"n": 0.5}'), *PAD[count - 2 :])
    outcome, strict_items, _ = _work(monkeypatch, text)
    assert outcome == strict(text) == ("refused", ("entities", FLOAT_PROBLEM))
    assert strict_items <= count + 1


# ---------------------------------------------------------------------------------------------
# Held end to end: the load, whole and in halves, into Redis


def _odd_lending() -> str:
    """3,000 lending entities spelled oddly: spaces before colons, ``\\/``, escaped quotes
    and colons, U+2028, ``-0`` for a Long, CRLF line ends."""
    text = json.dumps(lending_entities(3_000), indent=1).replace("\n", "\r\n")
    text = text.replace('"kind": "personal"', '"kind" :\t"personal"')
    text = text.replace('"Borrower Person 7"', '"Borrower\\/Person: \\"7\\"\u2028"')
    return re.sub(r'"approval_limit": \d+', '"approval_limit": -0', text, count=50)


async def test_odd_spellings_load_whole_and_in_halves_as_the_strict_parse_stores_them(
    tmp_path: Path, redis: RedisProcess
) -> None:
    text = _odd_lending()
    expected = strict(text)
    assert expected[0] == "ok"
    stored = sorted(stored_text for _, _, stored_text in expected[1][0])
    path = tmp_path / "entities.json"
    path.write_text(text, encoding="utf-8")
    client = SyncRedis.from_url(redis.url)
    for halves in (False, True):
        said = await load(redis, path, "lending", LENDING_SCHEMA, LENDING_SHAPE, halves=halves)
        assert said == "loaded 3000", halves
        values = client.hgetall(StoreKeys.of("lending").entities)
        values.pop(b"epoch")
        texts = [cast(bytes, value).decode() for value in values.values()]
        held = sorted(one.split(',"e":', 1)[1][:-1] for one in texts)
        assert held == stored, halves
    client.close()
    assert staging_keys(redis) == {}


async def test_a_balanced_duplicate_in_the_second_half_is_refused_whole_and_in_halves(
    tmp_path: Path, redis: RedisProcess
) -> None:
    items = [json.dumps(item) for item in lending_entities(3_000)]
    items[2_500] = items[2_500].replace('"kind": "personal"', '"kind": "x:y", "kind": "personal"')
    path = tmp_path / "entities.json"
    path.write_text("[" + ",\n".join(items) + "]")
    said = [
        await load(redis, path, "lending", LENDING_SCHEMA, LENDING_SHAPE, halves=halves)
        for halves in (False, True)
    ]
    assert said[0] == said[1]
    assert said[0].startswith("lending/entities.json:")
    assert said[0].endswith(f": invalid entities: entities: {DUPLICATE}")
    assert staging_keys(redis) == {}
