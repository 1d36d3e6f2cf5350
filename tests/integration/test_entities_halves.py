"""An entities file loaded in two halves (the second by a forked process) ends exactly as one
loaded whole: the same entities in Redis, the same refusals naming the same item and line,
checks across the halves (duplicates, cycles), and a wrong guess at the second half's start
caught and loaded whole. Real Redis, real fork, real Cedar."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from benchmarks.bench_entities_load import lending_entities
from tests.redis_support import RedisProcess, redis_fixture  # noqa: F401 (fixture)
from verdict import cedar
from verdict.entities_halves import shifted, split_offset
from verdict.entities_load import load_entities_file
from verdict.errors import PolicyLoadError
from verdict.json_values import array_items, guess_item_start
from verdict.progress import LineReporter
from verdict.schema_shape import parse_shape
from verdict.store.entity_cache import EntityCache
from verdict.store.redis_store import RedisEntityStore

POLICIES = Path(__file__).parents[2] / "policies"
SCHEMA = cedar.parse_schema((POLICIES / "lending/schema.cedarschema").read_text(), is_json=False)
SHAPE = parse_shape(cedar.schema_text(SCHEMA))


def connect(redis: RedisProcess) -> RedisEntityStore:
    client = Redis.from_url(redis.url, decode_responses=True)
    return RedisEntityStore(client, EntityCache(0, 0), op_timeout=10.0)


async def load(
    redis: RedisProcess, path: Path, *, halves: bool, schema: bool = True
) -> tuple[int, str]:
    """Load ``path`` as store lending (in halves whatever its size, or whole); return the
    entity count and the progress lines."""
    store = connect(redis)
    lines = io.StringIO()
    try:
        report = await load_entities_file(
            store, "lending", path, SCHEMA if schema else None, LineReporter(lines, 60.0),
            shown="lending/entities.json", chunk=500, shape=SHAPE if schema else None,
            connect=(lambda: connect(redis)) if halves else None, split_min_bytes=0,
        )  # fmt: skip
    finally:
        await store.close()
    return report.count, lines.getvalue()


async def exported(redis: RedisProcess) -> list[Any]:
    store = connect(redis)
    try:
        return sorted(await store.export("lending"), key=json.dumps)
    finally:
        await store.close()


async def refusals(redis: RedisProcess, path: Path, **options: Any) -> list[str]:
    """The refusal of ``path`` loaded in halves, then whole."""
    messages = []
    for halves in (True, False):
        with pytest.raises(PolicyLoadError) as refused:
            await load(redis, path, halves=halves, **options)
        messages.append(str(refused.value))
    return messages


def write(tmp_path: Path, entities: list[dict[str, Any]], indent: int | None = None) -> Path:
    path = tmp_path / "entities.json"
    path.write_text(json.dumps(entities, indent=indent))
    return path


async def test_halves_load_what_the_whole_loads(tmp_path: Path, redis: RedisProcess) -> None:
    """5,000 entities, compact and indented: each half staged, one switch; Redis holds what
    a whole load leaves, and the progress counts every entity once."""
    entities = lending_entities(5_000)
    for indent in (None, 2):
        path = write(tmp_path, entities, indent)
        count, lines = await load(redis, path, halves=True)
        assert count == 5_000
        assert "write: done, 5,000/5,000 (100%)" in lines
        split = await exported(redis)
        count, _ = await load(redis, path, halves=False)
        assert await exported(redis) == split
        assert len(split) == 5_000
    assert redis.cli("KEYS", "*staging*").strip() == ""


async def test_a_refusal_in_the_second_half_names_its_place_in_the_file(
    tmp_path: Path, redis: RedisProcess
) -> None:
    """A broken uid, a Long where a String belongs (Cedar's refusal) and a syntax error, each
    in the second half: the same message, item and line as the whole load gives, and the
    store is left as it was."""
    await load(redis, write(tmp_path, lending_entities(2_000)), halves=False)
    before = await exported(redis)
    cases: list[tuple[str, Any]] = [
        ("uid", lambda e: e[1_900].__setitem__("uid", {"type": "Loan"})),
        ("schema", lambda e: e[1_950]["attrs"].__setitem__("status", 7)),
    ]
    for _, breaks in cases:
        entities = lending_entities(2_000)
        breaks(entities)
        path = write(tmp_path, entities)
        messages = await refusals(redis, path)
        assert messages[0] == messages[1]
        assert await exported(redis) == before
    text = json.dumps(lending_entities(2_000), indent=1)
    at = text.index('"parents"', len(text) * 3 // 4)
    broken = text[:at] + "," + text[at:]  # ",," : not JSON
    path = tmp_path / "broken.json"
    path.write_text(broken)
    messages = await refusals(redis, path)
    assert messages[0] == messages[1]
    assert "is not valid JSON at line" in messages[0]


async def test_the_first_refusal_of_the_file_is_named_whichever_half_holds_it(
    tmp_path: Path, redis: RedisProcess
) -> None:
    """Broken items in both halves: the first half's is named, as a whole load names it."""
    entities = lending_entities(2_000)
    entities[10]["uid"] = {"type": "Loan"}
    entities[1_990]["uid"] = {"type": "Loan"}
    path = write(tmp_path, entities)
    with pytest.raises(PolicyLoadError, match=r"entities\[10\]\.uid"):
        await load(redis, path, halves=True)


async def test_a_duplicate_across_the_halves_is_refused_where_it_repeats(
    tmp_path: Path, redis: RedisProcess
) -> None:
    """The last entity repeats the first one's uid: neither half sees both; the parent's
    check across them names the repeat, as a whole load does."""
    entities = lending_entities(2_000)
    entities[-1]["uid"] = dict(entities[0]["uid"])
    entities[-1]["attrs"] = dict(entities[0]["attrs"])
    path = write(tmp_path, entities)
    messages = await refusals(redis, path)
    assert messages[0] == messages[1]
    assert "entities[1999]: duplicate entity" in messages[0]
    assert redis.cli("KEYS", "*").strip() == ""


async def test_a_cycle_across_the_halves_is_refused(tmp_path: Path, redis: RedisProcess) -> None:
    """Without a schema: Group g0 (first half) under g1 (second half) under g0. Each half's
    graph is acyclic; the whole graph is not."""

    def group(id_: str, parent: str | None) -> dict[str, Any]:
        parents = [{"type": "Group", "id": parent}] if parent else []
        return {"uid": {"type": "Group", "id": id_}, "attrs": {}, "parents": parents}

    entities = [group("g0", "g1"), *(group(f"x{i}", None) for i in range(3_000))]
    entities.append(group("g1", "g0"))
    path = write(tmp_path, entities)
    with pytest.raises(PolicyLoadError, match="cycle"):
        await load(redis, path, halves=True, schema=False)
    assert redis.cli("KEYS", "*").strip() == ""


async def test_a_wrong_guess_at_the_second_half_is_caught_and_the_file_loaded_whole(
    tmp_path: Path, redis: RedisProcess
) -> None:
    """Without a schema, entity attributes that are lists of records shaped like entities:
    the guessed start of the second half falls inside an item. The parent's parse finds no
    item starting there; the file is loaded whole, as it is."""
    fake = [{"uid": {"type": "T", "id": str(i)}, "attrs": {}, "parents": []} for i in range(50)]
    entities = [
        {"uid": {"type": "Doc", "id": f"d{i}"}, "attrs": {"copies": fake}, "parents": []}
        for i in range(40)
    ]
    path = write(tmp_path, entities)
    text = path.read_text()
    offset = guess_item_start(text, len(text) // 2)
    assert offset is not None
    items = array_items(text, "entities", 64, stop=offset)
    assert items is not None
    assert len(list(items)) < 40
    assert items.aligned is False  # the guess is inside an item
    count, _ = await load(redis, path, halves=True, schema=False)
    assert count == 40
    assert len(await exported(redis)) == 40
    assert redis.cli("KEYS", "*staging*").strip() == ""


def test_the_split_is_only_for_large_files_at_a_likely_item_start() -> None:
    text = json.dumps(lending_entities(2_000))
    assert split_offset(text, min_bytes=len(text) + 1) is None
    offset = split_offset(text, min_bytes=0)
    assert offset is not None
    assert text.startswith('{"uid"', offset)
    items = array_items(text, "entities", 64, stop=offset)
    assert items is not None
    assert len(list(items)) == text[:offset].count('{"uid"')
    assert items.aligned is True
    assert shifted("entities[3].attrs.name", 100) == "entities[103].attrs.name"
    assert shifted("entities", 100) == "entities"
