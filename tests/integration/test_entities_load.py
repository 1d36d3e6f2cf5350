"""`verdict entities load` of a large file: phases reported as they go, Cedar's check in a thread
beside the parse and the writes, and a file Cedar rejects changes nothing in Redis."""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from redis.asyncio import Redis

from benchmarks.bench_entities_load import lending_entities
from tests.redis_support import RedisProcess, redis_fixture  # noqa: F401 (fixture)
from verdict import cedar
from verdict.entities_load import PartChecks, load_entities_file, parse_in_parts
from verdict.errors import PolicyLoadError, RequestError
from verdict.progress import BarReporter, LineReporter, reporter
from verdict.schema_shape import parse_shape
from verdict.store.entity_cache import EntityCache
from verdict.store.entity_file import DEFAULT_HIERARCHY
from verdict.store.entity_kinds import EntityKinds
from verdict.store.redis_keys import StoreKeys
from verdict.store.redis_store import RedisEntityStore
from verdict.store.weight import entity_text

POLICIES = Path(__file__).parents[2] / "policies"
# Enough entities that Cedar's check is still running when the writes are staged.
LARGE = 20_000


def large_store(tmp_path: Path, entities: list[dict[str, object]]) -> Path:
    """A copy of the lending store holding ``entities``; returns the stores folder."""
    store = tmp_path / "stores" / "lending"
    shutil.copytree(POLICIES / "lending", store, ignore=shutil.ignore_patterns("tests"))
    (store / "entities.json").write_text(json.dumps(entities))
    return store.parent


def entities_command(redis: RedisProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "verdict", "entities", *args, "--redis-url", redis.url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_large_load_reports_each_phase_and_both_rates(
    tmp_path: Path, redis: RedisProcess
) -> None:
    """Not on a terminal: a line per phase start and end (and progress lines while writing),
    then the whole command's rate beside the Redis write rate; every entity lands."""
    stores = large_store(tmp_path, lending_entities(LARGE))
    loaded = entities_command(redis, "load", "--stores", str(stores))
    assert loaded.returncode == 0, loaded.stderr
    for phase in ("read", "parse", "validate"):
        assert f"{phase}: started" in loaded.stderr
        assert re.search(rf"^{phase}: done, ", loaded.stderr, re.M)
    assert f"write: done, {LARGE:,}/{LARGE:,} (100%)" in loaded.stderr
    summary = re.fullmatch(
        rf"lending: {LARGE:,} entities in [0-9.]+s \(([0-9,]+)/s; "
        r"Redis writes [0-9.]+s, ([0-9,]+)/s\), version \d+\n",
        loaded.stdout,
    )
    assert summary is not None, loaded.stdout
    overall, written = (int(g.replace(",", "")) for g in summary.groups())
    assert 0 < overall <= written  # the whole command includes the writes
    keys = StoreKeys.of("lending")
    assert redis.cli("HLEN", keys.entities).strip() == str(LARGE + 1)  # and the epoch field


def test_a_file_cedar_rejects_changes_nothing(tmp_path: Path, redis: RedisProcess) -> None:
    """The last of 20,000 entities breaks the schema (a Long where a String belongs): Cedar,
    in its thread, rejects the set after the writes were staged; the load exits 2 naming
    the file and the attribute, and Redis still holds the previous load, no staging left."""
    good = large_store(tmp_path / "good", lending_entities(LARGE))
    assert entities_command(redis, "load", "--stores", str(good)).returncode == 0
    keys = StoreKeys.of("lending")
    version = redis.cli("GET", keys.version).strip()
    broken = lending_entities(LARGE)
    broken[-1]["attrs"]["status"] = 7
    broken[0]["attrs"]["name"] = "Renamed partner"
    stores = large_store(tmp_path / "bad", broken)
    refused = entities_command(redis, "load", "--stores", str(stores))
    assert refused.returncode == 2
    assert "lending/entities.json" in refused.stderr
    assert "status" in refused.stderr
    assert "write: started" in refused.stderr  # staged while Cedar checked
    assert redis.cli("GET", keys.version).strip() == version
    assert "staging" not in redis.cli("KEYS", "*")
    exported = entities_command(redis, "export", "--store", "lending")
    partner = next(e for e in json.loads(exported.stdout) if e["uid"]["id"] == "p0")
    assert partner["attrs"]["name"] == "Partner 0"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_a_bar_on_a_terminal_and_lines_elsewhere() -> None:
    """A terminal gets rich bars (phase names and counts drawn); a pipe gets plain lines, at
    most one per interval while a phase advances."""
    screen = _Terminal()
    with reporter(screen) as progress:
        assert isinstance(progress, BarReporter)
        with progress.phase("write", total=4) as writing:
            writing.advance(4)
    assert "write" in screen.getvalue()
    assert "4/4" in screen.getvalue()
    pipe = io.StringIO()
    with reporter(pipe, interval=3600) as progress:
        assert isinstance(progress, LineReporter)
        with progress.phase("write", total=4) as writing:
            for _ in range(4):
                writing.advance(1)
    assert pipe.getvalue().splitlines()[0] == "write: started, 4 to do"
    assert pipe.getvalue().splitlines()[1].startswith("write: done, 4/4 (100%) in ")
    assert len(pipe.getvalue().splitlines()) == 2  # no line between: the interval is an hour


def test_a_sealed_store_loads_only_the_entities_it_was_sealed_with(
    tmp_path: Path, redis: RedisProcess
) -> None:
    """`verdict seal`, then entities.json edited: the load is refused naming the file and
    Redis holds nothing; sealed again, it loads."""
    stores = large_store(tmp_path, lending_entities(1_000))
    sealed = subprocess.run(
        [sys.executable, "-m", "verdict", "seal", "--stores", str(stores)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert sealed.returncode == 0, sealed.stderr
    (stores / "lending" / "entities.json").write_text(json.dumps(lending_entities(990)))
    refused = entities_command(redis, "load", "--stores", str(stores))
    assert refused.returncode == 2
    assert "lending/entities.json:0: does not match store.seal" in refused.stderr
    assert redis.cli("DBSIZE").strip() == "0"


async def test_the_load_checks_the_seal_on_the_bytes_it_parses(
    tmp_path: Path, redis: RedisProcess
) -> None:
    """entities.json swapped between the store's load (which matched the seal) and the
    command's own read: the digest of what it read is checked, before any write."""
    stores = large_store(tmp_path, lending_entities(1_000))
    path = stores / "lending" / "entities.json"
    sealed = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    path.write_text(json.dumps(lending_entities(990)))
    store = RedisEntityStore(Redis.from_url(redis.url), EntityCache(0, 0), op_timeout=5.0)
    try:
        with pytest.raises(PolicyLoadError, match=r"does not match store\.seal"):
            await load_entities_file(
                store, "lending", path, None, LineReporter(io.StringIO(), 1.0),
                shown="lending/entities.json", chunk=500, sealed=sealed,
            )  # fmt: skip
    finally:
        await store.close()
    assert redis.cli("DBSIZE").strip() == "0"


async def test_cedar_checks_one_entity_of_each_kind() -> None:
    """20,000 lending entities are five kinds (partner, role, employee, borrower, loan): Cedar
    is handed five entities and accepts them; one more loan whose amount is a string is a
    kind of its own, handed on, and refused."""

    text = (POLICIES / "lending/schema.cedarschema").read_text()
    schema = cedar.parse_schema(text, is_json=False)
    kinds = EntityKinds(True, parse_shape(cedar.schema_text(schema)))
    entities = lending_entities(LARGE)
    checks = PartChecks(schema, kinds=kinds)
    try:
        parse_in_parts(json.dumps(entities), checks, DEFAULT_HIERARCHY)
        assert checks.submitted == 5
        assert await checks.all_conform()
    finally:
        checks.close()
    odd = json.loads(json.dumps(entities[-1]))
    odd["uid"]["id"] = "odd"
    odd["attrs"]["amount"] = "12"
    checks = PartChecks(schema, kinds=kinds)
    try:
        parse_in_parts(json.dumps([*entities, odd]), checks, DEFAULT_HIERARCHY)
        assert checks.submitted == 6
        assert not await checks.all_conform()
    finally:
        checks.close()


def test_an_entity_its_own_parent_is_refused_though_its_kind_was_seen() -> None:
    """Without a schema, Group::"g4" (parent: itself) has the kind of Group::"g2" (parent:
    another group), which Cedar accepted; the hierarchy check, not Cedar, refuses it."""

    def group(id_: str, *parents: str) -> dict[str, object]:
        return {
            "uid": {"type": "Group", "id": id_},
            "attrs": {},
            "parents": [{"type": "Group", "id": p} for p in parents],
        }

    document = json.dumps([group("g1"), group("g2", "g3"), group("g3"), group("g4", "g4")])
    checks = PartChecks(None, kinds=EntityKinds(False, None))
    try:
        with pytest.raises(RequestError) as refused:
            parse_in_parts(document, checks, DEFAULT_HIERARCHY)
    finally:
        checks.close()
    assert refused.value.field == "entities[3]"
    assert "cycle" in str(refused.value)


def test_each_entity_is_stored_in_one_form_however_the_file_spells_it(
    tmp_path: Path, redis: RedisProcess
) -> None:
    """Escapes, spacing and indentation of the file are not what Redis holds: each entity is
    stored (and weighed) as the one serialisation PutEntities and the memory store use."""
    stores = large_store(tmp_path, [])
    one_line = (
        '{"uid":{"type":"Borrower","id":"b\\u0031"}, "attrs":{"name":"A \\"quoted\\" name",'
        '"partner":{"__entity":{"type":"Partner","id":"p0"}},"kyc_verified":true,'
        '"suspended":false},"parents":[]}'
    )
    partner = {"uid": {"type": "Partner", "id": "p0"}, "parents": []}
    partner["attrs"] = {"name": "P é", "kind": "bank", "active": True}
    indented = json.dumps(partner, indent=2)  # and "é" escaped
    (stores / "lending" / "entities.json").write_text(f"[{one_line},\n{indented}\n]")
    loaded = entities_command(redis, "load", "--stores", str(stores))
    assert loaded.returncode == 0, loaded.stderr
    keys = StoreKeys.of("lending")
    for uid, entity in (('["Borrower","b1"]', json.loads(one_line)), ('["Partner","p0"]', partner)):
        stored = redis.cli("HGET", keys.entities, uid).strip()
        assert stored == '{"v":0,"e":' + entity_text(entity) + "}"
    assert '"b1"' in redis.cli("HGET", keys.entities, '["Borrower","b1"]')


def test_a_load_whose_output_reader_left_ends_without_a_traceback(
    tmp_path: Path, redis: RedisProcess
) -> None:
    """`verdict entities load ... | head -0`: the summary line finds its reader gone once the
    load has switched; the command ends with 141 (as SIGPIPE would), no traceback, the load
    in place (it printed a BrokenPipeError traceback and exited 1)."""
    stores = large_store(tmp_path, lending_entities(2_000))
    process = subprocess.Popen(
        [sys.executable, "-m", "verdict", "entities", "load", "--stores", str(stores),
         "--redis-url", redis.url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    process.stdout.close()  # the reader leaves at once
    _, errors = process.communicate(timeout=120)
    assert process.returncode == 141, errors
    assert "Traceback" not in errors
    assert redis.cli("HLEN", StoreKeys.of("lending").entities).strip() == "2001"
