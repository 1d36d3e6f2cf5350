"""Attack round 25: ``verdict entities load``: items stored as written, hiredis, two answers, exit.

Four changes are attacked. ``storable_text`` (store/entity_file.py, since removed) stored a
one-line item's own text instead of serialising it again: every JSON spelling of one value
(escapes of quotes, backslashes, ``__entity`` key names and type names, ``\\u0000``, surrogate
pairs, ``\\/``, spacing, ``-0`` hidden in nested sets, records and tags, U+2028, NEL, DEL, a
BOM or NBSP inside strings) must mean, to Python's reader, to Cedar and to the slice's
weighing, what the checked entity means; and whitespace JSON does not allow (a BOM, ``\\x0b``,
``\\x0c``, NBSP) or keys duplicated behind escapes must be refused. ``redis_packing.py`` packs
commands with hiredis: odd ids and values (non-ASCII, escaped NUL and CRLF, RESP look-alikes, a
1 MB id) must reach Redis byte for byte. ``entities_halves.py``'s child now answers twice: a
child killed or stopped between its answers, Redis stalled between them, a duplicate across the
halves and a Cedar refusal late in the second half must never switch a load, hang, or leave
staging keys without expiry. ``heap.exit_if_kept`` ends the command with ``os._exit``: its
output, exit codes, switch and processes must all be there (or gone) as before.

Real redis-server on loopback, real fork, real Cedar, the real CLI in subprocesses.

Findings (their tests failed on the code attacked; both are fixed, the tests now pass):

1. A stored item's weight depends on how the file spelled it
   (``test_a_stored_entity_decides_as_it_does_however_the_file_spelled_it``). The slice limits
   weigh the stored text (its bytes and its ``[{,:`` characters), so spacing inside an item on
   one line, ``\\uXXXX`` escapes (``json.dumps``' default ``ensure_ascii``), or escaped commas
   change what one entity weighs: the same entity decides ALLOW from the memory store, from
   PutEntities and from a compactly written file, but fails (slice too large) when loaded from
   a spaced or ASCII-escaped file, and a string of escaped commas passes a values limit the
   same entity written plainly (or served from memory) fails.
2. A child that stops answering hangs the command for good
   (``test_a_stopped_child_does_not_hang_the_command``). The parent waits for the child's
   answers without any bound (``SecondHalf.parsed`` while it is alive, ``_receive`` on the
   pipe): a child stopped between its answers (SIGSTOP; a frozen or wedged process) leaves
   ``verdict entities load --timeout 2`` running forever, its staging keys behind it.

Fixes: (1) items are no longer stored as written: every entity is stored as ``entity_text`` of
what the strict parse decoded (now compact JSON, written by orjson), however the file spells
it, so it weighs what the memory store and PutEntities weigh; (2) the child raises a shared
beat as it parses (every 1,000 items) and stages (every round trip), and the parent kills a
child silent for longer than one Redis call's bound plus 5 s and loads the file whole.

Held: every odd one-line spelling tried means the same entity to Python and Cedar (and ``-0``,
however deep, is stored as ``0``); keys duplicated behind escapes, a BOM, ``\\x0b``, ``\\x0c``
and NBSP are refused; hiredis packs odd ids and values byte for byte (CLI and PutEntities); a
child killed between its answers leaves the load to the command (every entity, no staging
key); Redis stalled between the answers ends in the full load; a duplicate across the halves
and a late Cedar refusal are refused as a whole load refuses them, without the value; a load
that ends by ``os._exit`` prints every line, exits 0 (2 on a refusal), has switched, and
leaves no process and no staging key.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from redis import Redis as SyncRedis

from benchmarks.bench_entities_load import lending_entities
from tests.redis_support import RedisProcess, redis_fixture  # noqa: F401 (fixture)
from tests.security.test_attack_drain_signals import children
from tests.security.test_attack_round24 import (
    BIG,
    ENV,
    LENDING_SCHEMA,
    LENDING_SHAPE,
    ROOT,
    cli_load,
    connect,
    exported,
    forked_child,
    lending_stores,
    load,
    staging_keys,
    wait_for,
)
from tests.security.test_stored_text import cedar_reading, stored
from tests.stores import write_store
from tests.workers_support import alive
from verdict.app import build_app
from verdict.config import Settings
from verdict.entities_load import load_entities_file
from verdict.model import AuthorizationRequest, EntityUid
from verdict.progress import LineReporter
from verdict.store.redis_keys import uid_key
from verdict.store.redis_store import RedisEntityStore
from verdict.store.weight import entity_text

PERMIT_U = 'permit(principal == User::"u", action, resource);'


# ---------------------------------------------------------------------------------------------
# 1. Items stored as written


def _item(attrs: str, *, uid: str = '{"type":"A","id":"x"}', rest: str = "") -> str:
    return '{"uid":' + uid + ',"attrs":' + attrs + ',"parents":[]' + rest + "}"


# Spellings the strict parse accepts: each must be stored (as written, or serialised again
# for a -0) and mean the same entity to Python and to Cedar.
SPELLINGS = [
    _item(r'{"r":{"\u005f\u005fentity":{"type":"A","id":"y"}}}'),  # an escaped escape key
    _item(r'{"r":{"\u005f\u005fextn":{"fn":"ip","arg":"1.2.3.4"}}}'),
    _item("{}", uid=r'{"\u0074ype":"\u0041","id":"x"}'),  # escaped key and type name
    _item("{}", uid=r'{"type":"\u0041ction","id":"view"}'),  # an action behind escapes
    _item("{}", uid=r'{"type":"A::\u0042","id":"x"}'),
    r'{"\u0075id":{"type":"A","id":"x"},"\u0061ttrs":{},"p\u0061rents":[]}',
    _item("{}", uid=r'{"type":"A","id":"\u0000\u001f\"\\\/"}'),
    _item("{}", uid=r'{"type":"A","id":"\ud83d\ude00\uD83D\uDE00"}'),  # surrogate pairs
    _item('{"a":"\u2028\u2029\x7f\u0085\ufeff\u00a0"}'),  # raw: JSON allows them in strings
    _item('{"a":[1,[2,[-0]]],"b":{"c":{"d":-0}}}'),  # -0 hidden in sets and records
    _item("{}", rest=',"tags":{"t":-0,"u":[-0]}'),  # and in tags
    _item('{"a":-9223372036854775808,"b":9223372036854775807}'),
    '{"uid"\t:\t{"type":"A","id":"x"} ,\t"attrs" : {"a" :\t"b"}\t, "parents":[ ] }',
    _item(r'{"a":"\u005b\u007b\u002c\u003a"}'),
    _item('{"a":{"type":"A","id":"y"},"b":["A","y"]}'),
]

# What must never be stored: duplicates behind escapes, whitespace JSON does not allow, an
# escape key at the top of the attributes, lone surrogates in keys.
REFUSED = [
    _item(r'{"a":1,"\u0061":2}'),
    _item(r'{"\u005f\u005fentity":{"type":"A","id":"y"}}'),
    _item("{}", uid=r'{"type":"A","id":"x","\u0069d":"y"}'),
    "\ufeff" + _item("{}"),
    _item("{}").replace(',"parents"', '\x0b,"parents"'),
    _item("{}").replace(',"parents"', '\x0c,"parents"'),
    _item("{}").replace(',"parents"', '\u00a0,"parents"'),
    _item(r'{"\udc00":1}'),
    _item(r'{"a":{"\ud800x":1}}'),
]


def test_odd_one_line_spellings_mean_the_checked_entity_to_python_and_cedar() -> None:
    """Each spelling is stored as the one serialisation of what it decodes to (since the fix
    of finding 1; it was stored as written before), and the stored text means to Python's
    reader and to Cedar what the canonical text means."""
    for text in SPELLINGS:
        kept = stored(text)
        assert kept is not None, text
        assert kept == entity_text(json.loads(text)), text
        assert "-0" not in kept
        canonical = entity_text(json.loads(text))
        assert json.loads(kept) == json.loads(text)
        assert cedar_reading(f"[{kept}]") == cedar_reading(f"[{canonical}]"), text
    for text in REFUSED:
        assert stored(text) is None, text


_CHARS = '"\\/[{,:]}\x00\x1f\x7f\u2028\u00a0\ufeffé😀a -0_\U0010ffff\ue000\uffff'


def _spelled(value: Any, rng: random.Random) -> str:
    """``value`` as JSON with random escapes (\\u of any character, either case, \\/) and
    random spaces and tabs between tokens, on one line."""

    def string(text: str) -> str:
        out = ['"']
        for char in text:
            if char in '"\\' or ord(char) < 0x20 or rng.random() < 0.3:
                escaped = json.dumps(char, ensure_ascii=True)[1:-1]
                if escaped == char:  # printable ASCII: its \\u escape
                    escaped = f"\\u{ord(char):04x}"
                if escaped.startswith("\\u") and rng.random() < 0.5:  # hex digits in capitals
                    escaped = escaped.upper().replace("\\U", "\\u")
                out.append(escaped)
            elif char == "/" and rng.random() < 0.5:
                out.append("\\/")
            else:
                out.append(char)
        return "".join(out) + '"'

    def space() -> str:
        return rng.choice(["", "", " ", "\t", " \t "])

    if isinstance(value, str):
        return string(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return "-0" if value == 0 and rng.random() < 0.2 else str(value)
    if isinstance(value, list):
        return "[" + space() + ",".join(_spelled(v, rng) + space() for v in value) + "]"
    assert isinstance(value, dict)
    pairs = (
        space() + string(k) + space() + ":" + space() + _spelled(v, rng) for k, v in value.items()
    )
    return "{" + ",".join(pairs) + space() + "}"


def test_randomly_escaped_items_mean_the_same_entity_to_python_and_cedar() -> None:
    """1,500 entities (types, ids, names and values drawn from quotes, backslashes,
    structural characters, controls, U+2028, a BOM, astral characters) spelled with random
    escapes and spacing: the stored text decodes, in Python and in Cedar, to the entity."""
    rng = random.Random(25)

    def text() -> str:
        return "".join(rng.choice(_CHARS) for _ in range(rng.randint(0, 5)))

    def value(depth: int = 0) -> Any:
        roll = rng.random()
        if depth > 2 or roll < 0.4:
            return rng.choice([text(), rng.randint(-3, 3), True, False, 2**63 - 1, -(2**63)])
        if roll < 0.55:
            return {"__entity": {"type": rng.choice(["A", "B::C"]), "id": text()}}
        if roll < 0.65:
            return {"__extn": {"fn": "ip", "arg": rng.choice(["1.2.3.4", "x"])}}
        if roll < 0.8:
            return [value(depth + 1) for _ in range(rng.randint(0, 3))]
        return {text(): value(depth + 1) for _ in range(rng.randint(0, 3))}

    checked = 0
    for _ in range(1_500):
        item: dict[str, Any] = {
            "uid": {"type": rng.choice(["A", "B::C", "Action"]), "id": text()},
            "attrs": {text(): value() for _ in range(rng.randint(0, 3))},
            "parents": [{"type": "A", "id": text()} for _ in range(rng.randint(0, 2))],
        }
        if rng.random() < 0.3:
            item["tags"] = {text(): value() for _ in range(rng.randint(0, 2))}
        spelled = _spelled(item, rng)
        kept = stored(spelled)
        if kept is None:  # a lone surrogate drawn, or an escape key at the top: refused
            continue
        checked += 1
        assert json.loads(kept) == json.loads(spelled)
        assert cedar_reading(f"[{kept}]") == cedar_reading(f"[{entity_text(json.loads(kept))}]")
    assert checked > 1_000


async def _decision(settings: Settings, store_id: str) -> str:
    """The app's decision for User::"u" in ``store_id`` (its error's name when it fails)."""
    app = build_app(settings)
    if isinstance(app.entities, RedisEntityStore):
        await app.entities.prepare()
    request = AuthorizationRequest(
        EntityUid("User", "u"), EntityUid("Action", "view"), EntityUid("Doc", "d"),
        store_id=store_id,
    )  # fmt: skip
    try:
        return str((await app.authorizer.authorize(request)).decision)
    except Exception as exc:  # the outcome compared is the error's kind
        return type(exc).__name__
    finally:
        if isinstance(app.entities, RedisEntityStore):
            await app.entities.close()


def _spaced() -> tuple[dict[str, Any], str]:
    item = {"uid": {"type": "User", "id": "u"}, "attrs": {"name": "x"}, "parents": []}
    return item, _item('{"name":"x"}' + " " * 200_000, uid='{"type":"User","id":"u"}')


def _ascii_escaped() -> tuple[dict[str, Any], str]:
    item = {"uid": {"type": "User", "id": "u"}, "attrs": {"name": "é" * 30_000}, "parents": []}
    return item, json.dumps(item)  # json.dumps' defaults: one line, ensure_ascii


def _escaped_commas() -> tuple[dict[str, Any], str]:
    item = {"uid": {"type": "User", "id": "u"}, "attrs": {"name": "," * 20_000}, "parents": []}
    return item, _item('{"name":"' + "\\u002c" * 20_000 + '"}', uid='{"type":"User","id":"u"}')


@pytest.mark.parametrize("spelling", [_spaced, _ascii_escaped, _escaped_commas])
async def test_a_stored_entity_decides_as_it_does_however_the_file_spelled_it(
    tmp_path: Path, redis: RedisProcess, spelling: Any
) -> None:
    """FINDING 1. One entity, User::"u", in two stores of one policy: "spelled" holds it as an
    odd one-line spelling (200 KB of spaces inside the item; json.dumps' default escapes of
    30,000 é; 20,000 commas escaped as \\u002c), "plain" as json.dumps(ensure_ascii=False).
    Loaded by ``entities load`` into one Redis, and served from memory, every decision on it
    must be the same: the slice limits must weigh the entity, not the file's spelling. Before
    the fix the spelled store's stored text was weighed: 128 KiB of slice bytes refused the
    spaced and the escaped entity (memory and plain: ALLOW), and the escaped commas passed the
    16,000 values that the plain entity fails. Fixed: every entity is stored as its one
    serialisation (store/weight.py ``entity_text``), whatever the file's spelling."""
    item, text = spelling()
    assert json.loads(text) == item
    stores = tmp_path / "stores"
    write_store(stores, "spelled", {"p.cedar": PERMIT_U, "entities.json": f"[{text}]"})
    plain = json.dumps([item], ensure_ascii=False)
    write_store(stores, "plain", {"p.cedar": PERMIT_U, "entities.json": plain})
    limits: dict[str, Any] = {"max_slice_bytes": 128 * 1024}
    memory = Settings(stores=stores, default_store="plain", **limits)
    on_redis = Settings(stores=stores, default_store="plain", redis_url=redis.url, **limits)
    store = connect(redis)
    try:
        for store_id in ("spelled", "plain"):
            await load_entities_file(
                store, store_id, stores / store_id / "entities.json", None,
                LineReporter(io.StringIO(), 60.0), shown=store_id, chunk=100,
            )  # fmt: skip
    finally:
        await store.close()
    held = redis.cli("HSTRLEN", "verdict:{spelled}:entities", uid_key(EntityUid("User", "u")))
    outcomes = {
        "memory": await _decision(memory, "spelled"),
        "redis plain": await _decision(on_redis, "plain"),
        "redis spelled": await _decision(on_redis, "spelled"),
    }
    assert len(set(outcomes.values())) == 1, (outcomes, f"{held.strip()} bytes stored")


# ---------------------------------------------------------------------------------------------
# 2. hiredis packing


ODD_IDS = [
    "nul\x00id",
    "crlf\r\nid",
    "*3\r\n$3\r\nDEL\r\n$1\r\nx\r\n",  # a RESP command spelled inside an id
    "ünï😀\u2028\u2029\x7f",
    '"quoted" \\ back',
    "",
    "i" * 1_000_000,  # a 1 MB id: one bulk string far past any packer buffer
]


def _odd_entities() -> list[dict[str, Any]]:
    found = []
    for index, id_ in enumerate(ODD_IDS):
        attrs = {
            "v": id_ + "\r\n$-1\r\n",
            "n": -(2**63) + index,
            "r": {"__entity": {"type": "T", "id": id_}},
        }
        found.append({"uid": {"type": "T", "id": id_}, "attrs": attrs, "parents": []})
    return found


def load_command(stores: Path, redis: RedisProcess) -> subprocess.CompletedProcess[str]:
    """`verdict entities load` of ``stores`` into ``redis``, to its end."""
    return subprocess.run(
        [sys.executable, "-m", "verdict", "entities", "load", "--stores", str(stores),
         "--redis-url", redis.url],
        env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def compact(value: Any) -> str:
    """The stored serialisation, spelled out (store/weight.py ``entity_text``)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def test_odd_ids_and_values_reach_redis_byte_for_byte(tmp_path: Path, redis: RedisProcess) -> None:
    """``entities load`` of entities whose ids and values hold NUL, CRLF, a RESP command,
    non-ASCII and astral text, quotes, the empty id and a 1 MB id; then one more written
    through the server's PutEntities. Redis holds exactly each item's stored serialisation,
    each uid-key and each reference list, byte for byte, and nothing else."""
    items = _odd_entities()
    texts = [json.dumps(item, ensure_ascii=False) for item in items]
    stores = tmp_path / "stores"
    write_store(stores, "s", {"p.cedar": PERMIT_U, "entities.json": "[" + ",\n".join(texts) + "]"})
    result = load_command(stores, redis)
    assert result.returncode == 0, result.stderr
    client = SyncRedis.from_url(redis.url)
    try:
        values = client.hgetall("verdict:{s}:entities")
        refs = client.hgetall("verdict:{s}:refs")
        expected = {}
        expected_refs = {}
        for item in items:
            key = json.dumps(["T", item["uid"]["id"]], ensure_ascii=False, separators=(",", ":"))
            expected[key.encode()] = b'{"v":0,"e":' + compact(item).encode() + b"}"
            expected_refs[key.encode()] = key.encode()  # each references itself only
        epoch = values.pop(b"epoch")
        assert refs.pop(b"epoch") == epoch
        refs.pop(b"replid", None)
        assert values == expected
        assert refs == expected_refs
        # PutEntities through the server (its own hiredis-packed connection).
        odd: dict[str, Any] = {
            "uid": {"type": "T", "id": "put\x00\r\n😀"},
            "attrs": {"v": "*1\r\n"},
            "parents": [],
        }
        settings = Settings(stores=stores, default_store="s", redis_url=redis.url)

        async def put() -> int:
            app = build_app(settings)
            assert isinstance(app.entities, RedisEntityStore)
            await app.entities.prepare()
            try:
                version, _ = await app.writes.put("s", json.dumps([odd]))
                return int(version)
            finally:
                await app.entities.close()

        version = asyncio.run(put())
        key = json.dumps(["T", odd["uid"]["id"]], ensure_ascii=False, separators=(",", ":"))
        held = client.hget("verdict:{s}:entities", key.encode())
        assert held == f'{{"v":{version},"e":{compact(odd)}}}'.encode()
    finally:
        client.close()


# ---------------------------------------------------------------------------------------------
# 3. The child's two answers


def test_a_child_killed_between_its_answers_leaves_the_whole_load_to_the_command(
    tmp_path: Path, redis: RedisProcess
) -> None:
    """The child has parsed and sent its report (the command's write phase has started) and
    is staging when it is killed (SIGKILL: the OOM killer). The command must not switch half
    a file: it loads the file whole (every entity) or fails; no staging key, no process."""
    entities = lending_entities(BIG)
    stores = lending_stores(tmp_path, entities)
    out = tmp_path / "out.txt"
    with cli_load(stores, redis, out) as (process, seen):
        child = forked_child(process, seen)
        assert wait_for(lambda: "write: started" in out.read_text(), 30, step=0.001)
        os.kill(child, signal.SIGKILL)
        assert process.wait(60) == 0, out.read_text()
        assert wait_for(lambda: not alive(child), 5)
    assert len(asyncio.run(exported(redis, "lending"))) == len(entities)
    assert staging_keys(redis) == {}


def test_a_stopped_child_does_not_hang_the_command(tmp_path: Path, redis: RedisProcess) -> None:
    """FINDING 2. The child is stopped (SIGSTOP: a frozen or wedged process) between its two
    answers, with ``--timeout 2``. The command must end on its own (the whole load without
    the child, or an error), never switch half a file, and leave no staging key without
    expiry. Before the fix it waited for the child's answer for ever. Fixed: a child without
    progress for one Redis call's bound plus 5 s is killed and the file loaded whole
    (``HalfJob.quiet_seconds``)."""
    entities = lending_entities(BIG)
    stores = lending_stores(tmp_path, entities)
    out = tmp_path / "out.txt"
    ended: int | None = None
    with cli_load(stores, redis, out, "--timeout", "2") as (process, seen):
        child = forked_child(process, seen)
        assert wait_for(lambda: "write: started" in out.read_text(), 30, step=0.001)
        os.kill(child, signal.SIGSTOP)
        try:
            ended = process.wait(20)
        except subprocess.TimeoutExpired:
            ended = None
        finally:
            if alive(child):
                os.kill(child, signal.SIGKILL)
    count = redis.cli("HLEN", "verdict:{lending}:entities").strip()
    assert count in ("", "0", str(len(entities) + 1)), count  # never half a file
    assert all(ttl > 0 for ttl in staging_keys(redis).values())
    assert ended in (0, 2), "the command still waited for its stopped child after 20 s"


def test_redis_stalled_between_the_answers_ends_in_the_full_load(
    tmp_path: Path, redis: RedisProcess
) -> None:
    """Redis stalls (SIGSTOP) for 3 s, past ``--timeout 2``, once the child has answered the
    first time and both halves stage. The command ends with the whole file switched (or an
    error and nothing switched), never half of it, and no staging key is left."""
    entities = lending_entities(BIG)
    stores = lending_stores(tmp_path, entities)
    out = tmp_path / "out.txt"
    server = redis.process
    assert server is not None
    with cli_load(stores, redis, out, "--timeout", "2") as (process, seen):
        assert wait_for(lambda: bool(children(process.pid)), 30)
        seen.update(children(process.pid))
        assert wait_for(lambda: "write: started" in out.read_text(), 30, step=0.001)
        os.kill(server.pid, signal.SIGSTOP)
        try:
            time.sleep(3)
        finally:
            os.kill(server.pid, signal.SIGCONT)
        code = process.wait(60)
    said = out.read_text()
    assert code in (0, 2), said
    assert "Traceback" not in said
    time.sleep(0.5)
    count = redis.cli("HLEN", "verdict:{lending}:entities").strip()
    assert count == (str(len(entities) + 1) if code == 0 else ""), (code, count)
    assert all(ttl > 0 for ttl in staging_keys(redis).values())


async def test_duplicates_across_halves_and_a_late_cedar_refusal_refuse_as_a_whole_load(
    tmp_path: Path, redis: RedisProcess
) -> None:
    """Files cut in halves whatever their size: the last item repeats an early one (only the
    check across the halves can see it); the last item is a Loan whose amount (a Long) holds
    a national id, which only Cedar refuses, after the child staged its half; a duplicate in
    the second half before a syntax error. Each is refused as the whole load refuses it,
    naming the item and never the value, and Redis keeps nothing."""
    path = tmp_path / "entities.json"
    base = lending_entities(3_000)
    duplicate = [*base, base[5]]
    late = lending_entities(3_000)
    late[-1]["attrs"]["amount"] = "SSN-987-65-4321"
    cases = {
        "duplicate": (json.dumps(duplicate), "entities[3000]: duplicate entity"),
        "late refusal": (json.dumps(late), "amount"),
        "duplicate then syntax": (
            json.dumps([*base[:2_500], base[3], *base[2_500:]])[:-1] + ",]",
            "entities[2500]: duplicate entity",
        ),
    }
    for name, (text, named) in cases.items():
        path.write_text(text)
        whole = await load(redis, path, "lending", LENDING_SCHEMA, LENDING_SHAPE, halves=False)
        split = await load(redis, path, "lending", LENDING_SCHEMA, LENDING_SHAPE, halves=True)
        assert split == whole, name
        assert whole.startswith("lending/entities.json:"), (name, whole)
        assert named in whole, (name, whole)
        assert "987-65-4321" not in whole
        assert redis.cli("KEYS", "*").split() == [], name


# ---------------------------------------------------------------------------------------------
# 4. Ending without freeing


def _left_running(marker: str) -> list[int]:
    """Processes whose command line names ``marker`` (a test's own temporary folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def test_a_load_ending_by_os_exit_prints_everything_and_has_switched(
    tmp_path: Path, redis: RedisProcess
) -> None:
    """Two stores, one loaded in halves (2.6 MB) and one small, stdout and stderr to files
    (block-buffered): exit 0, each store's summary line, the progress to its last line, both
    switched (version and marker), no staging key, no process of the command left."""
    stores = lending_stores(tmp_path, lending_entities(BIG))
    small = [{"uid": {"type": "User", "id": "u"}, "attrs": {}, "parents": []}]
    write_store(stores, "small", {"p.cedar": PERMIT_U, "entities.json": small})
    stdout, stderr = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with stdout.open("w") as out, stderr.open("w") as err:
        code = subprocess.run(
            [sys.executable, "-m", "verdict", "entities", "load", "--stores", str(stores),
             "--redis-url", redis.url],
            env=ENV, cwd=ROOT, stdout=out, stderr=err, timeout=60, check=False,
        ).returncode  # fmt: skip
    printed, progress = stdout.read_text(), stderr.read_text()
    assert code == 0, progress
    lines = printed.splitlines()
    assert len(lines) == 2, printed
    assert lines[0].startswith(f"lending: {BIG:,} entities in ")
    assert lines[1].startswith("small: 1 entities in ")
    assert progress.count("write: done") >= 2, progress
    assert "Traceback" not in progress
    for store_id in ("lending", "small"):
        version = redis.cli("GET", f"verdict:{{{store_id}}}:version").strip()
        assert version
        assert redis.cli("GET", f"verdict:{{{store_id}}}:loaded").strip()
        assert lines[0 if store_id == "lending" else 1].endswith(f"version {version}")
    assert staging_keys(redis) == {}
    assert wait_for(lambda: not _left_running(str(tmp_path)), 5)


def test_a_load_refused_after_another_switched_exits_2_with_every_line(
    tmp_path: Path, redis: RedisProcess
) -> None:
    """Store "a" loads (its data kept for the os._exit), then store "b"'s file is refused (a
    duplicate): exit 2, a's summary on stdout, one error line naming b's item, no traceback;
    a switched, b untouched, no staging key, no process left."""
    stores = tmp_path / "stores"
    one = {"uid": {"type": "User", "id": "u"}, "attrs": {}, "parents": []}
    write_store(stores, "a", {"p.cedar": PERMIT_U, "entities.json": [one]})
    write_store(stores, "b", {"p.cedar": PERMIT_U, "entities.json": [one, one]})
    result = load_command(stores, redis)
    assert result.returncode == 2, result.stderr
    assert result.stdout.startswith("a: 1 entities in "), result.stdout
    assert "error: b/entities.json" in result.stderr
    assert "entities[1]: duplicate entity" in result.stderr
    assert "Traceback" not in result.stderr
    assert redis.cli("GET", "verdict:{a}:loaded").strip()
    assert redis.cli("KEYS", "verdict:{b}:*").split() == []
    assert staging_keys(redis) == {}
    assert wait_for(lambda: not _left_running(str(tmp_path)), 5)
