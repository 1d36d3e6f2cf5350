"""Attack round 20: the decision audit log, the remote entity CLI, and the Redis entity store
shared by two ``verdict serve`` processes.

Probes ran against the in-process app used by the other security tests (``verdict_app``), real
``verdict serve`` processes and the ``verdict`` CLI as subprocesses, and a real redis-server on
loopback. Findings, all fixed in the same session (each a test asserting the correct
behaviour; they were strict xfails): 1 every batch item is recorded at its position
(``servicer.BatchAuthorize``, ``audit.record``); 2 the remote entity commands parse with
``loads_strict``; 3 ``audit.log`` drops the queued records of a refused caller and marks a batch
whose write outlasted a caller's wait (``Sink.written_unacknowledged``), refusing all its
callers; 4 was the uncapped ``entity_data_corrupt`` line of every decision filling a stderr
pipe that the test harness did not drain, the blocked write holding the event loop
(``redis_decode.corrupt`` now logs through a ``LogBudget``):

1. **Wrong audit record: a batch item's ``item`` is its position among the items that
   converted, not in the call, and an item refused at conversion has no record.**
   ``BatchAuthorize([bad context, case 1, case 2])`` answers three results; the audit file
   holds two records, ``"item": 0`` for case 1 and ``"item": 1`` for case 2 (their positions
   are 1 and 2). ``transport/servicer.py`` drops the items that failed ``_convert`` before
   ``DecisionRecorder.decided``, which numbers what is left (``transport/decisions.py``,
   ``item = index``). docs/audit.md: "A batch item carries ``item``, its position in the
   call. An item that failed (an invalid request ...) is recorded with ``"decision":
   "ERROR"``". A compliance reader joining records to a call's results attributes each
   decision to the wrong request.
2. **Wrong data written: ``verdict entities put`` (and ``get``/``delete --from``) read their
   files with ``json.loads``, which keeps the last of repeated keys, and send
   ``json.dumps`` of that.** A file holding ``"suspended": true, ..., "suspended": false``
   is written as ``suspended = false`` (exit 0), where the server (and ``verdict check``,
   ``entities load``) refuses repeated keys: the rule "Duplicate keys are refused in every
   JSON input" (docs/security.md, round with the MFA ALLOW) is bypassed by the operator's
   own tool; a reviewer reading the first value sees a suspended borrower that is not.
   ``--from`` with ``{"type": "Borrower", "id": "alice", "id": "bob"}`` reads (or deletes)
   bob. Root: ``cli/entities_remote.py`` ``_read_json`` and ``client.put_request``.
3. **Wrong audit record: deny mode answers UNAVAILABLE when ``audit_wait_seconds`` passes,
   but the record stays queued (or its write in flight) and is written later as an
   acknowledged, answered decision.** Redis sink, ``audit_wait_seconds`` 0.15 s, Redis
   stopped 0.3 s (less than the client's 0.5 s socket timeout): the call is refused, the
   XADD then succeeds, and the stream shows the refused decision as ALLOW, unmarked, a
   signed chain intact. Round 7 fixed only the case where the write itself fails (a new
   segment marks it); a file sink on a slow disk (fsync) does the same. Root:
   ``audit/log.py`` ``_record_or_refuse`` gives up on ``written`` without telling the writer.
4. **Stall: a load marker of the wrong type hangs a decision until its deadline.** Two
   ``verdict serve --workers 1`` on one Redis, the store written through A and B's cache
   warm; someone replaces ``verdict:{s}:loaded`` by a list. B answers ALLOW until the grace,
   then INTERNAL, but one call 0.5-1.6 s after the change waits out its whole deadline
   (DEADLINE_EXCEEDED at 2 s / 5 s; 6 of 6 runs). Not seen with one server that wrote
   itself. Root cause (found by the lead with py-spy during the hung call): the event loop
   blocked in structlog's write to stderr, a pipe full of one ``entity_data_corrupt`` line
   per decision.

Held (plain tests below): two ``verdict serve`` processes on one Redis, a membership revoked
through one and asked of the other with the revoke's version and without it (after 0.1 s),
its cache warmed by earlier ALLOWs: DENY every time; ``FLUSHALL`` under a warm cache: ALLOW
only within the documented grace, UNAVAILABLE after it; batch records of valid items numbered
in order; the server's own refusal of repeated keys; the client never retries writes on
UNAVAILABLE (``client.channel_options`` names only decisions and GetEntities).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis as redis_sync
import redis.asyncio as aioredis

from tests.audit.test_audit_server import request
from tests.integration.test_cli import verdict
from tests.redis_support import RedisProcess, redis_fixture  # noqa: F401 (fixture)
from tests.security.authn_support import verdict_app
from tests.security.serve_process import fresh_channel, running_server
from tests.security.test_attack_round7 import KEY, acknowledged_ids, decide
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc
from verdict._gen.verdict.v1 import entities_pb2 as epb
from verdict._gen.verdict.v1 import entities_pb2_grpc as epb_grpc
from verdict.audit.verify import verify
from verdict.client import channel_options

# --- 1. Batch items in the audit log --------------------------------------------------------


async def test_a_batch_items_record_carries_its_position_in_the_call(tmp_path: Path) -> None:
    """Item 0 of a batch is refused (its context is not JSON), items 1 and 2 are decided. The
    log holds one record per item, each ``item`` its position in the call: 0 an ERROR naming
    ``context_json``, 1 and 2 the decisions answered for cases 1 and 2."""
    path = tmp_path / "audit.jsonl"
    bad = request(0)
    bad.context_json = "{not json"
    items = [bad, request(1), request(2)]
    async with verdict_app(audit_sink="file", audit_file=path) as app:
        assert app.server is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as channel:
            stub = pb_grpc.AuthorizationServiceStub(channel)
            reply = await stub.BatchAuthorize(pb.BatchAuthorizeRequest(requests=items), timeout=5)
    assert reply.results[0].HasField("error")
    lines = (await asyncio.to_thread(path.read_text, encoding="utf-8")).splitlines()
    records = {json.loads(line)["item"]: json.loads(line) for line in lines}
    for position in (1, 2):
        sent = items[position]
        assert records[position]["resource"]["id"] == sent.resource.id
        decided = pb.Decision.Name(reply.results[position].response.decision)
        assert records[position]["decision"] == decided.removeprefix("DECISION_")
    assert records[0]["decision"] == "ERROR"
    assert records[0].get("field") == "context_json"
    assert sorted(records) == [0, 1, 2]


async def test_a_batch_of_valid_items_is_numbered_in_order(tmp_path: Path) -> None:
    """Held: with every item valid, records are numbered 0..n-1 by position, resources
    matching the items sent."""
    path = tmp_path / "audit.jsonl"
    items = [request(n) for n in range(4)]
    async with verdict_app(audit_sink="file", audit_file=path) as app:
        assert app.server is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as channel:
            stub = pb_grpc.AuthorizationServiceStub(channel)
            await stub.BatchAuthorize(pb.BatchAuthorizeRequest(requests=items), timeout=5)
    lines = (await asyncio.to_thread(path.read_text, encoding="utf-8")).splitlines()
    records = [json.loads(line) for line in lines]
    assert [(r["item"], r["resource"]["id"]) for r in records] == [
        (n, items[n].resource.id) for n in range(4)
    ]
    assert verify(lines) == (4, [])


# --- 2. The remote entity CLI and repeated keys ---------------------------------------------

ALICE_REPEATED = (
    '[{"uid": {"type": "Borrower", "id": "alice"}, "attrs": {"name": "Alice Archer", '
    '"partner": {"__entity": {"type": "Partner", "id": "first-river-bank"}}, '
    '"kyc_verified": true, "suspended": true, "suspended": false}, "parents": []}]'
)


async def stored_alice(port: int) -> dict[str, Any]:
    """Borrower alice's attributes as the server stores them."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = epb_grpc.EntityServiceStub(channel)
        reply = await stub.GetEntities(
            epb.GetEntitiesRequest(uids=[pb.EntityUid(type="Borrower", id="alice")]), timeout=5
        )
    attrs: dict[str, Any] = json.loads(reply.entities_json)[0]["attrs"]
    return attrs


async def test_the_server_refuses_repeated_keys_in_a_write() -> None:
    """Held (the rule the CLI must keep): PutEntities of the same text straight to the server
    is INVALID_ARGUMENT, nothing written."""
    async with verdict_app() as app:
        assert app.server is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as channel:
            stub = epb_grpc.EntityServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.PutEntities(
                    epb.PutEntitiesRequest(entities_json=ALICE_REPEATED), timeout=5
                )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "repeats a key" in (refused.value.details() or "")
        assert (await stored_alice(app.server.port))["suspended"] is False  # the file's value


async def test_entities_put_refuses_a_file_with_repeated_keys(tmp_path: Path) -> None:
    """`verdict entities put FILE --server` with ``"suspended": true, ..., "suspended":
    false``: refused (exit 2, naming the repeated key) as the server and every other reader
    refuse it; never written as whichever value the CLI's parser kept."""
    source = tmp_path / "alice.json"
    source.write_text(ALICE_REPEATED, encoding="utf-8")
    async with verdict_app() as app:
        assert app.server is not None
        where = f"127.0.0.1:{app.server.port}"
        # alice suspended first, so that a write of the last value shows as a change
        async with grpc.aio.insecure_channel(where) as channel:
            suspended = ALICE_REPEATED.replace(', "suspended": false', "")
            await epb_grpc.EntityServiceStub(channel).PutEntities(
                epb.PutEntitiesRequest(entities_json=suspended), timeout=5
            )
        done = await asyncio.to_thread(verdict, "entities", "put", str(source), "--server", where)
        after = await stored_alice(app.server.port)
    assert after["suspended"] is True, "the CLI wrote the last of two repeated values"
    assert done.returncode == 2, done.stdout
    assert "repeats a key" in done.stderr


async def test_entities_get_from_a_file_with_a_repeated_id_is_refused(tmp_path: Path) -> None:
    """``--from`` holding ``{"type": "Borrower", "id": "alice", "id": "bob"}`` names no one
    uid: exit 2, nothing asked (a delete of it would delete bob)."""
    source = tmp_path / "uids.json"
    source.write_text('[{"type": "Borrower", "id": "alice", "id": "bob"}]', encoding="utf-8")
    async with verdict_app() as app:
        assert app.server is not None
        where = f"127.0.0.1:{app.server.port}"
        done = await asyncio.to_thread(
            verdict, "entities", "get", "--from", str(source), "--server", where
        )
    assert '"bob"' not in done.stdout
    assert done.returncode == 2, done.stdout


def test_the_client_never_retries_entity_writes() -> None:
    """Held: the client's retry policy (UNAVAILABLE) names decisions and GetEntities only; a
    write that may have been applied is never sent again by the channel."""
    options = dict(channel_options(3))
    config = json.loads(options["grpc.service_config"])
    names = [name for entry in config["methodConfig"] for name in entry["name"]]
    assert {"service": "verdict.v1.EntityService"} not in names
    assert all(name.get("method") not in ("PutEntities", "DeleteEntities") for name in names)
    assert {"service": "verdict.v1.EntityService", "method": "GetEntities"} in names


# --- 3. A deny-mode decision refused for its slow record -----------------------------------


async def test_a_decision_refused_for_a_slow_sink_is_not_recorded_as_answered(
    redis: RedisProcess, tmp_path: Path
) -> None:
    """Deny mode, Redis sink, ``audit_wait_seconds`` 0.15 s. Redis is stopped 0.3 s, less
    than the client's socket timeout (0.5 s): the decision "stalled" is refused UNAVAILABLE
    at 0.15 s, then its XADD succeeds. The stream must not show it as an acknowledged,
    answered decision (it must be absent or marked never acknowledged, as round 7 marks a
    write that failed)."""
    key_file = tmp_path / "audit.key"
    key_file.write_bytes(KEY.secret)
    assert redis.process is not None
    pid = redis.process.pid
    answers = []
    async with verdict_app(
        audit_sink="redis",
        audit_redis_url=redis.url,
        audit_mode="deny",
        audit_wait_seconds=0.15,
        audit_key_file=key_file,
    ) as app:
        assert app.server is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as channel:
            stub = pb_grpc.AuthorizationServiceStub(channel)
            answers.append(await decide(stub, "first"))
            os.kill(pid, signal.SIGSTOP)
            try:
                stalled = asyncio.ensure_future(decide(stub, "stalled"))
                await asyncio.sleep(0.3)
            finally:
                os.kill(pid, signal.SIGCONT)
            answers.append(await stalled)
            await asyncio.sleep(0.3)
            answers.append(await decide(stub, "third"))
    client = aioredis.from_url(redis.url)
    entries: Any = await client.xrange("verdict:audit")
    await client.aclose()
    lines = [fields[b"r"].decode() for _, fields in entries]
    assert answers == ["ALLOW", "UNAVAILABLE", "ALLOW"]
    assert verify(lines, KEY)[1] == []
    assert acknowledged_ids(lines) == ["first", "third"]


# --- Held: two servers over one Redis -------------------------------------------------------

GROUP_POLICY = '@id("members")\npermit(principal in Group::"g", action, resource);\n'


def member(grouped: bool) -> str:
    """User u, in Group g or in nothing."""
    parents = [{"type": "Group", "id": "g"}] if grouped else []
    return json.dumps(
        [
            {"uid": {"type": "Group", "id": "g"}, "attrs": {}, "parents": []},
            {"uid": {"type": "User", "id": "u"}, "attrs": {}, "parents": parents},
        ]
    )


def group_store(tmp_path: Path) -> Path:
    """A schema-less store "s" populated through the API (entities_source "writes")."""
    store = tmp_path / "stores" / "s"
    store.mkdir(parents=True)
    (store / "store.toml").write_text('validation = "off"\n')
    (store / "p.cedar").write_text(GROUP_POLICY)
    return store.parent


def ask(port: int, min_version: int = 0, timeout: float = 5.0) -> str:
    """User u viewing Doc d on a fresh connection: ALLOW, DENY or the refusal code."""
    decision = pb.IsAuthorizedRequest(
        policy_store_id="s",
        principal=pb.EntityUid(type="User", id="u"),
        action=pb.EntityUid(type="Action", id="view"),
        resource=pb.EntityUid(type="Doc", id="d"),
        min_entity_version=min_version,
    )
    with fresh_channel(port) as channel:
        stub = pb_grpc.AuthorizationServiceStub(channel)
        try:
            reply = stub.IsAuthorized(decision, timeout=timeout)
        except grpc.RpcError as refused:
            code = refused.code() if isinstance(refused, grpc.Call) else None
            return code.name if code is not None else "NO_STATUS"
    return pb.Decision.Name(reply.decision).removeprefix("DECISION_")


def put(port: int, text: str) -> int:
    """PutEntities to store "s"; the new version."""
    with fresh_channel(port) as channel:
        reply = epb_grpc.EntityServiceStub(channel).PutEntities(
            epb.PutEntitiesRequest(policy_store_id="s", entities_json=text), timeout=5
        )
    return int(reply.version)


@pytest.fixture
def two_servers(tmp_path: Path, redis: RedisProcess) -> Iterator[tuple[int, int]]:
    """Two `verdict serve` processes on one Redis (a grace of 1 s), each a cache."""
    stores = group_store(tmp_path)
    env = {"VERDICT_CACHE_GRACE_SECONDS": "1.0", "VERDICT_HEALTH_INTERVAL_SECONDS": "0.2"}
    args = ("--redis-url", redis.url, "--default-store", "s", "--workers", "1")
    with (
        running_server(stores, *args, env=env) as (_, port_a),
        running_server(stores, *args, env=env) as (_, port_b),
    ):
        yield port_a, port_b


def test_a_revoke_through_one_server_is_never_allowed_by_the_other(
    two_servers: tuple[int, int],
) -> None:
    """Five rounds: grant through A, B ALLOWs (its cache warmed by three asks), revoke through
    A; B with the revoke's version at once, and without it 0.1 s later, answers DENY."""
    port_a, port_b = two_servers
    wrong: list[str] = []
    for round_ in range(5):
        granted = put(port_a, member(True))
        assert ask(port_b, granted) == "ALLOW"
        for _ in range(3):
            assert ask(port_b) == "ALLOW"
        revoked = put(port_a, member(False))
        if (seen := ask(port_b, revoked)) != "DENY":
            wrong.append(f"round {round_} with version: {seen}")
        time.sleep(0.1)
        if (seen := ask(port_b)) != "DENY":
            wrong.append(f"round {round_} without version: {seen}")
    assert wrong == []


def after_grace(port: int, since: float) -> list[str]:
    """Answers of ``port`` (a fresh connection each: either worker) asked from the grace
    (1 s, plus a health poll) after ``since`` for 0.5 s; every one asked before is within the
    documented staleness bound (docs/redis.md, "Data loss bound")."""
    time.sleep(max(0.0, since + 1.3 - time.monotonic()))
    answers = []
    while time.monotonic() - since < 1.8:
        answers.append(ask(port))
    assert answers
    return answers


def test_redis_emptied_under_a_warm_cache_never_allows_past_the_grace(
    two_servers: tuple[int, int], redis: RedisProcess
) -> None:
    """A warm cache on B, then FLUSHALL: past the grace (1 s) every answer is UNAVAILABLE,
    never ALLOW (before it, the cache may answer the state before the flush, as documented)."""
    port_a, port_b = two_servers
    put(port_a, member(True))
    for _ in range(3):
        assert ask(port_b) == "ALLOW"
    client = redis_sync.Redis.from_url(redis.url)
    try:
        client.flushall()
        assert set(after_grace(port_b, time.monotonic())) == {"UNAVAILABLE"}
    finally:
        client.close()


def test_a_marker_of_the_wrong_type_never_stalls_a_decision(
    two_servers: tuple[int, int], redis: RedisProcess
) -> None:
    """Written through A, warm on B; the store's load marker is then replaced by a list (a
    key of the wrong type, written by someone else). For 3 s B is asked on fresh connections
    with a 2 s deadline: each answer is ALLOW (within the grace), INTERNAL or UNAVAILABLE,
    promptly; none waits out its deadline."""
    port_a, port_b = two_servers
    put(port_a, member(True))
    for _ in range(3):
        assert ask(port_b) == "ALLOW"
    client = redis_sync.Redis.from_url(redis.url)
    try:
        marker = "verdict:{s}:loaded"
        client.delete(marker)
        client.rpush(marker, "1")
        changed = time.monotonic()
        answers: list[tuple[float, str, float]] = []
        while time.monotonic() - changed < 3.0:
            started = time.monotonic()
            seen = ask(port_b, timeout=2.0)
            answers.append((round(started - changed, 2), seen, time.monotonic() - started))
    finally:
        client.close()
    slow = [(at, seen, round(took, 2)) for at, seen, took in answers if took > 1.0]
    assert slow == []
    late = [seen for at, seen, _ in answers if at > 1.3]
    assert late
    assert set(late) <= {"INTERNAL", "UNAVAILABLE"}, late
