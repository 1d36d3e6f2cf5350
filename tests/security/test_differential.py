"""Differential test: Verdict (engine, Redis store, gRPC) against cedarpy on generated inputs.

The CI profile runs 1,000 examples per store (2,000 in all, derandomized so CI is repeatable);
``make fuzz`` sets VERDICT_DIFF_EXAMPLES higher and draws fresh random examples.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings

from tests.redis_support import RedisProcess
from tests.security.cedar_corpus import PLAIN_STORE, TYPED_STORE
from tests.security.cedar_gen import Example, examples
from tests.security.differential import EnginePath, GrpcPath, LoopThread, check
from tests.stores import write_store
from verdict.app import build_app, start, stop
from verdict.config import Settings

EXAMPLES = int(os.environ.get("VERDICT_DIFF_EXAMPLES", "1000"))
FRESH = os.environ.get("VERDICT_DIFF_RANDOM") == "1"
PROFILE = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not FRESH,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def paths(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[list[EnginePath | GrpcPath]]:
    """The engine over memory, and a gRPC server over a real Redis, on one background loop."""
    stores = tmp_path_factory.mktemp("stores")
    write_store(stores, "typed", dict(TYPED_STORE))
    write_store(stores, "plain", dict(PLAIN_STORE))
    redis = RedisProcess(_free_port(), Path(tmp_path_factory.mktemp("redis")))
    redis.start()
    loop = LoopThread()
    memory_app = build_app(Settings(stores=stores, default_store="plain"))
    redis_app = build_app(
        Settings(stores=stores, default_store="plain", redis_url=redis.url, listen="127.0.0.1:0")
    )
    try:
        server = loop.run(start(redis_app))
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield [EnginePath(memory_app, loop, {}), GrpcPath(channel, {})]
        loop.run(stop(redis_app, 0))
        loop.run(memory_app.entities.close())
    finally:
        loop.close()
        redis.stop()


def _free_port() -> int:
    from tests.processes import free_port

    return free_port()


@pytest.mark.timeout(max(900, EXAMPLES))
@PROFILE
@given(example=examples("plain"))
def test_schema_free_store_decides_like_cedar(
    paths: list[EnginePath | GrpcPath], example: Example
) -> None:
    """Without a schema, every path accepts what Cedar accepts and decides what Cedar decides."""
    check(example, paths)


@pytest.mark.timeout(max(900, EXAMPLES))
@PROFILE
@given(example=examples("typed"))
def test_namespaced_schema_store_decides_like_cedar(
    paths: list[EnginePath | GrpcPath], example: Example
) -> None:
    """With a namespaced schema, every path accepts what Cedar accepts and decides alike."""
    check(example, paths)


BLOCKED = {"type": "Group", "id": "blocked"}
MALLORY = {"type": "User", "id": "mallory"}
ODD_FORMS = [
    pytest.param({"__entity": {**MALLORY, "v": 1}}, id="extra-key-inside-__entity"),
    pytest.param({**MALLORY, "v": 1}, id="extra-key-beside-type-id"),
    pytest.param(
        {"__extn": {"fn": "decimal", "arg": "1.0"}, "y": {"__entity": MALLORY}}, id="__extn-sibling"
    ),
    pytest.param({"__entity": MALLORY, "x": 1}, id="key-beside-__entity"),
]


@pytest.mark.parametrize("form", ODD_FORMS)
@pytest.mark.parametrize("where", ["context", "stored-attribute"])
def test_non_canonical_references_never_decide_unlike_cedar(
    paths: list[EnginePath | GrpcPath], form: dict[str, object], where: str
) -> None:
    """A non-canonical reference to a blocked user is refused or read as Cedar reads it."""
    entities: list[dict[str, Any]] = [
        {"uid": MALLORY, "attrs": {"level": 5, "name": "m"}, "parents": [BLOCKED]},
        {"uid": BLOCKED, "attrs": {}, "parents": []},
        {"uid": {"type": "User", "id": "alice"}, "attrs": {"level": 9, "name": "a"}, "parents": []},
    ]
    doc: dict[str, Any] = {"uid": {"type": "Doc", "id": "d"}, "attrs": {}, "parents": []}
    context: dict[str, object] = {"flag": False}
    if where == "context":
        context["delegate"] = form
    else:
        doc["attrs"] = {"owner": form}
    request = {
        "principal": {"type": "User", "id": "alice"},
        "action": {"type": "Action", "id": "read"},
        "resource": {"type": "Doc", "id": "d"},
        "context": context,
    }
    check(Example("plain", [*entities, doc], [request, request]), paths)
