"""Attack round 7: the decision audit log (docs/audit.md) against hostile callers, a hostile
log and an unlucky environment (audit file deleted or rotated away, a write that fails half
way, a stalled Redis). All fixed: line separators in records, hostile logs given to verify and
replay, the audit file deleted or rotated away, a write that fails half way, a stalled Redis
(unacknowledged records marked) and a forged segment (found with a signing key)."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis

from tests.audit.test_audit_server import request, sample
from tests.conftest import POLICIES
from tests.integration.test_cli import verdict
from tests.redis_support import RedisProcess
from tests.security.authn_support import verdict_app
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc
from verdict.audit.keys import AuditKey
from verdict.audit.verify import Unacknowledged, verify
from verdict.client import build_request
from verdict.model import EntityUid

DROPPED = {"result": "dropped"}


def records_in(folder: Path) -> list[dict[str, Any]]:
    """Every audit record in every file of ``folder``."""
    return [
        json.loads(line)
        for path in sorted(folder.iterdir())
        if path.is_file()
        for line in path.read_text(encoding="utf-8").splitlines()
    ]


async def decide(stub: Any, rid: str) -> str:
    """One IsAuthorized of the first lending case: its decision name, or the refusal code."""
    try:
        reply = await stub.IsAuthorized(request(0), metadata=(("x-request-id", rid),), timeout=5)
    except grpc.aio.AioRpcError as refused:
        return refused.code().name
    return pb.Decision.Name(reply.decision).removeprefix("DECISION_")


async def test_a_line_separator_in_an_entity_id_does_not_break_an_intact_log(
    tmp_path: Path,
) -> None:
    """A caller asks about principal ``a<U+2028>b<U+0085>c`` (a valid Cedar id). Nobody touches
    the file afterwards, so `verdict audit verify` must call it intact with 2 records."""
    path = tmp_path / "audit.jsonl"
    case = request(0)
    hostile = build_request(
        EntityUid("Borrower", "a\u2028b\x85c"),
        EntityUid(case.action.type, case.action.id),
        EntityUid(case.resource.type, case.resource.id),
        context={"mfa": True, "now": "2025-03-04T10:00:00Z"},
    )
    async with verdict_app(audit_sink="file", audit_file=path) as app:
        assert app.server is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as channel:
            stub = pb_grpc.AuthorizationServiceStub(channel)
            await stub.IsAuthorized(request(0), timeout=5)
            await stub.IsAuthorized(hostile, timeout=5)
    checked = await asyncio.to_thread(verdict, "audit", "verify", str(path))
    assert checked.returncode == 0, checked.stdout
    assert "2 records, intact" in checked.stdout


async def test_a_deleted_audit_file_does_not_swallow_answered_decisions(tmp_path: Path) -> None:
    """Deny mode. The audit file is deleted (an operator, a cleanup job) after the first
    decision; two more are answered. Every decision answered after the deletion must have a
    record on disk (or the call must be refused); the first one's record went with the file
    (what the Redis stream sink, off the machine, is for). They were written to the deleted
    file through the open descriptor, and lost."""
    path = tmp_path / "audit.jsonl"
    answers = []
    async with verdict_app(audit_sink="file", audit_file=path, audit_mode="deny") as app:
        assert app.server is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as channel:
            stub = pb_grpc.AuthorizationServiceStub(channel)
            answers.append(await decide(stub, "before"))
            path.unlink()
            answers.append(await decide(stub, "after-1"))
            answers.append(await decide(stub, "after-2"))
    recorded = {r["request_id"] for r in records_in(tmp_path)}
    ids = ("before", "after-1", "after-2")
    answered = {rid for rid, a in zip(ids, answers, strict=True) if a == "ALLOW"}
    assert answers[0] == "ALLOW"
    assert answered - {"before"} <= recorded, (answers, recorded)


async def test_an_externally_rotated_file_does_not_kill_the_writer(tmp_path: Path) -> None:
    """Block mode, rotation due on every batch (audit_file_max_seconds 0.01). An external
    logrotate moves audit.jsonl away after the first decision; two more are answered. Each
    answered decision must be written somewhere or counted as dropped, and stopping the
    server must not fail."""
    path = tmp_path / "audit.jsonl"
    dropped_before = sample("verdict_audit_records_total", DROPPED)
    answers: list[str] = []
    stop_error: BaseException | None = None
    try:
        async with verdict_app(
            audit_sink="file",
            audit_file=path,
            audit_mode="block",
            audit_file_max_seconds=0.01,
            audit_wait_seconds=0.5,
        ) as app:
            assert app.server is not None
            async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as channel:
                stub = pb_grpc.AuthorizationServiceStub(channel)
                answers.append(await decide(stub, "before"))
                path.rename(tmp_path / "audit.jsonl.1")
                await asyncio.sleep(0.05)  # the rotation is due
                answers.append(await decide(stub, "after-1"))
                answers.append(await decide(stub, "after-2"))
    except Exception as exc:  # what stop() raised
        stop_error = exc
    answered = answers.count("ALLOW")
    dropped = sample("verdict_audit_records_total", DROPPED) - dropped_before
    assert stop_error is None, repr(stop_error)
    assert len(records_in(tmp_path)) + dropped == answered, (answers, dropped)


async def test_a_write_that_fails_half_way_leaves_a_consistent_log(tmp_path: Path) -> None:
    """Deny mode. The second decision's write hits a full disk half way (RLIMIT_FSIZE just
    past the first record: EFBIG) and the call is refused UNAVAILABLE; space comes back and a
    third decision is answered. The log must verify and must not record the refused call as
    an answered decision."""
    path = tmp_path / "audit.jsonl"
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    answers = []
    async with verdict_app(
        audit_sink="file", audit_file=path, audit_mode="deny", audit_wait_seconds=0.5
    ) as app:
        assert app.server is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as channel:
            stub = pb_grpc.AuthorizationServiceStub(channel)
            # The limit is the process's, for every file: the log must be larger than the
            # captured stdout, or the server's own log lines would hit it first.
            for n in range(40):
                answers.append(await decide(stub, f"first-{n}"))
            resource.setrlimit(resource.RLIMIT_FSIZE, (path.stat().st_size + 100, hard))
            try:
                answers.append(await decide(stub, "refused"))
            finally:
                resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            answers.append(await decide(stub, "third"))
    assert answers == ["ALLOW"] * 40 + ["UNAVAILABLE", "ALLOW"]
    lines = (await asyncio.to_thread(path.read_text, encoding="utf-8")).splitlines()
    assert verify(lines)[1] == []
    assert "refused" not in {json.loads(line)["request_id"] for line in lines}


KEY = AuditKey.from_secret(b"round-7-signing-key-of-32-bytes!")


async def stall_during_one_decision(
    redis: RedisProcess, mode: str, tmp_path: Path
) -> tuple[list[str], list[str]]:
    """Decisions "first", "stalled" (Redis stopped with SIGSTOP past the client's socket
    timeout, then resumed) and "third" on a server writing its signed audit log to ``redis``
    in ``mode``: the answers and the stream's lines once the stalled XADDs have run."""
    key_file = tmp_path / "audit.key"
    key_file.write_bytes(KEY.secret)
    assert redis.process is not None
    pid = redis.process.pid
    answers = []
    async with verdict_app(
        audit_sink="redis",
        audit_redis_url=redis.url,
        audit_mode=mode,
        audit_wait_seconds=0.5,
        audit_key_file=key_file,
    ) as app:
        assert app.server is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as channel:
            stub = pb_grpc.AuthorizationServiceStub(channel)
            answers.append(await decide(stub, "first"))
            os.kill(pid, signal.SIGSTOP)
            try:
                stalled = asyncio.ensure_future(decide(stub, "stalled"))
                await asyncio.sleep(1.5)  # past the client's socket timeout: the write failed
            finally:
                os.kill(pid, signal.SIGCONT)
            answers.append(await stalled)
            await asyncio.sleep(0.3)
            answers.append(await decide(stub, "third"))
    client = aioredis.from_url(redis.url)
    entries: Any = await client.xrange("verdict:audit")
    await client.aclose()
    return answers, [fields[b"r"].decode() for _, fields in entries]


def acknowledged_ids(lines: list[str]) -> list[str]:
    """The request ids of the records the writer saw acknowledged, in stream order."""
    marks = Unacknowledged.of(lines, KEY)
    records = [json.loads(line) for line in lines]
    return [record["request_id"] for record in records if not marks.holds(record)]


async def test_a_stalled_redis_does_not_leave_a_refused_decision_in_the_stream(
    redis: RedisProcess, tmp_path: Path
) -> None:
    """Deny mode: the decision whose XADD stalls is refused UNAVAILABLE. The XADD already sent
    runs when Redis resumes (it cannot be taken back): the stream must still verify, with no
    seq repeated, and mark that record as never acknowledged, so that neither a reader nor
    replay takes the refused call for an answered decision."""
    answers, lines = await stall_during_one_decision(redis, "deny", tmp_path)
    assert answers == ["ALLOW", "UNAVAILABLE", "ALLOW"]
    assert verify(lines, KEY)[1] == []
    assert "stalled" in {json.loads(line)["request_id"] for line in lines}  # the XADD ran late
    assert acknowledged_ids(lines) == ["first", "third"]


async def test_a_stalled_redis_in_block_mode_records_the_decision_once(
    redis: RedisProcess, tmp_path: Path
) -> None:
    """Block mode: the stalled decision waits and is answered once Redis resumes; its record
    may be stored twice (the stalled XADD and the retry), but only once as acknowledged."""
    answers, lines = await stall_during_one_decision(redis, "block", tmp_path)
    assert answers == ["ALLOW", "ALLOW", "ALLOW"]
    assert verify(lines, KEY)[1] == []
    assert acknowledged_ids(lines) == ["first", "stalled", "third"]


UIDS = (
    '"principal":{"type":"Borrower","id":"alice"},"action":{"type":"Action","id":"view"},'
    '"resource":{"type":"Loan","id":"loan-1001"},"store":"lending"'
)


@pytest.mark.parametrize(
    "fields",
    [
        '"decision":"ALLOW","context_keys":5',
        '"decision":"ALLOW","context":[1],"context_keys":[]',
        '"decision":"DENY","context":{"mfa":true,"now":"x"},"determining":7',
    ],
    ids=["context_keys-int", "context-list", "determining-int"],
)
def test_replay_of_a_hostile_log_reports_instead_of_crashing(tmp_path: Path, fields: str) -> None:
    """One hostile record (valid JSON, wrong shapes): replay exits 0, 1 or 2 without a
    traceback."""
    log = tmp_path / "hostile.jsonl"
    log.write_text("{" + fields + "," + UIDS + "}\n", encoding="utf-8")
    result = verdict("audit", "replay", str(log), "--stores", str(POLICIES))
    assert "Traceback" not in result.stderr, result.stderr[-600:]
    assert result.returncode in (0, 1, 2)


async def forge_a_segment(tmp_path: Path, **settings: Any) -> Path:
    """A real log of one decision, plus one appended line forging an ALLOW for mallory under a
    fresh segment of its own (seq 0, its own anchor: what a restart starts)."""
    path = tmp_path / "audit.jsonl"
    async with verdict_app(audit_sink="file", audit_file=path, **settings) as app:
        assert app.server is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as channel:
            assert await decide(pb_grpc.AuthorizationServiceStub(channel), "real") == "ALLOW"
    real = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    forged = {
        **real,
        "principal": {"type": "Borrower", "id": "mallory"},
        "request_id": "forged",
        "segment": "file-20261203T000000Z-00000000",
        "seq": 0,
        "prev": "anchor:file-20261203T000000Z-00000000",
    }
    line = json.dumps(forged, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    with path.open("a", encoding="utf-8") as out:
        out.write(line + "\n")
    return path


async def test_verify_with_the_key_finds_a_forged_record_in_a_segment_of_its_own(
    tmp_path: Path,
) -> None:
    """With --audit-key-file, records are signed: the forged segment (its mac copied from the
    real record) fails `verify --key-file` at its line; the real record passes."""
    key = tmp_path / "audit.key"
    key.write_text(os.urandom(32).hex() + "\n")
    path = await forge_a_segment(tmp_path, audit_key_file=key)
    checked = await asyncio.to_thread(verdict, "audit", "verify", str(path), "--key-file", str(key))
    assert checked.returncode == 1, checked.stdout
    assert f"{path}:2: segment file-20261203T000000Z-00000000: mac does not match" in checked.stdout


async def test_an_unsigned_log_cannot_tell_a_forged_segment_and_says_so(tmp_path: Path) -> None:
    """Without a key the chain needs no secret: the same forgery verifies (the limit
    docs/audit.md states)."""
    path = await forge_a_segment(tmp_path)
    checked = await asyncio.to_thread(verdict, "audit", "verify", str(path))
    assert checked.returncode == 0, checked.stdout


@pytest.mark.parametrize("command", ["verify", "replay"])
def test_a_deeply_nested_line_is_reported_not_a_traceback(tmp_path: Path, command: str) -> None:
    """A log whose one line is 200,000 '[': verify names line 1 as not a record (exit 1),
    replay skips it (exit 0); neither prints a traceback."""
    log = tmp_path / "deep.jsonl"
    log.write_text("[" * 200_000 + "\n", encoding="utf-8")
    extra = ("--stores", str(POLICIES)) if command == "replay" else ()
    result = verdict("audit", command, str(log), *extra)
    assert "Traceback" not in result.stderr, result.stderr[-600:]
    if command == "verify":
        assert result.returncode == 1
        assert f"{log}:1:" in result.stdout
    else:
        assert result.returncode == 0


def test_verify_of_an_unreachable_stream_exits_unreadable(redis: RedisProcess) -> None:
    """The Redis that holds the stream is down: exit 2 (unreadable), no traceback, never 1
    (which tells a CI job the log was tampered with)."""
    url = redis.url
    redis.stop()
    result = verdict("audit", "verify", "--redis-url", url)
    assert "Traceback" not in result.stderr, result.stderr[-600:]
    assert result.returncode == 2


async def test_a_line_separator_in_a_rejected_context_key_does_not_break_the_log(
    tmp_path: Path,
) -> None:
    """A BatchAuthorize item whose context names an undeclared attribute ``k<U+2028>`` is
    refused by the schema and recorded as ERROR; the untouched log must still verify."""
    path = tmp_path / "audit.jsonl"
    bad = request(0)
    bad.context_json = '{"mfa":true,"now":"2025-03-04T10:00:00Z","k\\u2028":1}'
    async with verdict_app(audit_sink="file", audit_file=path) as app:
        assert app.server is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as channel:
            stub = pb_grpc.AuthorizationServiceStub(channel)
            reply = await stub.BatchAuthorize(
                pb.BatchAuthorizeRequest(requests=[request(0), bad]), timeout=5
            )
    assert len(reply.results) == 2
    lines = (await asyncio.to_thread(path.read_text, encoding="utf-8")).splitlines()
    assert verify(lines) == (2, [])
