"""Attack round 3 on a running server: the shutdown path (refusing calls before grpc stops,
the audit log's last writes), the edge pipeline that wraps each method once, entity references
in every spelling Cedar reads, and BatchAuthorize and metadata abuse."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.cases import lending_cases
from tests.conftest import POLICIES
from tests.processes import free_port
from tests.redis_support import RedisProcess
from tests.security.authn_support import token_sha256, verdict_app, write_callers
from tests.security.input_server import Served as Served3
from tests.security.input_server import loop_held_while, outcome, serve_stores
from tests.security.serve_process import running_server, wait_serving
from tests.security.test_attack_drain_signals import load_lending
from tests.security.test_attack_health_watch import (
    ACK,
    DATA,
    END_HEADERS,
    END_STREAM,
    HEADERS,
    INITIAL_WINDOW_SIZE,
    PREFACE,
    RST_STREAM,
    SETTINGS,
    frame,
    literal,
    stalled_watch,
)
from tests.security.test_attack_stalls import STALL_BOUND
from tests.security.test_server_connections import LIMITS, NOFILE, disburse
from tests.stores import entity, write_store
from tests.workers_support import scraped_metric
from verdict._gen.verdict.v1 import admin_pb2 as apb
from verdict._gen.verdict.v1 import admin_pb2_grpc as apb_grpc
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc
from verdict.app import build_app
from verdict.client import VerdictClient, bearer, build_request
from verdict.config import Settings
from verdict.model import AuthorizationRequest, AuthorizationResult, Decision, EntityUid
from verdict.policy.reload import reload_stores
from verdict.store.redis_keys import DEFAULT_LAYOUT, uid_key
from verdict.telemetry.exposition import MAX_METRICS_CONNECTIONS, READ_TIMEOUT_SECONDS
from verdict.transport.overload import SHUTTING_DOWN_MESSAGE

PING, WINDOW_UPDATE = 6, 8
ALLOW_CASE = next(c for c in lending_cases() if c.expect == "allow")
ALLOW_REQUEST = build_request(
    ALLOW_CASE.principal, ALLOW_CASE.action, ALLOW_CASE.resource, context=ALLOW_CASE.context
)


@dataclass
class Served:
    """One `verdict serve` process (JSON log lines in ``log``) on a free loopback port."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def events(self, event: str) -> list[dict[str, object]]:
        """The log lines of ``event``, parsed."""
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            if f'"event": "{event}"' in line:
                found.append(json.loads(line))
        return found


@contextmanager
def serving(
    workdir: Path, *args: str, env: dict[str, str] | None = None, stores: Path = POLICIES
) -> Iterator[Served]:
    """`verdict serve` on ``stores`` (default store lending, one worker unless ``args`` say
    otherwise, JSON logs), ready to answer; killed after the block if still alive."""
    port = free_port()
    log = workdir / f"serve-{port}.log"
    command = [sys.executable, "-m", "verdict", "serve", "--stores", str(stores)]
    command += ["--default-store", "lending", "--listen", f"127.0.0.1:{port}"]
    command += ["--log-format", "json", *args]
    if "--workers" not in args:
        command += ["--workers", "1"]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stderr=sink, env={**os.environ, **(env or {})})
    try:
        wait_serving(process, port, log)
        yield Served(process, port, log)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


# --- 1. Shutdown -------------------------------------------------------------------------------


def test_audit_records_a_shutdown_cannot_write_are_counted_and_logged(
    redis: RedisProcess, tmp_path: Path
) -> None:
    """Block mode answers a decision once its record is queued. With the audit sink stalled
    (a Redis stream sink whose server stopped answering), five decisions are answered, then
    SIGTERM: the close waits ``audit_wait_seconds`` and stops the writer. Before the fix the
    records still queued vanished without a word (no log line, no count): answered
    decisions with no record and nothing to say so. Now every answered decision is either
    in the stream or counted in ``audit_records_lost``."""
    assert redis.process is not None
    env = {"VERDICT_AUDIT_REDIS_URL": redis.url, "VERDICT_REDIS_TIMEOUT_SECONDS": "0.3"}
    args = ("--audit-sink", "redis", "--audit-mode", "block")
    with serving(tmp_path, *args, env=env) as served:
        with VerdictClient(served.target, timeout=5, retries=0) as client:

            def allowed(calls: int) -> int:
                """How many of ``calls`` ALLOW_CASE decisions were ALLOW."""
                return sum(
                    client.is_authorized(
                        ALLOW_CASE.principal,
                        ALLOW_CASE.action,
                        ALLOW_CASE.resource,
                        context=ALLOW_CASE.context,
                    ).decision
                    == pb.DECISION_ALLOW
                    for _ in range(calls)
                )

            answered = allowed(3)
            deadline = time.monotonic() + 10
            while redis.cli("XLEN", "verdict:audit").strip() != "3":
                assert time.monotonic() < deadline, "the first records were never written"
                time.sleep(0.02)
            os.kill(redis.process.pid, signal.SIGSTOP)
            try:
                answered += allowed(5)
                served.process.send_signal(signal.SIGTERM)
                assert served.process.wait(30) == 0
            finally:
                os.kill(redis.process.pid, signal.SIGCONT)
        assert answered == 8
        written = int(redis.cli("XLEN", "verdict:audit").strip())
        lost = sum(int(str(e["records"])) for e in served.events("audit_records_lost"))
        assert written + lost >= answered, (written, lost)
        assert lost > 0


async def _closed_loop_until_terminated(served: Served, callers: int) -> list[str]:
    """``callers`` closed-loop callers without client retries (as a client with no retry
    policy: each sends its next call as soon as the last one ended); SIGTERM once 200 calls
    were answered; the final status of every call that ended after the signal."""
    ended: list[str] = []
    signalled: float | None = None
    answered = 0
    busy = asyncio.Event()

    async def caller() -> None:
        nonlocal answered
        options = [("grpc.use_local_subchannel_pool", 1), ("grpc.enable_retries", 0)]
        async with grpc.aio.insecure_channel(served.target, options=options) as channel:
            stub = pb_grpc.AuthorizationServiceStub(channel)
            while served.process.poll() is None:
                try:
                    await stub.IsAuthorized(ALLOW_REQUEST, timeout=5)
                    code = "OK"
                    answered += 1
                    if answered >= 200:
                        busy.set()
                except grpc.aio.AioRpcError as exc:
                    code = exc.code().name
                if signalled is not None:
                    ended.append(code)

    tasks = [asyncio.create_task(caller()) for _ in range(callers)]
    await asyncio.wait_for(busy.wait(), 30)
    signalled = time.monotonic()
    served.process.send_signal(signal.SIGTERM)
    await asyncio.to_thread(served.process.wait, 30)
    await asyncio.wait_for(asyncio.gather(*tasks), 30)
    return ended


@pytest.mark.xfail(
    strict=True,
    reason="grpc core's shutdown cancels the calls queued in it (CANCELLED); callers that "
    "keep sending through the shutdown keep ConcurrencyLimit.close from ever seeing the "
    "queue quiet, so after its 0.25 s cap server.stop() cancels what arrived last. Needs "
    "core to refuse them (REFUSED_STREAM/GOAWAY before the kill) or a way to stop the "
    "listener before the shutdown; until then run a drain behind a balancer and retry "
    "CANCELLED decisions",
)
def test_calls_sent_through_a_shutdown_are_refused_retryably_never_cancelled(
    tmp_path: Path,
) -> None:
    """16 closed-loop callers with no retry policy (a Node or Ruby client as configured in
    examples/, or any caller whose next request follows at once) keep calling while the
    server shuts down. docs/faults.md: "calls sent while it is down are refused
    (UNAVAILABLE), never silently dropped". Measured: 14-15 of the 16 calls in flight when
    grpc stopped came back CANCELLED, which no retry policy retries.

    The race is timing's: on a loaded machine one shutdown in many lets every caller read
    core's GOAWAY first (a CI run once saw no CANCELLED, which a strict xfail reads as
    fixed). So up to three shutdowns are watched: the gap shows if any of them cancels."""
    ended: list[str] = []
    for _ in range(3):
        with serving(tmp_path) as served:
            this_time = asyncio.run(_closed_loop_until_terminated(served, 16))
            assert served.process.wait(30) == 0
        assert this_time
        ended += this_time
        if "CANCELLED" in this_time:
            break
    assert "CANCELLED" not in ended, sorted(set(ended))


async def _watch_until_it_ends(target: str, seen: list[int], opened: asyncio.Event) -> str:
    """Watch "" on ``target``; each status into ``seen``; the status the stream ended with."""
    async with grpc.aio.insecure_channel(target) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        try:
            async for reply in watch:
                seen.append(reply.status)
                opened.set()
            return "OK"
        except grpc.aio.AioRpcError as exc:
            return exc.code().name


def test_an_open_health_watch_does_not_hold_the_stop_for_the_whole_grace(tmp_path: Path) -> None:
    """A health Watch never ends by itself, and anyone may open one on the main port (health
    is open without identity; grpc clients with client-side health checking hold one per
    channel). Before the fix the stop waited for it the whole ``shutdown_grace_seconds``
    (20 s here): every rollout took the full grace. Now the Watch is sent NOT_SERVING and
    ended, and the server exits at once."""
    health_port = free_port()
    args = ("--health-listen", f"127.0.0.1:{health_port}")
    with serving(tmp_path, *args, env={"VERDICT_SHUTDOWN_GRACE_SECONDS": "20"}) as served:

        async def scenario() -> tuple[list[str], list[int], list[int], float]:
            main_seen: list[int] = []
            health_seen: list[int] = []
            opened = [asyncio.Event(), asyncio.Event()]
            watches = [
                asyncio.create_task(_watch_until_it_ends(served.target, main_seen, opened[0])),
                asyncio.create_task(
                    _watch_until_it_ends(f"127.0.0.1:{health_port}", health_seen, opened[1])
                ),
            ]
            await asyncio.wait_for(asyncio.gather(*(o.wait() for o in opened)), 10)
            started = time.monotonic()
            served.process.send_signal(signal.SIGTERM)
            await asyncio.to_thread(served.process.wait, 30)
            took = time.monotonic() - started
            ended = await asyncio.wait_for(asyncio.gather(*watches), 10)
            return ended, main_seen, health_seen, took

        ended, main_seen, health_seen, took = asyncio.run(scenario())
        assert served.process.returncode == 0
    assert took < 5, f"the stop took {took:.1f} s"
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    assert main_seen[-1] == not_serving, main_seen
    assert health_seen[-1] == not_serving, health_seen
    assert set(ended) <= {"OK", "UNAVAILABLE", "CANCELLED"}


def stalled_calls(port: int, method: str, streams: int) -> socket.socket:
    """A connection holding ``streams`` calls of ``method`` that sent their headers and
    nothing more: no message, no half-close (the caller closes the socket)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    headers = b"".join(
        literal(name, value)
        for name, value in [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", method),
            (":authority", f"127.0.0.1:{port}"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
    )
    calls = b"".join(
        frame(HEADERS, END_HEADERS, stream, headers) for stream in range(1, 2 * streams, 2)
    )
    sock.sendall(PREFACE + frame(SETTINGS, 0, 0, b"") + frame(SETTINGS, ACK, 0, b"") + calls)
    return sock


def test_a_call_that_never_sends_its_request_does_not_hold_the_stop(tmp_path: Path) -> None:
    """One connection, no identity needed: 4 IsAuthorized calls that sent headers only. Before
    the fix the server waited the whole ``shutdown_grace_seconds`` (8 s here; measured 8.1 s)
    for them, though none was ever admitted: every rollout of every replica could be made
    that slow. Now the stop waits for Verdict's calls (none here), then gives grpc
    FINAL_GRACE_SECONDS."""
    env = {"VERDICT_SHUTDOWN_GRACE_SECONDS": "8"}
    with serving(tmp_path, env=env) as served:
        sock = stalled_calls(served.port, "/verdict.v1.AuthorizationService/IsAuthorized", 4)
        try:
            time.sleep(0.5)  # the server has taken the calls (ordering only)
            started = time.monotonic()
            served.process.send_signal(signal.SIGTERM)
            code = served.process.wait(30)
            took = time.monotonic() - started
        finally:
            sock.close()
    assert code == 0
    assert took < 5, f"the stop took {took:.1f} s"


def is_authorized_headers(port: int) -> bytes:
    """The HPACK block (literals, no table) opening an IsAuthorized call on ``port``."""
    return b"".join(
        literal(name, value)
        for name, value in [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/verdict.v1.AuthorizationService/IsAuthorized"),
            (":authority", f"127.0.0.1:{port}"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
    )


def unread_replies(port: int, streams: int) -> socket.socket:
    """A connection whose ``streams`` IsAuthorized calls each sent a whole request, from a
    client whose streams may receive nothing (initial window 0): no reply can be sent.
    Returns once the server answered every call."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    headers = is_authorized_headers(port)
    request = ALLOW_REQUEST.SerializeToString()
    message = b"\x00" + struct.pack(">I", len(request)) + request
    calls = b"".join(
        frame(HEADERS, END_HEADERS, stream, headers) + frame(DATA, END_STREAM, stream, message)
        for stream in range(1, 2 * streams, 2)
    )
    window = struct.pack(">HI", INITIAL_WINDOW_SIZE, 0)
    sock.sendall(PREFACE + frame(SETTINGS, 0, 0, window) + frame(SETTINGS, ACK, 0, b"") + calls)
    # Each reply's headers go out (flow control holds DATA alone): the server answered them.
    answered: set[int] = set()
    data, deadline = b"", time.monotonic() + 20
    while len(answered) < streams:
        assert time.monotonic() < deadline, f"answered streams: {sorted(answered)}"
        data += sock.recv(65536)
        while len(data) >= 9 and len(data) >= 9 + int.from_bytes(data[:3], "big"):
            if data[3] == HEADERS:
                answered.add(int.from_bytes(data[5:9], "big") & 0x7FFFFFFF)
            data = data[9 + int.from_bytes(data[:3], "big") :]
    return sock


@pytest.mark.parametrize("calls", ["decisions", "watches"])
def test_callers_that_never_read_do_not_hold_the_stop(tmp_path: Path, calls: str) -> None:
    """One connection, no identity needed, receive window 0: 4 IsAuthorized calls answered
    whose replies can never be sent, or 4 health Watches whose last status can never be sent.
    Before, the stop waited the whole grace for them (8 s here; measured 8.1 s for each).
    Now a decision's reply gets REPLY_MARGIN_SECONDS to go out (measured: the stop takes
    1.4 s), a Watch nothing past FINAL_GRACE_SECONDS (0.3 s)."""
    env = {"VERDICT_SHUTDOWN_GRACE_SECONDS": "8"}
    with serving(tmp_path, env=env) as served, ExitStack() as stack:
        if calls == "decisions":
            stack.callback(unread_replies(served.port, 4).close)
        else:
            stack.enter_context(stalled_watch(served.port, "", 4))
        started = time.monotonic()
        served.process.send_signal(signal.SIGTERM)
        code = served.process.wait(30)
        took = time.monotonic() - started
        settled = served.events("shutdown_calls_settled")
    assert code == 0
    assert took < 5, f"the stop took {took:.1f} s"
    unsent = [(e["calls"], e["replies_unsent"]) for e in settled]
    assert unsent == ([(4, 4)] if calls == "decisions" else [])


def test_calls_in_flight_at_the_stop_are_answered_while_request_less_calls_are_open(
    redis: RedisProcess, tmp_path: Path
) -> None:
    """The stop no longer waits for grpc's calls, so it must wait for Verdict's: a decision, a
    batch and an entity write, each waiting on a stalled Redis when SIGTERM arrives, with 4
    calls open that never sent their request. The server waits for the three (and for those
    alone: ``calls`` in its log), answers them once Redis resumes, stores the write, exits 0."""
    assert redis.process is not None
    load_lending(redis)
    env = {"VERDICT_CACHE_MAX_ENTRIES": "0", "VERDICT_REDIS_TIMEOUT_SECONDS": "10"}
    env |= {"VERDICT_REDIS_RETRIES": "0", "VERDICT_SHUTDOWN_GRACE_SECONDS": "20"}
    writer = entity("Employee", "stop-writer", WRITER_ATTRS, [("Role", "loan_officer")])
    answers: dict[str, object] = {}
    metrics_port = free_port()
    args = ("--redis-url", redis.url, "--metrics-listen", f"127.0.0.1:{metrics_port}")
    with serving(tmp_path, *args, env=env) as served:
        calls: dict[str, Callable[[VerdictClient], object]] = {
            "decision": _decide,
            "batch": _batch,
            "write": lambda client: client.put_entities([writer]).count,
        }
        assert _answer(served.target, calls["decision"]) == pb.DECISION_ALLOW  # warm
        sock = stalled_calls(served.port, "/verdict.v1.AuthorizationService/IsAuthorized", 4)
        os.kill(redis.process.pid, signal.SIGSTOP)  # each call below waits on Redis
        try:

            def answer(name: str, call: Callable[[VerdictClient], object]) -> None:
                answers[name] = _answer(served.target, call)

            threads = [threading.Thread(target=answer, args=item) for item in calls.items()]
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + 20
            while _admitted(metrics_port) < 1 + len(calls):  # the warm-up and the three
                assert time.monotonic() < deadline, "the calls were never admitted"
                time.sleep(0.05)
            served.process.send_signal(signal.SIGTERM)
            time.sleep(1.0)
            assert served.process.poll() is None, "the stop did not wait for the calls"
        finally:
            os.kill(redis.process.pid, signal.SIGCONT)
            sock.close()
        for thread in threads:
            thread.join(30)
        assert served.process.wait(30) == 0
        settled = served.events("shutdown_calls_settled")
    assert answers == {
        "decision": pb.DECISION_ALLOW,
        "batch": [pb.DECISION_ALLOW] * 3,
        "write": 1,
    }
    field = uid_key(EntityUid("Employee", "stop-writer"))
    assert redis.cli("HEXISTS", DEFAULT_LAYOUT.store("lending").entities, field).strip() == "1"
    assert [(e["calls"], e["still_running"], e["replies_unsent"]) for e in settled] == [(3, 0, 0)]


WRITER_ATTRS = {
    "name": "Stop Writer",
    "partner": {"__entity": {"type": "Partner", "id": "first-river-bank"}},
    "department": "Retail Lending",
    "approval_limit": 0,
    "suspended": False,
}


def _decide(client: VerdictClient) -> object:
    return client.send(ALLOW_REQUEST).decision


def _batch(client: VerdictClient) -> object:
    return [r.response.decision for r in client.batch([ALLOW_REQUEST] * 3).results]


def _admitted(metrics_port: int) -> float:
    """Calls the server admitted so far (``verdict_worker_calls_total``)."""
    return scraped_metric(metrics_port, "verdict_worker_calls_total")


def _answer(target: str, call: Callable[[VerdictClient], object]) -> object:
    """``call`` on a fresh client without retries: its result, or the gRPC status name."""
    with VerdictClient(target, timeout=20, retries=0) as client:
        try:
            return call(client)
        except grpc.RpcError as error:
            return error.code().name


async def test_a_reload_sent_during_the_stop_is_refused_retryably() -> None:
    """AdminService is never limited (an operator's reload must get through a flood of
    decisions), and was not refused at the stop either: a ReloadPolicies sent during one
    reloaded every store in a server on its way out. The stop waits for no call that starts
    after it began, so such a reload is refused like a decision, as retryable; health still
    answers."""
    async with verdict_app(policy_watch=False) as app:
        assert app.server is not None
        assert app.server.admission is not None
        await app.server.admission.close()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await apb_grpc.AdminServiceStub(channel).ReloadPolicies(
                    apb.ReloadPoliciesRequest(), timeout=5
                )
            health = health_pb2_grpc.HealthStub(channel)
            checked = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert refused.value.details() == SHUTTING_DOWN_MESSAGE
    assert checked.status == health_pb2.HealthCheckResponse.SERVING


class PartialMessages:
    """One HTTP/2 connection whose ``streams`` IsAuthorized calls each announce a message just
    under 4 MiB and send all of it but the last kilobyte, as fast as the server's flow
    control lets them; never the end. No identity: nothing of Verdict's runs before a unary
    call's message is complete."""

    MESSAGE = 4 * 1024 * 1024 - 100

    def __init__(self, port: int, streams: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setblocking(False)
        self.received = b""
        self.connection_window = 65535
        self.initial_window = 65535
        self.windows: dict[int, int] = {}
        self.sent: dict[int, int] = {}
        headers = is_authorized_headers(port)
        opening = PREFACE + frame(SETTINGS, 0, 0, b"")
        for stream in range(1, 2 * streams, 2):
            opening += frame(HEADERS, END_HEADERS, stream, headers)
            self.windows[stream] = self.initial_window
            self.sent[stream] = 0
        self._send(opening)

    def _send(self, data: bytes) -> None:
        self.sock.setblocking(True)
        self.sock.sendall(data)
        self.sock.setblocking(False)

    def pump(self) -> None:
        """Read what the server sent (settings, pings, window updates), send what fits."""
        try:
            while chunk := self.sock.recv(65536):
                self.received += chunk
        except BlockingIOError:
            pass
        while len(self.received) >= 9:
            length = int.from_bytes(self.received[:3], "big")
            if len(self.received) < 9 + length:
                break
            kind, flags = self.received[3], self.received[4]
            stream = int.from_bytes(self.received[5:9], "big") & 0x7FFFFFFF
            payload = self.received[9 : 9 + length]
            self.received = self.received[9 + length :]
            if kind == SETTINGS and not flags & ACK:
                for at in range(0, len(payload), 6):
                    key, value = struct.unpack(">HI", payload[at : at + 6])
                    if key == 0x4:  # INITIAL_WINDOW_SIZE
                        for known in self.windows:
                            self.windows[known] += value - self.initial_window
                        self.initial_window = value
                self._send(frame(SETTINGS, ACK, 0, b""))
            elif kind == PING and not flags & ACK:
                self._send(frame(PING, ACK, 0, payload))
            elif kind == WINDOW_UPDATE:
                increment = int.from_bytes(payload, "big") & 0x7FFFFFFF
                if stream == 0:
                    self.connection_window += increment
                elif stream in self.windows:
                    self.windows[stream] += increment
            elif kind == RST_STREAM:
                self.windows.pop(stream, None)
        out: list[bytes] = []
        for stream in self.windows:
            while len(out) < 64:
                left = self.MESSAGE + 5 - 1024 - self.sent[stream]
                size = min(self.windows[stream], self.connection_window, left, 16384)
                if size <= 0:
                    break
                prefix = b"\x00" + struct.pack(">I", self.MESSAGE) if not self.sent[stream] else b""
                out.append(frame(DATA, 0, stream, prefix + b"\x0a" * (size - len(prefix))))
                self.sent[stream] += size
                self.windows[stream] -= size
                self.connection_window -= size
        if out:
            self._send(b"".join(out))


def resident_mb(pid: int) -> int:
    """The resident memory of process ``pid`` in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    raise AssertionError("no VmRSS")


@pytest.mark.xfail(
    strict=True,
    reason="grpc core buffers each unary call's message until it is complete, up to "
    "max_message_bytes (4 MiB) for each of max_streams_per_connection (256) calls of every "
    "one of max_connections (1,000) connections: ~1 GiB a connection, before any step of "
    "Verdict's (the caller check included) runs. Needs a memory bound grpc.aio does not "
    "expose (a resource quota), or limits whose product is affordable (fewer streams per "
    "connection for large messages, a smaller max_message_bytes)",
)
def test_unfinished_request_messages_cannot_take_the_servers_memory(tmp_path: Path) -> None:
    """Four connections from a caller with no identity, 256 calls each, every call sending
    all but the last kilobyte of a 4 MiB message and then waiting: measured +780 MB of
    resident memory in 4 s (+1.2 GB with 8 connections in 8 s), nothing refused, nothing
    counted. A few dozen connections take any pod's memory limit."""
    with serving(tmp_path) as served:
        before = resident_mb(served.process.pid)
        flooders = [PartialMessages(served.port, 256) for _ in range(4)]
        try:
            deadline = time.monotonic() + 4
            while time.monotonic() < deadline:
                for flooder in flooders:
                    flooder.pump()
                time.sleep(0.0002)
            grown = resident_mb(served.process.pid) - before
        finally:
            for flooder in flooders:
                flooder.sock.close()
    assert grown < 256, f"+{grown} MB of resident memory"


# --- 2. The edge: who may see what ------------------------------------------------------------

TENANT_CALLERS = (
    '[[callers]]\nid = "lending-ops"\nmethods = ["admin"]\nstores = ["lending"]\n'
    f'token_sha256 = ["{token_sha256("lending-ops-token")}"]\n'
    '[[callers]]\nid = "root"\nmethods = ["admin"]\nstores = ["*"]\n'
    f'token_sha256 = ["{token_sha256("root-token")}"]\n'
)


async def test_a_store_limited_admin_is_told_about_its_own_stores_only(tmp_path: Path) -> None:
    """One store per tenant; the lending tenant's operator is granted ``admin`` on
    ``stores = ["lending"]``. Before the fix ListPolicyStores and ReloadPolicies answered
    every tenant's store: its id, policy version, policy count and (after a broken edit) its
    files' problems with their messages: nothing the callers file granted. Now they list the
    granted stores alone; a caller granted every store still sees all of them."""
    stores = tmp_path / "stores"
    shutil.copytree(POLICIES / "lending", stores / "lending")
    (stores / "acme-bank").mkdir()
    (stores / "acme-bank" / "p.cedar").write_text(
        '@id("acme-secret-rule") permit(principal, action, resource);\n'
    )
    callers = write_callers(tmp_path, TENANT_CALLERS)
    async with verdict_app(stores=stores, callers_file=callers, policy_watch=False) as app:
        assert app.server is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as channel:
            admin = apb_grpc.AdminServiceStub(channel)
            tenant = tuple(bearer("lending-ops-token"))
            listed = await admin.ListPolicyStores(
                apb.ListPolicyStoresRequest(), metadata=tenant, timeout=5
            )
            assert [s.policy_store_id for s in listed.stores] == ["lending"]
            (stores / "acme-bank" / "p.cedar").write_text("permit(principal, action, resource\n")
            reloaded = await admin.ReloadPolicies(
                apb.ReloadPoliciesRequest(), metadata=tenant, timeout=30
            )
            assert [s.policy_store_id for s in reloaded.stores] == ["lending"]
            root = tuple(bearer("root-token"))
            listed = await admin.ListPolicyStores(
                apb.ListPolicyStoresRequest(), metadata=root, timeout=5
            )
            assert [s.policy_store_id for s in listed.stores] == ["acme-bank", "lending"]
            assert listed.default_store == "lending"


def test_stalled_metrics_connections_are_bounded_and_timed_out() -> None:
    """The /metrics port needs no identity (Prometheus scrapes it; anything that reaches the
    pod can). Before the fix each connection that sent half a request and stalled held a
    thread and a descriptor for good (no read timeout, no bound): measured, ~240 of them took
    every descriptor of a 256-descriptor process and its gRPC port could accept nothing more
    (with --workers N the supervisor's, which it needs to restart workers). Now at most
    MAX_METRICS_CONNECTIONS are held at once (the rest closed at once), each for at most
    READ_TIMEOUT_SECONDS per read, and decisions are answered meanwhile."""
    metrics_port = free_port()
    metrics = f"127.0.0.1:{metrics_port}"
    args = ("--default-store", "lending", "--workers", "1", "--metrics-listen", metrics)
    half_request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
    with (
        running_server(POLICIES, *args, env=LIMITS, nofile=NOFILE) as (process, port),
        ExitStack() as stack,
    ):
        baseline = len(os.listdir(f"/proc/{process.pid}/fd"))
        for _ in range(MAX_METRICS_CONNECTIONS + 10):
            sock = stack.enter_context(
                socket.create_connection(("127.0.0.1", metrics_port), timeout=5)
            )
            sock.sendall(half_request)
        time.sleep(0.5)  # every socket accepted by now (ordering only)
        held = len(os.listdir(f"/proc/{process.pid}/fd")) - baseline
        assert held <= MAX_METRICS_CONNECTIONS + 2, f"{held} descriptors held"
        assert disburse(port) == pb.DECISION_ALLOW
        deadline = time.monotonic() + READ_TIMEOUT_SECONDS + 5
        while len(os.listdir(f"/proc/{process.pid}/fd")) - baseline > 2:
            assert time.monotonic() < deadline, "stalled metrics connections were never closed"
            time.sleep(0.1)
        assert process.poll() is None


async def _health_of(channel: grpc.aio.Channel, name: str) -> str:
    """What an anonymous Check of ``name`` answers: the status, or the error code."""
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
    except grpc.aio.AioRpcError as exc:
        return exc.code().name
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


async def test_open_health_is_no_oracle_of_other_tenants_stores(tmp_path: Path) -> None:
    """docs/security.md: "a store that does not exist is refused like one that is not granted
    (no existence oracle)". A caller with no identity at all asks health for
    ``store/acme-bank`` and ``store/no-such-bank``. Before the fix the answers differed
    (SERVING against NOT_FOUND), so any network peer could enumerate the tenants (partner
    banks) a deployment serves; now both are NOT_FOUND (tests/security/test_health_tenants.py
    for granted callers, Watch, the health port and reloads)."""
    stores = tmp_path / "stores"
    shutil.copytree(POLICIES / "lending", stores / "lending")
    (stores / "acme-bank").mkdir()
    (stores / "acme-bank" / "p.cedar").write_text("permit(principal, action, resource);\n")
    callers = write_callers(tmp_path, TENANT_CALLERS)
    async with verdict_app(stores=stores, callers_file=callers, policy_watch=False) as app:
        assert app.server is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as channel:
            real = await _health_of(channel, "store/acme-bank")
            invented = await _health_of(channel, "store/no-such-bank")
    assert real == invented, (real, invented)


# --- 3. Caller JSON ----------------------------------------------------------------------------


def olivia_views(context_json: str) -> pb.IsAuthorizedRequest:
    """A lending decision with ``context_json`` as its context."""
    return pb.IsAuthorizedRequest(
        principal=pb.EntityUid(type="Employee", id="olivia"),
        action=pb.EntityUid(type="Action", id="view"),
        resource=pb.EntityUid(type="Loan", id="loan-1001"),
        context_json=context_json,
    )


async def worst_wait(served: Served3, heavy: Callable[[], Awaitable[object]]) -> float:
    """The longest the event loop (server and client share it) was held while ``heavy`` ran
    (test_attack_stalls.worst_wait, on the lending store)."""
    await served.authz.IsAuthorized(ALLOW_REQUEST, timeout=5)
    worst, _ = await loop_held_while(outcome(heavy()))
    return worst


async def test_a_long_undeclared_context_key_does_not_stall_the_loop() -> None:
    """A context whose one attribute name is 1,000,000 characters (under the 1 MiB context
    limit; keys are not JSON values, so the value limits do not see it): Cedar refuses it,
    and the error names what is wrong, with a "did you mean" for undeclared attributes.
    Before the fix that suggestion ran difflib over the whole name: ~1-2 s of event loop for
    one request (every other call waited), four items in one batch ~4-8 s. A name that much
    longer than every declared one can never be suggested anything, so it is not compared."""
    context = json.dumps({"k" * 1_000_000: 1})
    async with serve_stores(POLICIES, default_store="lending") as served:
        batch = pb.BatchAuthorizeRequest(requests=[olivia_views(context) for _ in range(3)])
        worst = await worst_wait(served, lambda: served.authz.BatchAuthorize(batch, timeout=30))
        assert worst < STALL_BOUND, f"the event loop was held {worst:.2f} s by the batch"
        one = olivia_views(context)
        worst = await worst_wait(served, lambda: served.authz.IsAuthorized(one, timeout=30))
        assert worst < STALL_BOUND, f"the event loop was held {worst:.2f} s"
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await served.authz.IsAuthorized(one, timeout=30)
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert len(refused.value.details() or "") < 1000  # the name is cut in the message


# --- 4. BatchAuthorize -------------------------------------------------------------------------

# Two consistent versions of one store folder, edited together (a role renamed): in each, u is
# denied; only v1's policies with v2's entities let u in.
V1: dict[str, str | list[Any]] = {
    "p.cedar": '@id("approvers") permit(principal in Role::"approver", action, resource);\n',
    "entities.json": [entity("User", "u", parents=[("Role", "viewer")]), entity("Doc", "d")],
}
V2: dict[str, str | list[Any]] = {
    "p.cedar": '@id("approvers") permit(principal in Role::"approver-v2", action, resource);\n',
    "entities.json": [entity("User", "u", parents=[("Role", "approver")]), entity("Doc", "d")],
}


async def test_a_batch_spanning_a_hot_reload_never_mixes_policy_and_entity_versions(
    tmp_path: Path,
) -> None:
    """Every item is DENY under v1 and under v2. A reload of the folder (both files edited)
    lands after the batch took its policy snapshot and before its items read their slices.
    Before the fix the items were answered by v1's policies over v2's entities: ALLOW, a
    state that never existed on disk (docs: "calls in flight finish on the version they
    started with"). Now the batch is read again under the snapshot current after its read."""
    stores = tmp_path / "stores"
    write_store(stores, "s", V1)
    app = build_app(Settings(stores=stores, listen="127.0.0.1:0", policy_watch=False))
    assert app.reloader is not None
    items = [
        AuthorizationRequest(
            EntityUid("User", "u"), EntityUid("Action", "a"), EntityUid("Doc", "d")
        )
        for _ in range(10)
    ]
    first = await app.authorizer.authorize_batch(items)
    assert {a.decision for a in first if isinstance(a, AuthorizationResult)} == {Decision.DENY}
    write_store(stores, "s", V2)
    assert app.reloader.embedded is not None
    outcome = await asyncio.to_thread(
        reload_stores, stores, app.policies.current, app.reloader.embedded.read
    )
    batch = asyncio.create_task(app.authorizer.authorize_batch(items))
    await asyncio.sleep(0)  # the batch took its snapshot and is waiting on its first wave
    await app.reloader._install_entities(outcome)  # what reload() does, at this moment
    app.policies.swap(outcome.snapshot)
    answers = await batch
    assert all(isinstance(a, AuthorizationResult) for a in answers), answers
    assert {a.decision for a in answers if isinstance(a, AuthorizationResult)} == {Decision.DENY}
    assert {a.policy_version for a in answers if isinstance(a, AuthorizationResult)} == {
        outcome.snapshot.stores["s"].version
    }
