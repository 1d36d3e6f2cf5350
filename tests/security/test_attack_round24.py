"""Attack round 24: ``verdict entities load``: Cedar asked once per kind, the load in two halves.

Two mechanisms are attacked. ``store/entity_kinds.py`` gives each entity a key that blanks the
values Cedar's schema check does not read, and Cedar sees only the first entity of each key: a
key that blanked something Cedar reads would load an entity Cedar refuses. ``entities_halves.py``
splits a file of 2 MiB or more near its middle and lets a forked child parse, check and stage
the second half: a wrong guess, a dying child, a signal or a Redis stall must never switch a
partial load, hang, leave processes or leave staging keys that never expire.

Real redis-server on loopback, real fork, real Cedar, the real CLI in subprocesses. The four
findings (a refusal quoting the attribute value; whole and split loads refusing one file for
different reasons; a killed command's child staging on and never ending; staging hashes left
without expiry by a load cut short) are fixed; their tests assert the correct behaviour.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cedarpy
from redis.asyncio import Redis

from benchmarks.bench_entities_load import lending_entities
from tests.redis_support import RedisProcess, redis_fixture  # noqa: F401 (fixture)
from tests.security.test_attack_drain_signals import children
from tests.stores import lending_copy, write_store
from tests.workers_support import alive
from verdict import cedar
from verdict.cedar import SchemaHandle
from verdict.cedar_json import check_entity
from verdict.entities_load import load_entities_file
from verdict.errors import PolicyLoadError
from verdict.progress import LineReporter
from verdict.schema_shape import SchemaShape, parse_shape
from verdict.store.entity_cache import EntityCache
from verdict.store.entity_kinds import EntityKinds
from verdict.store.redis_store import RedisEntityStore

ROOT = Path(__file__).resolve().parents[2]
LENDING = ROOT / "policies" / "lending"
LENDING_SCHEMA = cedar.parse_schema((LENDING / "schema.cedarschema").read_text(), is_json=False)
LENDING_SHAPE = parse_shape(cedar.schema_text(LENDING_SCHEMA))
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
BIG = 10_000  # lending entities: 2.6 MB, over the 2 MiB split threshold

# A schema full of what a kind key could get wrong: enums declared together in a namespace,
# extension types reached through common types (of the namespace and of another), a common
# type named like a built-in (``ipaddr2`` in the empty namespace), a quoted attribute name with
# an escape, a zero-width attribute name, tags, references to enumerated and plain types.
TRICKY_SCHEMA = r"""
namespace App {
  entity Tier, Level enum ["gold", "silver"];
  type Addr = ipaddr;
  type Money = decimal;
  entity Org;
  entity User in [Org, Tier] = {
    "na\"me"?: String, addr?: Addr, when?: datetime, wait?: duration, tier?: Tier,
    lvl?: Level, n?: Long, cash?: Money, org?: Org, "\u{200b}"?: ipaddr
  } tags String;
  action "view" appliesTo { principal: User, resource: Org };
}
type ipaddr2 = String;
entity Top = { a?: App::Addr, b?: ipaddr2, c?: App::Tier };
"""
# JSON schemas Cedar syntax cannot say the same way: a common type named ``ipaddr`` beside the
# built-in one, and a common type and an entity type of one name (an explicit Entity reference
# rendered as the bare name, which the shape's resolution reads as the common type).
JSON_SCHEMAS = [
    {
        "NS": {
            "commonTypes": {"ipaddr": {"type": "String"}},
            "entityTypes": {
                "U": {
                    "shape": {
                        "type": "Record",
                        "attributes": {
                            "a": {"type": "Extension", "name": "ipaddr", "required": False},
                            "b": {"type": "ipaddr", "required": False},
                        },
                    }
                }
            },
            "actions": {},
        }
    },
    {
        "": {
            "commonTypes": {"S": {"type": "String"}},
            "entityTypes": {
                "U": {
                    "shape": {
                        "type": "Record",
                        "attributes": {
                            "a": {"type": "Entity", "name": "S", "required": False},
                            "b": {"type": "S", "required": False},
                        },
                    }
                },
                "S": {},
            },
            "actions": {},
        }
    },
]
VALUES: list[Any] = [
    "10.0.0.1",
    "garbage",
    "1.5",
    "2024-01-01",
    "1h",
    "gold",
    "",
    0,
    7,
    {"__entity": {"type": "App::Tier", "id": "gold"}},
    {"__entity": {"type": "App::Tier", "id": "bronze"}},
    {"__entity": {"type": "App::Org", "id": "x"}},
    {"__entity": {"type": "App::Level", "id": "bronze"}},
    {"__entity": {"type": "S", "id": "x"}},
]


# ---------------------------------------------------------------------------------------------
# Helpers


def entity(
    type_: str,
    id_: str,
    attrs: dict[str, Any] | None = None,
    parents: tuple[tuple[str, str], ...] = (),
    tags: dict[str, Any] | None = None,
) -> dict[str, Any]:
    found: dict[str, Any] = {
        "uid": {"type": type_, "id": id_},
        "attrs": attrs or {},
        "parents": [{"type": t, "id": i} for t, i in parents],
    }
    if tags is not None:
        found["tags"] = tags
    return found


def accepted(item: dict[str, Any], schema: SchemaHandle) -> bool:
    """Cedar's own answer for one entity (the oracle)."""
    try:
        cedarpy.Entities.from_json_str(json.dumps([item]), schema)
    except ValueError:
        return False
    return True


def connect(redis: RedisProcess) -> RedisEntityStore:
    client = Redis.from_url(redis.url, decode_responses=True)
    return RedisEntityStore(client, EntityCache(0, 0), op_timeout=10.0)


async def load(
    redis: RedisProcess,
    path: Path,
    store_id: str,
    schema: SchemaHandle | None,
    shape: SchemaShape | None,
    *,
    halves: bool,
) -> str:
    """Load ``path`` in halves (whatever its size) or whole: "loaded N" or the refusal."""
    store = connect(redis)
    try:
        report = await load_entities_file(
            store, store_id, path, schema, LineReporter(io.StringIO(), 60.0),
            shown=f"{store_id}/entities.json", chunk=500, shape=shape,
            connect=(lambda: connect(redis)) if halves else None, split_min_bytes=0,
        )  # fmt: skip
    except PolicyLoadError as exc:
        return str(exc)
    finally:
        await store.close()
    return f"loaded {report.count}"


async def exported(redis: RedisProcess, store_id: str) -> list[Any]:
    store = connect(redis)
    try:
        return sorted(await store.export(store_id), key=json.dumps)
    finally:
        await store.close()


def staging_keys(redis: RedisProcess) -> dict[str, int]:
    """Every staging key left in Redis and its TTL in seconds (-1: never expires)."""
    keys = redis.cli("KEYS", "*staging*").split()
    return {key: int(redis.cli("TTL", key).strip()) for key in keys}


def lending_stores(tmp_path: Path, entities: list[dict[str, Any]]) -> Path:
    stores = lending_copy(tmp_path)
    (stores / "lending" / "entities.json").write_text(json.dumps(entities))
    return stores


def wait_for(condition: Callable[[], bool], seconds: float, step: float = 0.005) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


@contextmanager
def cli_load(stores: Path, redis: RedisProcess, out: Path, *extra: str) -> Iterator[Any]:
    """``verdict entities load`` in a session of its own, its output in ``out``; whatever of
    it (and its forked child) is left at the end is killed by pid."""
    with out.open("w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "verdict", "entities", "load", "--stores", str(stores),
             "--redis-url", redis.url, *extra],
            env=ENV, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    seen: set[int] = set()
    try:
        yield process, seen
    finally:
        seen.update(children(process.pid) if process.poll() is None else [])
        if process.poll() is None:
            process.kill()
            process.wait(10)
        for pid in seen:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def forked_child(process: subprocess.Popen[Any], seen: set[int]) -> int:
    """The child ``process`` forked for the second half, once it has, noted in ``seen``."""
    assert wait_for(lambda: bool(children(process.pid)), 30)
    child = min(children(process.pid))
    seen.add(child)
    return child


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "verdict", *args],
        env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# 1. Cedar asked once per kind


def test_entities_with_one_kind_key_get_one_answer_from_cedar_on_tricky_schemas() -> None:
    """A hostile schema author declares enums together in a namespace, reaches ipaddr and
    decimal through common types (of their namespace and of another), names a common type
    ``ipaddr`` (JSON) or gives a common type and an entity type one name, quotes and escapes
    attribute names, adds tags; then writes entities that differ only in one value each.
    Every two entities with one kind key must get one answer from Cedar itself."""
    schemas = [cedar.parse_schema(TRICKY_SCHEMA, is_json=False)]
    schemas += [cedar.parse_schema(json.dumps(s), is_json=True) for s in JSON_SCHEMAS]
    mismatches = []
    for schema in schemas:
        shape = parse_shape(cedar.schema_text(schema))
        kinds = EntityKinds(True, shape)
        candidates = []
        for type_, record in shape.attributes.items():
            for name in record.attributes:
                candidates += [entity(type_, "u", {name: value}) for value in VALUES]
        for id_ in ("gold", "bronze", "x", ""):
            for type_ in sorted(shape.entity_types):
                candidates.append(entity(type_, id_))
                candidates.append(entity(type_, "u", parents=((type_, id_),)))
            candidates.append(entity("App::User", "u", parents=(("App::Tier", id_),)))
        candidates += [entity("App::User", "u", tags={"t": v}) for v in ("a", 1, True)]
        groups: dict[Any, set[bool]] = {}
        for item in candidates:
            check_entity(item, "entities[0]")  # the load checks this first
            key = kinds.key(item)
            if key is not None:
                groups.setdefault(key, set()).add(accepted(item, schema))
        mismatches += [key for key, answers in groups.items() if len(answers) > 1]
        assert len(groups) > 20  # the keys do group: the check above had something to hold
    assert mismatches == []


async def test_an_entity_of_a_seen_kind_with_a_value_cedar_refuses_is_refused(
    tmp_path: Path, redis: RedisProcess
) -> None:
    """A hostile author puts a valid entity first and, of the same shape, one whose value only
    Cedar can judge: an enumerated id (in a parent, a reference, its own uid), an ipaddr,
    decimal or datetime reached through a common type. The second must not ride on the
    first's answer: the load is refused and Redis keeps nothing, whole and in halves."""
    schema = cedar.parse_schema(TRICKY_SCHEMA, is_json=False)
    shape = parse_shape(cedar.schema_text(schema))
    pairs = [
        (entity("App::User", "a", parents=(("App::Tier", "gold"),)),
         entity("App::User", "b", parents=(("App::Tier", "bronze"),))),
        (entity("App::User", "a", {"tier": {"__entity": {"type": "App::Tier", "id": "gold"}}}),
         entity("App::User", "b", {"tier": {"__entity": {"type": "App::Tier", "id": "x"}}})),
        (entity("App::Level", "gold"), entity("App::Level", "bronze")),
        (entity("App::User", "a", {"addr": "10.0.0.1"}), entity("App::User", "b", {"addr": "x"})),
        (entity("App::User", "a", {"cash": "1.5"}), entity("App::User", "b", {"cash": "1.5x"})),
        (entity("App::User", "a", {"when": "2024-01-01"}),
         entity("App::User", "b", {"when": "2024-13-01"})),
        (entity("Top", "a", {"a": "::1"}), entity("Top", "b", {"a": "::1::"})),
        (entity("App::User", "a", {"\u200b": "10.0.0.1"}),
         entity("App::User", "b", {"\u200b": "10.0.0.x"})),
    ]  # fmt: skip
    path = tmp_path / "entities.json"
    for good, bad in pairs:
        assert accepted(good, schema)
        assert not accepted(bad, schema)
        filler = [entity("App::Org", f"o{i}") for i in range(30)]
        path.write_text(json.dumps([good, *filler, bad]))
        for halves in (False, True):
            said = await load(redis, path, "app", schema, shape, halves=halves)
            assert said.startswith("app/entities.json:"), said
            # Cedar's reason, naming the entity (its position, where the file holds it) and
            # never the value (finding 1).
            assert ": invalid entities: entities" in said, said
            assert "App::" in said or "Top::" in said, said
            assert redis.cli("KEYS", "*").split() == []  # nothing staged, nothing switched


def test_a_refused_kind_is_refused_end_to_end_by_the_cli(
    tmp_path: Path, redis: RedisProcess
) -> None:
    """The same through ``verdict entities load``: an enumerated parent outside the enum,
    after one inside it, in a store of the tricky schema. Exit 2, nothing in Redis."""
    stores = tmp_path / "stores"
    good = entity("App::User", "a", parents=(("App::Tier", "gold"),))
    bad = entity("App::User", "b", parents=(("App::Tier", "bronze"),))
    write_store(
        stores, "app",
        {"schema.cedarschema": TRICKY_SCHEMA, "all.cedar": "permit(principal, action, resource);",
         "entities.json": [good, bad]},
    )  # fmt: skip
    result = run_cli("entities", "load", "--stores", str(stores), "--redis-url", redis.url)
    assert result.returncode == 2, result.stderr
    assert "does not conform to the schema" in result.stderr
    assert "Traceback" not in result.stderr
    assert redis.cli("KEYS", "*").split() == []


# ---------------------------------------------------------------------------------------------
# 2. The load in two halves


async def test_a_refusal_never_quotes_the_attribute_value(
    tmp_path: Path, redis: RedisProcess
) -> None:
    """A Loan whose ``amount`` (Long) holds a national id: Cedar refuses it and its reason
    quotes the value. The command's error goes to terminals and CI logs: it must name the
    entity and the attribute, never the value (as the reload path does since round 10)."""
    entities = lending_entities(3_000)
    loan = next(e for e in entities if e["uid"]["type"] == "Loan")
    loan["attrs"]["amount"] = "SSN-123-45-6789"
    stores = lending_stores(tmp_path, entities)
    result = run_cli("entities", "load", "--stores", str(stores), "--redis-url", redis.url)
    assert result.returncode == 2
    assert "amount" in result.stderr
    path = stores / "lending" / "entities.json"
    split = await load(redis, path, "lending", LENDING_SCHEMA, LENDING_SHAPE, halves=True)
    assert "amount" in split
    assert "123-45-6789" not in result.stderr
    assert "123-45-6789" not in split


async def test_whole_and_split_loads_refuse_a_file_for_the_same_reason(
    tmp_path: Path, redis: RedisProcess
) -> None:
    """Without a schema: 6,000 groups, a two-entity cycle at items 4900 and 5100, and a stray
    character after the array. A whole load's parts are [2500, 5000) and [5000, 7500): the
    cycle crosses them and the parse fails first at the stray character. Loaded in halves,
    the child's first part ([~3000, ~5500)) holds the whole cycle. The refusal must not
    depend on how the file was cut (the commit's claim: the same item and line)."""

    def group(id_: str, parent: str | None = None) -> dict[str, Any]:
        return entity("Group", id_, parents=(("Group", parent),) if parent else ())

    items = [group(f"x{i}") for i in range(6_000)]
    items[4_900], items[5_100] = group("a", "b"), group("b", "a")
    path = tmp_path / "entities.json"
    path.write_text(json.dumps(items, indent=1) + "\nx")
    whole = await load(redis, path, "s", None, None, halves=False)
    split = await load(redis, path, "s", None, None, halves=True)
    assert "is not valid JSON" in whole
    assert split == whole
    assert redis.cli("KEYS", "*").split() == []


async def test_odd_text_near_the_split_loads_or_is_refused_as_a_whole_load_does(
    tmp_path: Path, redis: RedisProcess
) -> None:
    """A BOM, CRLF line ends, 3 MB of whitespace at the middle, a value nested past the
    limit, and actions in both halves (one with parents its schema does not declare, one
    undeclared, one pair that conforms): each file ends the same loaded in halves and
    whole, and a refused one leaves no staging key."""
    base = json.dumps(lending_entities(3_000), indent=1)
    middle = base.index("},\n", len(base) // 2) + 2
    deep: Any = "x"
    for _ in range(70):
        deep = [deep]
    nested = lending_entities(3_000)
    nested[2_000]["attrs"]["name"] = deep
    approve = entity("Action", "approve")

    def with_actions(view: dict[str, Any]) -> str:
        return json.dumps([approve, *lending_entities(3_000), view])

    texts = {
        "bom": "\ufeff" + base,
        "crlf": base.replace("\n", "\r\n"),
        "whitespace": base[:middle] + " " * 3_000_000 + base[middle:],
        "deep": json.dumps(nested),
        "action parents": with_actions(entity("Action", "view", parents=(("Action", "x"),))),
        "undeclared action": with_actions(entity("Action", "nope")),
        "actions": with_actions(entity("Action", "view")),
    }
    expected = {"crlf": "loaded 3000", "whitespace": "loaded 3000", "actions": "loaded 3002"}
    path = tmp_path / "entities.json"
    for name, text in texts.items():
        path.write_text(text, encoding="utf-8")
        said = [
            await load(redis, path, "lending", LENDING_SCHEMA, LENDING_SHAPE, halves=halves)
            for halves in (False, True)
        ]
        assert said[0] == said[1], name
        assert said[0] == expected.get(name, said[0]), name
        if name not in expected:
            assert said[0].startswith("lending/entities.json:"), name
    assert staging_keys(redis) == {}


def test_the_forked_child_ends_when_the_command_is_killed(
    tmp_path: Path, redis: RedisProcess
) -> None:
    """An operator (or ``kill``, systemd with KillMode=process, an OOM kill) ends the command
    with a signal to its pid alone while it loads a 2.6 MB file. Its forked child must end
    too: not go on writing to Redis for a command that is gone, and never linger."""
    stores = lending_stores(tmp_path, lending_entities(BIG))
    with cli_load(stores, redis, tmp_path / "out.txt") as (process, seen):
        child = forked_child(process, seen)
        process.send_signal(signal.SIGTERM)
        process.wait(10)
        ended = wait_for(lambda: not alive(child), 6.0, step=0.1)
        still = Path(f"/proc/{child}/wchan").read_text() if not ended else ""
        assert ended, f"child {child} still runs, waiting in {still}"


def test_a_load_stopped_during_a_redis_stall_leaves_only_expiring_staging_keys(
    tmp_path: Path, redis: RedisProcess
) -> None:
    """Redis stalls (here: SIGSTOP) while the command stages a 2.6 MB file in halves; the
    operator stops the command (SIGTERM to its process group); Redis resumes and applies
    what reached it. Staging keys may remain (nothing cleans up after a SIGTERM), but every
    one must expire (STAGING_TTL_MS: an abandoned load's keys vanish after an hour)."""
    stores = lending_stores(tmp_path, lending_entities(BIG))
    out = tmp_path / "out.txt"
    server = redis.process
    assert server is not None
    stopped = False
    # The fixture's Redis may have served others; each reading is an INFO of its own.
    loaded, asked = redis.commands_processed("script|load"), redis.commands_processed("info")
    readings = 1

    def prepared() -> bool:
        nonlocal readings
        readings += 1
        scripts = redis.commands_processed("script|load")
        info = redis.commands_processed("info") - readings  # the command's INFO, if asked
        readings += 1
        return scripts >= loaded + 8 and info > asked

    try:
        with cli_load(stores, redis, out) as (process, seen):
            # Paused once the command has prepared (its 8 scripts loaded, then INFO asked),
            # before it writes. Paused after the first script only, it timed out preparing.
            assert wait_for(prepared, 30)
            os.kill(server.pid, signal.SIGSTOP)
            stopped = True
            assert wait_for(lambda: "write: started" in out.read_text(), 30), out.read_text()
            seen.update(children(process.pid))
            time.sleep(0.5)
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(10)
    finally:
        if stopped:
            os.kill(server.pid, signal.SIGCONT)
    time.sleep(1.0)  # Redis applies what reached it
    left = staging_keys(redis)
    assert redis.cli("GET", "verdict:{lending}:version").strip() == ""  # nothing switched
    assert all(ttl > 0 for ttl in left.values()), left


def test_redis_stopping_mid_load_is_one_error_line_and_no_process_is_left(
    tmp_path: Path, redis: RedisProcess
) -> None:
    """Redis dies as the halves start writing: the command ends (exit 2) with one error line,
    no traceback, and neither it nor its child keeps running."""
    stores = lending_stores(tmp_path, lending_entities(BIG))
    out = tmp_path / "out.txt"
    with cli_load(stores, redis, out, "--timeout", "2") as (process, seen):
        assert wait_for(lambda: bool(children(process.pid)), 30)
        seen.update(children(process.pid))
        assert wait_for(lambda: "write: started" in out.read_text(), 30)
        redis.stop()
        assert process.wait(30) == 2
        text = out.read_text()
        assert "error: " in text
        assert "Traceback" not in text
        assert wait_for(lambda: not any(alive(pid) for pid in seen), 5)


async def test_ctrl_c_mid_load_keeps_the_old_entities_and_leaves_nothing_alive(
    tmp_path: Path, redis: RedisProcess
) -> None:
    """A store is loaded; a second load of a changed 2.6 MB file gets Ctrl-C (SIGINT to the
    process group: command and child) while it writes. The store keeps its first entities,
    no process is left, and no staging key that never expires."""
    first = lending_entities(2_000)
    stores = lending_stores(tmp_path, first)
    assert (
        run_cli("entities", "load", "--stores", str(stores), "--redis-url", redis.url).returncode
        == 0
    )
    before = await exported(redis, "lending")
    (stores / "lending" / "entities.json").write_text(json.dumps(lending_entities(BIG, seed=2)))
    out = tmp_path / "out.txt"
    with cli_load(stores, redis, out) as (process, seen):
        assert wait_for(lambda: bool(children(process.pid)), 30)
        seen.update(children(process.pid))
        assert wait_for(lambda: "write: started" in out.read_text(), 30)
        os.killpg(process.pid, signal.SIGINT)
        process.wait(30)
        assert process.returncode == 130  # 128 + SIGINT, one line, no traceback
        said = out.read_text()
        assert said.rstrip().endswith("interrupted"), said[-2000:]
        assert "Traceback" not in said
        assert wait_for(lambda: not any(alive(pid) for pid in seen), 5)
    await asyncio.sleep(0.5)
    assert await exported(redis, "lending") == before
    assert all(ttl > 0 for ttl in staging_keys(redis).values())


async def test_a_child_killed_while_it_parses_leaves_the_whole_load_to_the_command(
    tmp_path: Path, redis: RedisProcess
) -> None:
    """The forked child dies (SIGKILL: the OOM killer) while it parses its half. The command
    must neither hang nor switch half a file: it loads the file whole, every entity, and
    leaves no staging key and no process behind."""
    entities = lending_entities(BIG)
    stores = lending_stores(tmp_path, entities)
    out = tmp_path / "out.txt"
    with cli_load(stores, redis, out) as (process, seen):
        child = forked_child(process, seen)
        os.kill(child, signal.SIGKILL)
        assert process.wait(60) == 0, out.read_text()
        assert wait_for(lambda: not alive(child), 5)
    assert len(await exported(redis, "lending")) == len(entities)
    assert staging_keys(redis) == {}
