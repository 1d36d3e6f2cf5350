"""The audit log and decision metrics on a live server: records equal decisions under
concurrent load (file and Redis sinks), request ids travel, and a dead sink in deny mode fails
the call closed."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from tests.cases import lending_cases
from tests.redis_support import RedisProcess
from tests.security.authn_support import verdict_app
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc
from verdict.audit.verify import verify
from verdict.client import build_request

CASES = lending_cases()


def request(index: int) -> pb.IsAuthorizedRequest:
    """The lending case ``index`` (cycling) as a request."""
    case = CASES[index % len(CASES)]
    return build_request(case.principal, case.action, case.resource, context=case.context)


async def decide_concurrently(port: int, calls: int, batches: int) -> list[tuple[str, str]]:
    """``calls`` IsAuthorized and ``batches`` BatchAuthorize(5) calls from 8 callers; the
    (request id, decision) of every decision made."""
    made: list[tuple[str, str]] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.AuthorizationServiceStub(channel)

        async def one(n: int) -> None:
            rid = f"req-{n}"
            call = stub.IsAuthorized(request(n), metadata=(("x-request-id", rid),))
            reply = await call
            made.append((rid, pb.Decision.Name(reply.decision).removeprefix("DECISION_")))

        async def batch(n: int) -> None:
            rid = f"batch-{n}"
            items = [request(n * 5 + i) for i in range(5)]
            reply = await stub.BatchAuthorize(
                pb.BatchAuthorizeRequest(requests=items), metadata=(("x-request-id", rid),)
            )
            for result in reply.results:
                made.append((rid, pb.Decision.Name(result.response.decision)[9:]))

        work = [one(n) for n in range(calls)] + [batch(n) for n in range(batches)]
        for start in range(0, len(work), 8):
            await asyncio.gather(*work[start : start + 8])
    return made


def summary(records: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(request id, decision) of each record, sorted."""
    return sorted((r["request_id"], r["decision"]) for r in records)


async def test_file_records_equal_decisions(tmp_path: Path) -> None:
    """120 decisions (40 single, 16 batches of 5) made by 8 concurrent callers leave exactly
    120 records in the file, one per decision with its request id and decision; the chain
    verifies; context holds only the attributes the store allows (mfa, now)."""
    path = tmp_path / "audit.jsonl"
    async with verdict_app(audit_sink="file", audit_file=path) as app:
        assert app.server is not None
        made = await decide_concurrently(app.server.port, 40, 16)
    lines = await asyncio.to_thread(lambda: path.read_text().splitlines())
    records = [json.loads(line) for line in lines]
    assert len(made) == 120
    assert summary(records) == sorted(made)
    assert verify(lines) == (120, [])
    assert all(set(r.get("context", {})) <= {"mfa", "now"} for r in records)
    assert all("source_ip" not in json.dumps(r.get("context", {})) for r in records)
    assert {r["item"] for r in records if r["method"] == "BatchAuthorize"} == set(range(5))


async def test_redis_stream_records_equal_decisions(redis: RedisProcess) -> None:
    """The same with the Redis stream sink: one stream entry per decision."""
    async with verdict_app(audit_sink="redis", audit_redis_url=redis.url) as app:
        assert app.server is not None
        made = await decide_concurrently(app.server.port, 24, 8)
    client = aioredis.from_url(redis.url)
    entries: Any = await client.xrange("verdict:audit")
    await client.aclose()
    lines = [fields[b"r"].decode() for _, fields in entries]
    assert summary([json.loads(line) for line in lines]) == sorted(made)
    assert verify(lines) == (len(made), [])


async def test_a_dead_sink_in_deny_mode_fails_decisions_closed(redis: RedisProcess) -> None:
    """Deny mode: once Redis (the sink) is gone, a decision is UNAVAILABLE 'audit log
    unavailable', never answered without its record."""
    async with verdict_app(
        audit_sink="redis", audit_redis_url=redis.url, audit_wait_seconds=0.5
    ) as app:
        assert app.server is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as channel:
            stub = pb_grpc.AuthorizationServiceStub(channel)
            await stub.IsAuthorized(request(0), timeout=5)
            redis.stop()
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.IsAuthorized(request(0), timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert refused.value.details() == "audit log unavailable"


def sample(name: str, labels: dict[str, str]) -> float:
    """A metric sample's value (0 when absent)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_request_ids_and_metrics_after_a_known_sequence() -> None:
    """A caller's x-request-id comes back in the trailing metadata (a new one is made when it
    sends none); three ALLOWs, one NO_PERMIT DENY and one EXPLICIT_FORBID DENY move
    verdict_decisions_total by exactly those counts, and the RPC histogram counts 5 OK calls."""
    allow = next(c for c in CASES if c.expect == "allow")
    nothing = next(c for c in CASES if c.expect == "deny" and not c.determining)
    forbid = next(c for c in CASES if c.expect == "deny" and c.determining)
    labels = {
        "allow": {"store": "lending", "decision": "allow", "deny_kind": ""},
        "none": {"store": "lending", "decision": "deny", "deny_kind": "NO_PERMIT_MATCHED"},
        "forbid": {"store": "lending", "decision": "deny", "deny_kind": "EXPLICIT_FORBID"},
    }
    before = {k: sample("verdict_decisions_total", v) for k, v in labels.items()}
    calls = {"method": "IsAuthorized", "code": "OK"}
    count_before = sample("verdict_rpc_duration_seconds_count", calls)
    async with verdict_app() as app:
        assert app.server is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as channel:
            stub = pb_grpc.AuthorizationServiceStub(channel)
            for case in (allow, allow, allow, nothing, forbid):
                built = build_request(
                    case.principal, case.action, case.resource, context=case.context
                )
                call = stub.IsAuthorized(built, metadata=(("x-request-id", "trace-7"),))
                await call
                assert ("x-request-id", "trace-7") in tuple(await call.trailing_metadata())
            anonymous = stub.IsAuthorized(request(0))
            await anonymous
            echoed = dict(tuple(await anonymous.trailing_metadata()))["x-request-id"]
            assert len(echoed) == 32
    after = {k: sample("verdict_decisions_total", v) for k, v in labels.items()}
    assert after["allow"] - before["allow"] == 3 + (CASES[0].expect == "allow")
    assert after["none"] - before["none"] == 1
    assert after["forbid"] - before["forbid"] == 1
    assert sample("verdict_rpc_duration_seconds_count", calls) - count_before == 6


async def test_stdout_records_equal_decisions(capsys: pytest.CaptureFixture[str]) -> None:
    """The stdout sink: one JSON line per decision on standard output, chained."""
    async with verdict_app(audit_sink="stdout") as app:
        assert app.server is not None
        made = await decide_concurrently(app.server.port, 16, 4)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith('{"action"')]
    assert summary([json.loads(line) for line in lines]) == sorted(made)
    assert verify(lines) == (len(made), [])


async def test_metrics_of_entity_reads_and_evaluation_errors() -> None:
    """Entity reads are timed per store; a decision whose policies errored is counted."""
    before = sample("verdict_evaluation_errors_total", {"store": "lending"})
    reads = sample("verdict_entity_read_seconds_count", {"store": "lending"})
    unknown = next(c for c in CASES if str(c.principal) == 'Employee::"nobody"')
    async with verdict_app() as app:
        assert app.server is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as channel:
            stub = pb_grpc.AuthorizationServiceStub(channel)
            built = build_request(
                unknown.principal, unknown.action, unknown.resource, context=unknown.context
            )
            await stub.IsAuthorized(built)
            await stub.IsAuthorized(request(0))
    assert sample("verdict_evaluation_errors_total", {"store": "lending"}) == before + 1
    assert sample("verdict_entity_read_seconds_count", {"store": "lending"}) == reads + 2


async def test_a_hostile_request_id_is_replaced_not_echoed(tmp_path: Path) -> None:
    """An x-request-id past 128 characters is not echoed, logged or recorded: the call is
    answered (no crash) under a fresh id, and the audit record carries that id."""
    path = tmp_path / "audit.jsonl"
    hostile = "x" * 500
    async with verdict_app(audit_sink="file", audit_file=path) as app:
        assert app.server is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as channel:
            call = pb_grpc.AuthorizationServiceStub(channel).IsAuthorized(
                request(0), metadata=(("x-request-id", hostile),)
            )
            reply = await call
            echoed = dict(tuple(await call.trailing_metadata()))["x-request-id"]
    assert reply.decision == pb.DECISION_ALLOW
    assert echoed != hostile
    assert len(echoed) == 32
    record = json.loads((await asyncio.to_thread(path.read_text)).splitlines()[0])
    assert record["request_id"] == echoed
