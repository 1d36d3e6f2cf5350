"""Redis across processes and failures: cross-replica invalidation, outages, cluster mode."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import grpc
import pytest

from tests.cases import lending_cases
from tests.conftest import POLICIES
from tests.integration.redis_apps import UMA_SUSPENDED, UMA_VIEW, load_lending, redis_app
from tests.processes import verdict_server
from tests.redis_support import RedisProcess
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import entities_pb2 as epb
from verdict._gen.verdict.v1 import entities_pb2_grpc as epb_grpc
from verdict.client import VerdictClient
from verdict.errors import StoreUnavailableError
from verdict.model import Decision


def uma_decision(client: VerdictClient) -> int:
    reply = client.is_authorized(
        UMA_VIEW.principal, UMA_VIEW.action, UMA_VIEW.resource, context=UMA_VIEW.context
    )
    return int(reply.decision)


def test_write_on_one_replica_is_seen_by_another_within_100ms(redis: RedisProcess) -> None:
    """Two server processes share Redis; a write through A changes B's answer within 100 ms."""
    loaded = subprocess.run(
        [
            sys.executable,
            "-m",
            "verdict",
            "entities",
            "load",
            "--stores",
            str(POLICIES),
            "--redis-url",
            redis.url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert loaded.returncode == 0, loaded.stderr
    assert "lending: 42 entities" in loaded.stdout
    with (
        verdict_server("--redis-url", redis.url) as server_a,
        verdict_server("--redis-url", redis.url) as server_b,
    ):
        a, b = server_a.client, server_b.client
        for _ in range(3):  # B now answers from its local cache
            assert uma_decision(b) == pb.DECISION_ALLOW
        stub = epb_grpc.EntityServiceStub(a._channel)
        written = stub.PutEntities(
            epb.PutEntitiesRequest(
                policy_store_id="lending", entities_json=json.dumps([UMA_SUSPENDED])
            ),
            timeout=5,
        )
        time.sleep(0.1)
        assert uma_decision(b) == pb.DECISION_DENY
        # Read-your-writes across replicas, with the version the write returned.
        request = pb.IsAuthorizedRequest(
            min_entity_version=written.version, context_json=json.dumps(UMA_VIEW.context)
        )
        request.principal.type, request.principal.id = "Employee", "uma"
        request.action.type, request.action.id = "Action", "view"
        request.resource.type, request.resource.id = "Loan", "loan-1001"
        assert b.send(request).decision == pb.DECISION_DENY
        request.min_entity_version = written.version + 1000
        with pytest.raises(grpc.RpcError) as info:
            b.send(request)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_redis_outage_never_allows_without_data_and_recovers(redis: RedisProcess) -> None:
    """Kill Redis mid-stream: cache serves within grace, then UNAVAILABLE; a Redis that came
    back without data answers UNAVAILABLE (never a decision); after a reload the same process
    allows again, with no restart."""
    grace = 0.5
    async with redis_app(redis.url, cache_grace_seconds=grace, redis_timeout_seconds=0.2) as app:
        outcomes: list[tuple[float, str]] = []

        async def stream(seconds: float) -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                try:
                    result = await app.authorizer.authorize(UMA_VIEW.request)
                    outcomes.append((time.monotonic(), result.decision.value))
                except StoreUnavailableError:
                    outcomes.append((time.monotonic(), "unavailable"))
                await asyncio.sleep(0.005)

        await stream(0.2)
        killed = time.monotonic()
        redis.stop()
        await stream(grace + 1.0)
        assert outcomes[-1][1] == "unavailable"
        late_allows = [t for t, o in outcomes if o == "allow" and t > killed + grace + 0.3]
        assert late_allows == []
        redis.start()  # same port, no data: Redis forgot every entity
        assert app.listener is not None
        await asyncio.wait_for(app.listener.subscribed.wait(), 10)
        restarted = time.monotonic()
        await stream(0.3)
        after_restart = {o for t, o in outcomes if t > restarted}
        assert after_restart == {"unavailable"}
        await load_lending(app)
        for _ in range(200):
            if (await app.authorizer.authorize(UMA_VIEW.request)).decision is Decision.ALLOW:
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("service did not recover after Redis came back")


async def test_cluster_gives_the_same_answers_and_invalidates(cluster: list[RedisProcess]) -> None:
    """On a 3-master Redis Cluster, decisions match the shared cases and writes invalidate."""
    url = cluster[1].url
    async with (
        redis_app(url, redis_cluster=True) as a,
        redis_app(url, redis_cluster=True, load=False) as b,
    ):
        for case in lending_cases():
            result = await b.authorizer.authorize(case.request)
            assert (result.decision.value, frozenset(result.determining_policies)) == (
                case.expect,
                case.determining,
            )
        assert (await b.authorizer.authorize(UMA_VIEW.request)).allowed
        await a.writes.put("lending", json.dumps([UMA_SUSPENDED]))
        for _ in range(100):
            if not (await b.authorizer.authorize(UMA_VIEW.request)).allowed:
                break
            await asyncio.sleep(0.001)
        else:
            pytest.fail("write on replica A never reached replica B's cache")
