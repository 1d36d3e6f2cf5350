"""A parent cycle or an over-long chain in an entities file is refused by name before Cedar sees
it, by every tool that reads one: `verdict serve` (at its start and at a hot reload, where the
last good version serves on), `verdict check`, `verdict test` and `verdict entities load`.

Cedar closes the parent graph of every entity set it parses, and cedarpy crashes on a long
cycle: before, a 10,000-entity cycle in a store's entities.json ended `verdict serve` with
SIGSEGV (-11) at its start, and with `--workers 2` every worker died at each restart
("worker_failed_to_start", no reason given); `verdict check` and `verdict entities load` died
the same way, and a 10,000-entity chain held Cedar for ~56 s. Request entities and entity
writes were bounded already (test_engine_crash_payload.py); files now are held to the same
per-entity bounds (Settings: max_hierarchy_depth, max_entity_ancestors).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.processes import free_port
from tests.redis_support import RedisProcess, redis_fixture  # noqa: F401 (fixture)
from tests.security.serve_process import running_server, serve_command
from tests.security.test_attack_lifecycle import allowed_case, decide, reload
from tests.stores import entity, lending_copy
from verdict.client import ALLOW
from verdict.store.redis_keys import StoreKeys

CYCLE_LENGTH = 10_000
CYCLE_MESSAGE = 'entities[0]: Group::"g0": its parents form a cycle back to itself'


def cycle(length: int = CYCLE_LENGTH) -> list[dict[str, Any]]:
    """``Group::"g0" -> g1 -> ... -> g0``: the payload that crashed cedarpy."""
    return [
        entity("Group", f"g{i}", parents=[("Group", f"g{(i + 1) % length}")]) for i in range(length)
    ]


def chain(length: int) -> list[dict[str, Any]]:
    """``Group::"g0" -> g1 -> ... -> g<length-1>``: depth length-1 at g0."""
    return [
        entity("Group", f"g{i}", parents=[("Group", f"g{i + 1}")] if i + 1 < length else [])
        for i in range(length)
    ]


def plain_store(tmp_path: Path, entities: list[dict[str, Any]]) -> Path:
    """A stores folder with one schema-less store ``s``: allow all, these entities."""
    store = tmp_path / "stores" / "s"
    store.mkdir(parents=True)
    (store / "p.cedar").write_text('@id("all") permit(principal, action, resource);\n')
    (store / "entities.json").write_text(json.dumps(entities, indent=1))
    return store.parent


def run(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
    )


def verdict(*args: str) -> list[str]:
    return [sys.executable, "-m", "verdict", *args]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_refuses_to_start_on_a_cycle_naming_the_entity(tmp_path: Path, workers: str) -> None:
    stores = plain_store(tmp_path, cycle())
    served = run(serve_command(stores, free_port(), "--workers", workers))
    assert served.returncode == 2, (served.returncode, served.stderr[-2000:])
    assert f"s/entities.json:2: invalid entities: {CYCLE_MESSAGE}" in served.stderr
    assert "Traceback" not in served.stderr


def test_check_refuses_a_cycle_and_a_chain_past_the_depth_limit(tmp_path: Path) -> None:
    stores = plain_store(tmp_path, cycle())
    check = verdict("check", "--stores", str(stores), "--principal", "Group::g1")
    check += ["--action", "Action::a", "--resource", "Group::g2"]
    refused = run(check)
    assert refused.returncode == 2, refused.stderr
    assert CYCLE_MESSAGE in refused.stderr
    (stores / "s" / "entities.json").write_text(json.dumps(chain(150)))
    too_deep = run(check)
    assert too_deep.returncode == 2, too_deep.stderr
    assert 'entities[48]: Group::"g48": its parent chain is longer than 100' in too_deep.stderr
    # The limit is the server's setting, as for writes: raised, the same file loads.
    raised = run(check, env={"VERDICT_MAX_HIERARCHY_DEPTH": "200"})
    assert raised.returncode == 0, raised.stderr
    assert "decision: ALLOW" in raised.stdout


def test_verdict_test_refuses_a_suite_entities_file_holding_a_cycle(tmp_path: Path) -> None:
    stores = plain_store(tmp_path, [])
    tests = stores / "s" / "tests"
    tests.mkdir()
    (tests / "cycle.entities.json").write_text(json.dumps(cycle()))
    case: dict[str, Any] = {"name": "c", "principal": "Group::g1", "action": "Action::a"}
    case |= {"resource": "Group::g2", "expect": {"decision": "allow"}}
    suite = {"name": "s", "store": "s", "entities": "cycle.entities.json", "cases": [case]}
    (tests / "suite.json").write_text(json.dumps(suite))
    tested = run(verdict("test", "--stores", str(stores)))
    assert tested.returncode == 2, (tested.returncode, tested.stdout, tested.stderr)
    assert CYCLE_MESSAGE in tested.stdout + tested.stderr
    assert "Traceback" not in tested.stderr


async def test_a_cycle_reloaded_into_a_running_server_fails_and_the_last_good_version_serves(
    tmp_path: Path,
) -> None:
    stores = lending_copy(tmp_path)
    with running_server(stores, "--workers", "1") as (process, port):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert (await decide(channel, allowed_case())).decision == ALLOW
            current = stores / "lending" / "entities.json"
            entities = json.loads(current.read_text())
            staged = current.with_name("entities.json.new")
            staged.write_text(json.dumps(entities + cycle()))
            os.replace(staged, current)
            states = await reload(channel)
            problems = [(p.file, p.message) for p in states["lending"].problems]
            assert len(problems) == 1, states["lending"]
            file, message = problems[0]
            assert file == "lending/entities.json"
            assert message.endswith("its parents form a cycle back to itself"), message
            assert process.poll() is None
            assert (await decide(channel, allowed_case())).decision == ALLOW
            # And by signal, as an operator's edit is: still alive, still answering.
            process.send_signal(signal.SIGHUP)
            await asyncio.sleep(1.0)
            assert process.poll() is None
            assert (await decide(channel, allowed_case())).decision == ALLOW


def test_entities_load_refuses_a_cycle_and_leaves_redis_as_it_was(
    tmp_path: Path, redis: RedisProcess
) -> None:
    stores = lending_copy(tmp_path)
    command = verdict("entities", "load", "--stores", str(stores), "--redis-url", redis.url)
    loaded = run(command)
    assert loaded.returncode == 0, loaded.stderr
    version = redis.cli("GET", StoreKeys.of("lending").version).strip()
    path = stores / "lending" / "entities.json"
    # After the 58 lending entities, past the first part handed to Cedar: the cycle is refused
    # by the hierarchy check before any part of it reaches Cedar (which would crash on it).
    entities = json.loads(path.read_text())
    roles = [
        entity("Role", f"r{i}", parents=[("Role", f"r{(i + 1) % CYCLE_LENGTH}")])
        for i in range(CYCLE_LENGTH)
    ]
    path.write_text(json.dumps(entities + roles))
    refused = run(command)
    assert refused.returncode == 2, (refused.returncode, refused.stderr[-2000:])
    # Named where first seen: in the first part (a chain past the limit) or the whole (a cycle).
    named = re.search(
        r'entities\[\d+\]: Role::"r\d+": its (parents form a cycle|parent chain)', refused.stderr
    )
    assert named, refused.stderr
    assert "Traceback" not in refused.stderr
    assert redis.cli("GET", StoreKeys.of("lending").version).strip() == version
