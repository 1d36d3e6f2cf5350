"""Attack round 22: today's changes (sealed stores and pinned presence, deny-mode audit records,
BatchAuthorize error records, the non-blocking log writer), attacked through real ``verdict
serve`` processes on loopback, the in-process app on real gRPC, a real redis-server, the
``verdict`` CLI as subprocesses and real files. The start's race is timed with inotify on the
files the server reads (as rounds 16 and 21 did), so it lands on its first attempt.

Findings, all fixed in the same session (each a test asserting the correct behaviour; they
were strict xfails): 1 the embedded store's read is held to the entities version the load
found (``read_entities_file(version=)``, ``EntitiesChangedError``) and the start loads again
(``app.load_at_start``); 2 a CancelledError marks the pending records abandoned as a timeout
does; 3 the writer waits for a non-blocking stderr (EAGAIN: poll) and counts lines a stream
that is gone did not take; 4 without ``sys.stderr`` logs go to stdout (or nowhere).

1. **Wrong ALLOW: an entities.json edited and reverted while a server starts is served in its
   transient state, for good.** The start's load (``reload.load_settled``) hashes entities.json
   twice (the load, then ``_read_while_written``) and finds it unchanged; the embedded store
   then reads it again, a third time, apart from the load (``app.build_app`` ->
   ``build_entity_store`` -> ``MemoryEntityStore.from_files``), unpinned and never compared
   with the snapshot's ``entities_version``. An edit landing between the second hash and that
   read, reverted afterwards (A -> B -> A), leaves the server holding B's entities (alice an
   admin) under A's version: ALLOW, where A denies; every reload after says UNCHANGED (its
   hashes find A). The reload does check this (round 6's ``entities_read``), the start does
   not. A sealed store is safe: its reader checks the digest (held below).
2. **Wrong audit record: a decision whose caller gave up (its deadline passed, or it cancelled)
   while its record was being written is recorded as answered.** Deny mode, Redis sink,
   ``audit_wait_seconds`` 1 s, the caller's deadline 0.15 s, Redis stopped 0.3 s: the caller
   gets DEADLINE_EXCEEDED (no answer), the XADD then succeeds and the stream holds the
   decision as ALLOW, unmarked, its signed chain intact. ``audit/log.py``
   ``_record_or_refuse`` marks the pending records ``abandoned`` on TimeoutError only; the
   CancelledError of a call gRPC ended passes through, and the writer settles the batch as
   acknowledged.
3. **Log lines lost silently: behind a non-blocking stderr, every queued line is dropped
   uncounted.** When stderr's open file description is O_NONBLOCK (shared with a parent or a
   sibling that set it: a known effect of libuv tools on an inherited pipe or terminal) and its
   reader lags, the writer thread's ``os.write`` raises BlockingIOError, which ``_drain``
   (``telemetry/log_writer.py`` line 117) takes for "the stream is gone": the whole batch is
   discarded, ``verdict_log_lines_dropped_total`` is not incremented and no
   ``log_lines_dropped`` line is ever written (a partial write leaves half a line, glued to the
   next). Ten ``request_rejected`` lines logged while the pipe was full: none of them, nor any
   count, reached the reader once it drained.
4. **A refusal with no error at all: ``verdict serve --log-format json`` with stderr closed
   exits 1 and says nothing.** With fd 2 closed Python sets ``sys.stderr`` to None;
   ``WriterLoggerFactory(sys.stderr)`` calls ``None.fileno()`` (``log_writer.py`` line 44,
   from ``telemetry/logging.py`` line 34) and the traceback has nowhere to go. Before the
   change structlog's ``PrintLogger(None)`` logged to stdout and the server served.

Held (plain tests below): the same start race against a sealed store (the start is refused or
the store denies); a BatchAuthorize whose refused items are recorded as ``"decision":
"ERROR"`` with no principal, action or resource passes ``verdict audit verify`` and ``verdict
audit replay`` (exit 0, the ERROR items not replayed, no traceback).

Also read, no test: ``FileSink.written_unacknowledged`` cannot run (the file sink's write never
yields to the loop, so no caller's wait ends during it), but if it did, ``rotate_if_due`` ->
``_start_file`` would build the next chainer from ``last()`` of a successor that wrote nothing
(None) and drop its ``follows`` marks; a deny-mode segment marked only by the next record stays
unmarked when the server stops first (docs/audit.md says so). The log writer's poll-then-write
is not atomic across processes sharing one stderr (``--workers 2``): another writer can take the
pipe's free slot between a worker's poll and its write, which then blocks the event loop until
the reader reads again (a race, not reproduced deterministically here).
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis

from tests.audit.test_audit_server import request
from tests.conftest import POLICIES
from tests.processes import free_port
from tests.redis_support import RedisProcess, redis_fixture  # noqa: F401 (fixture)
from tests.security.authn_support import verdict_app
from tests.security.serve_process import fresh_channel, serve_command
from tests.security.test_attack_round7 import KEY, acknowledged_ids
from tests.security.test_attack_round10 import ALLOW, doc_decision, served
from tests.security.test_attack_round16 import NO_WATCH, reload_all
from tests.security.test_attack_round21 import file_reads, in_thread
from tests.security.test_log_backpressure import wait_ready
from tests.security.test_sealed_stores import verdict
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc
from verdict.audit.verify import verify
from verdict.client import build_request

ATTEMPTS = 3  # a race that did not land is tried again
ADMINS = {"type": "Group", "id": "admins"}
ADMINS_PERMIT = '@id("admins")\npermit (principal in Group::"admins", action, resource);\n'


def alice(admin: bool) -> str:
    """entities.json: User::"alice" (in Group::"admins" or not) and the group."""
    return json.dumps(
        [
            {
                "uid": {"type": "User", "id": "alice"},
                "attrs": {},
                "parents": [ADMINS] if admin else [],
            },
            {"uid": ADMINS, "attrs": {}, "parents": []},
        ]
    )


def two_stores(tmp_path: Path) -> Path:
    """Store "a" (the default): a permit for Group::"admins", alice not in it. Store "b":
    permit-all with an entities.json ``[]`` padded to 32 MiB, which the start hashes after a's
    entities.json (the window the race below uses: tens of ms)."""
    stores = tmp_path / "stores"
    for name in ("a", "b"):
        (stores / name).mkdir(parents=True)
        (stores / name / "store.toml").write_text('validation = "off"\n')
    (stores / "a" / "a.cedar").write_text(ADMINS_PERMIT)
    (stores / "a" / "entities.json").write_text(alice(admin=False))
    (stores / "b" / "b.cedar").write_text('@id("p")\npermit (principal, action, resource);\n')
    (stores / "b" / "entities.json").write_bytes(b"[]" + b" " * (32 << 20))
    return stores


def edited_and_reverted_during_a_start(stores: Path, tmp_path: Path) -> tuple[str, object]:
    """Start a server on ``stores`` while a/entities.json is replaced by B (alice an admin)
    just after the start's second hash of it (its read 2: the load's, then
    ``_read_while_written``'s), and put back as A once B was read. Alice's decision and the
    reload's change for "a" (or "refused" and None when the server did not start)."""
    target = stores / "a" / "entities.json"
    staged, back = tmp_path / "B.json", tmp_path / "A.json"
    staged.write_text(alice(admin=True))
    back.write_text(alice(admin=False))
    with file_reads(target, staged) as reads:

        def deploy() -> None:
            if not reads.wait("entities.json", 2, 60):
                return
            os.rename(staged, target)
            reads.wait("B.json", 1, 30)
            os.rename(back, target)

        writer = in_thread(deploy)
        try:
            with served(stores, "--default-store", "a", env=NO_WATCH) as (_, port, _log):
                writer.join(30)
                changes = {s.policy_store_id: s.change for s in reload_all(port).stores}
                decision = "ALLOW" if doc_decision(port).decision == ALLOW else "DENY"
                return decision, changes.get("a")
        except AssertionError:  # the server refused to start (wait_serving)
            return "refused", None
        finally:
            writer.join(30)
            assert json.loads(target.read_text())[0]["parents"] == []  # A again


# --- Finding 1: entities.json A -> B -> A around the start's read ------------------------------


def test_an_entities_file_edited_and_reverted_during_a_start_is_not_served(
    tmp_path: Path,
) -> None:
    outcomes = []
    for attempt in range(ATTEMPTS):
        stores = two_stores(tmp_path / f"try{attempt}")
        decision, change = edited_and_reverted_during_a_start(stores, tmp_path / f"try{attempt}")
        outcomes.append((decision, change))
        if decision == "ALLOW":
            break
    assert all(d != "ALLOW" for d, _ in outcomes), (
        f"alice ALLOWed by entities no longer on disk (reload: UNCHANGED): {outcomes}"
    )


def test_a_sealed_store_edited_and_reverted_during_a_start_is_not_served(tmp_path: Path) -> None:
    """The same race against sealed stores: the embedded store's read checks the digest."""
    stores = two_stores(tmp_path)
    sealed = verdict("seal", "--stores", str(stores))
    assert sealed.returncode == 0, sealed.stderr
    decision, change = edited_and_reverted_during_a_start(stores, tmp_path)
    assert decision != "ALLOW", change


# --- Finding 2: a caller that gave up while its record was written ------------------------------


async def decide_within(stub: Any, rid: str, deadline: float) -> str:
    """One IsAuthorized of the first lending case with a deadline: its decision name, or the
    refusal code."""
    try:
        reply = await stub.IsAuthorized(
            request(0), metadata=(("x-request-id", rid),), timeout=deadline
        )
    except grpc.aio.AioRpcError as refused:
        return refused.code().name
    return pb.Decision.Name(reply.decision).removeprefix("DECISION_")


async def test_a_decision_whose_caller_gave_up_is_not_recorded_as_answered(
    redis: RedisProcess, tmp_path: Path
) -> None:
    key_file = tmp_path / "audit.key"
    key_file.write_bytes(KEY.secret)
    assert redis.process is not None
    pid = redis.process.pid
    answers = []
    async with verdict_app(
        audit_sink="redis",
        audit_redis_url=redis.url,
        audit_mode="deny",
        audit_wait_seconds=1.0,
        audit_key_file=key_file,
    ) as app:
        assert app.server is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as channel:
            stub = pb_grpc.AuthorizationServiceStub(channel)
            answers.append(await decide_within(stub, "first", 5))
            os.kill(pid, signal.SIGSTOP)
            try:
                stalled = asyncio.ensure_future(decide_within(stub, "gave-up", 0.15))
                await asyncio.sleep(0.3)  # under the client's 0.5 s socket timeout: XADD runs
            finally:
                os.kill(pid, signal.SIGCONT)
            answers.append(await stalled)
            await asyncio.sleep(0.3)
            answers.append(await decide_within(stub, "third", 5))
    client = aioredis.from_url(redis.url)
    entries: Any = await client.xrange("verdict:audit")
    await client.aclose()
    lines = [fields[b"r"].decode() for _, fields in entries]
    assert answers == ["ALLOW", "DEADLINE_EXCEEDED", "ALLOW"]
    assert verify(lines, KEY)[1] == []
    assert acknowledged_ids(lines) == ["first", "third"]


# --- Findings 3-4: the log writer and odd stderrs ------------------------------------------------

REFUSED = build_request('Borrower::"b"', 'Action::"view"', 'Loan::"l"', store="lending")
REFUSED.context_json = "{not json"  # each refusal is a log line (request_rejected)


def serve_lending(port: int, **popen: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        serve_command(
            POLICIES, port, "--default-store", "lending", "--workers", "1", "--log-format", "json"
        ),
        stdout=popen.pop("stdout", subprocess.DEVNULL),
        stdin=subprocess.DEVNULL,
        env={**os.environ, "VERDICT_SHUTDOWN_GRACE_SECONDS": "1"},
        **popen,
    )


def refuse(port: int, *request_ids: str) -> None:
    with fresh_channel(port) as channel:
        stub = pb_grpc.AuthorizationServiceStub(channel)
        for rid in request_ids:
            with pytest.raises(grpc.RpcError):
                stub.IsAuthorized(REFUSED, timeout=3, metadata=(("x-request-id", rid),))


def test_log_lines_behind_a_non_blocking_stderr_are_written_or_counted() -> None:
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)  # the description the server inherits: O_NONBLOCK
    port = free_port()
    process = serve_lending(port, stderr=write_end)
    chunks: list[bytes] = []

    def pump(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if select.select([read_end], [], [], 0.05)[0]:
                chunks.append(os.read(read_end, 65536))

    try:
        wait_ready(process, port)
        pump(0.3)
        try:  # the reader lags: the pipe is full
            while True:
                os.write(write_end, b"#" * 512)
        except BlockingIOError:
            pass
        refuse(port, *(f"lost-{n}" for n in range(10)))
        time.sleep(0.3)
        pump(1.0)  # the reader catches up
        refuse(port, "after")
        pump(0.5)
        process.send_signal(signal.SIGTERM)
        process.wait(15)
        pump(0.3)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        os.close(read_end)
        os.close(write_end)
    text = b"".join(chunks).decode(errors="replace")
    assert '"request_id": "after"' in text  # the reader got what came after
    seen = {n for n in range(10) if f'"request_id": "lost-{n}"' in text}
    assert seen == set(range(10)) or '"event": "log_lines_dropped"' in text, sorted(seen)


def test_a_server_whose_stderr_is_closed_serves_or_says_why() -> None:
    port = free_port()
    process = serve_lending(port, stdout=subprocess.PIPE, preexec_fn=lambda: os.close(2))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            ready = grpc.channel_ready_future(channel)
            deadline = time.monotonic() + 30
            while process.poll() is None and time.monotonic() < deadline:
                try:
                    ready.result(timeout=0.25)
                    return  # serving
                except grpc.FutureTimeoutError:
                    continue
    finally:
        if process.poll() is None:
            process.kill()
        out, _ = process.communicate(timeout=10)
    assert out.strip(), f"exit {process.returncode}, nothing said"


# --- Held: BatchAuthorize error records through verify and replay -------------------------------


async def test_batch_error_records_pass_verify_and_replay(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    bad = request(0)
    bad.context_json = "{not json"
    async with verdict_app(audit_sink="file", audit_file=path, audit_mode="deny") as app:
        assert app.server is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as channel:
            stub = pb_grpc.AuthorizationServiceStub(channel)
            batch = pb.BatchAuthorizeRequest(requests=[bad, request(1), bad, request(2)])
            reply = await stub.BatchAuthorize(batch, timeout=5)
    assert [r.WhichOneof("outcome") for r in reply.results] == [
        "error",
        "response",
        "error",
        "response",
    ]
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["item"] for r in records] == [0, 1, 2, 3]
    assert [r["decision"] == "ERROR" for r in records] == [True, False, True, False]
    assert records[0]["principal"] is None
    assert records[0]["store"] == ""
    checked = verdict("audit", "verify", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "4 records, intact" in checked.stdout
    replayed = verdict("audit", "replay", str(path), "--stores", str(POLICIES))
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    # The two valid items sent context the lending store does not record; the ERROR items are
    # no decisions to replay.
    assert replayed.stdout.endswith("0 replayed, 0 would change\n"), replayed.stdout
    assert "Traceback" not in replayed.stderr
