"""Idle and half-open connections cannot exhaust the server's file descriptors (issue 14.7);
every connection has a maximum age, so a call that never sends its request is cut."""

from __future__ import annotations

import asyncio
import select
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, contextmanager

import grpc

from tests.cases import BASE_CONTEXT
from tests.conftest import POLICIES
from tests.processes import free_port
from tests.security.serve_process import (
    fresh_channel,
    limit_open_files,
    running_server,
    serve_command,
)
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc
from verdict.client import build_request

# Nine bytes of the HTTP/2 client preface: the start of a real handshake that never finishes.
STALLED_PREFACE = b"PRI * HTT"
# The whole preface and an empty SETTINGS frame: a finished handshake, then silence.
PREFACE_AND_SETTINGS = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
NOFILE = 256
FLOOD = 300
LIMITS = {
    "VERDICT_MAX_CONNECTIONS": "100",
    "VERDICT_HANDSHAKE_TIMEOUT_SECONDS": "1",
    "VERDICT_IDLE_TIMEOUT_SECONDS": "1",
}


@contextmanager
def open_sockets(port: int, count: int, payload: bytes) -> Iterator[list[socket.socket]]:
    """``count`` raw TCP connections that each sent ``payload`` and then say nothing."""
    with ExitStack() as stack:
        sockets = []
        for _ in range(count):
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", port)))
            sock.sendall(payload)
            sockets.append(sock)
        yield sockets


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """True once the server has closed ``sock`` (EOF or reset), reading whatever it sent first."""
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        if select.select([sock], [], [], left)[0]:
            try:
                if not sock.recv(4096):
                    return True
            except ConnectionResetError:
                return True
    return False


def disburse(port: int) -> int:
    """One normal IsAuthorized call on a new connection; waits for the server up to 10 s."""
    request = build_request(
        "Employee::olivia", "Action::disburse", "Loan::loan-1005", context=BASE_CONTEXT
    )
    with fresh_channel(port) as channel:
        stub = pb_grpc.AuthorizationServiceStub(channel)
        response: pb.IsAuthorizedResponse = stub.IsAuthorized(
            request, timeout=10, wait_for_ready=True
        )
    return response.decision


def test_flood_of_stalled_handshakes_leaves_calls_working() -> None:
    """300 sockets stalled mid-preface under a 256-descriptor limit do not stop normal calls."""
    args = ("--default-store", "lending")
    with (
        running_server(POLICIES, *args, env=LIMITS, nofile=NOFILE) as (process, port),
        open_sockets(port, FLOOD, STALLED_PREFACE) as flood,
    ):
        assert disburse(port) == pb.DECISION_ALLOW
        assert all(closed_by_server(sock, within=10) for sock in flood)
        assert process.poll() is None


def test_idle_http2_connection_is_closed() -> None:
    """A connection that finished the HTTP/2 handshake but sends no call is closed when idle."""
    args = ("--default-store", "lending")
    with (
        running_server(POLICIES, *args, env=LIMITS) as (_, port),
        open_sockets(port, 1, PREFACE_AND_SETTINGS) as (idle,),
    ):
        assert closed_by_server(idle, within=10)


def test_serve_refuses_an_open_files_limit_below_its_connection_limit() -> None:
    """With a hard open-files limit too low for max_connections, serve exits 2 and says why."""
    result = subprocess.run(
        serve_command(POLICIES, free_port(), "--default-store", "lending"),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        preexec_fn=limit_open_files(NOFILE),
    )
    assert result.returncode == 2
    assert "open-files limit (256)" in result.stderr
    assert "VERDICT_MAX_CONNECTIONS" in result.stderr


AGED = {"VERDICT_MAX_CONNECTION_AGE_SECONDS": "1", "VERDICT_MAX_CONNECTION_AGE_GRACE_SECONDS": "1"}
IS_AUTHORIZED = "/verdict.v1.AuthorizationService/IsAuthorized"


async def _never_sends(port: int) -> str:
    """An IsAuthorized call (no deadline) whose request never comes: the status it ends with."""
    never = asyncio.Event()

    async def nothing() -> AsyncIterator[bytes]:
        await never.wait()
        yield b""

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        opener: grpc.aio.StreamUnaryMultiCallable[bytes, bytes] = channel.stream_unary(
            IS_AUTHORIZED
        )
        call = opener(nothing())
        try:
            await asyncio.wait_for(call, 20)
        except grpc.aio.AioRpcError as exc:
            return str(exc.code().name)
        except TimeoutError:
            call.cancel()
            return "still open after 20 s"
    return "OK"


def test_a_call_that_never_sends_its_request_is_cut_at_the_connection_age() -> None:
    """A caller opens IsAuthorized with no deadline and never sends the request: it held its
    stream (and 7 KiB of server memory) until it gave up, 256 of them per connection. Now
    the connection gets GOAWAY at its age and the call is cut after the grace."""
    with running_server(POLICIES, "--default-store", "lending", env=AGED) as (_, port):
        started = time.monotonic()
        ended = asyncio.run(_never_sends(port))
        assert ended not in ("OK", "still open after 20 s")
        assert time.monotonic() - started < 10


def test_calls_across_connection_ages_do_not_fail() -> None:
    """A client calling back to back through four connection ages (GOAWAY each second):
    every call answered, none failed; grpc clients move to a new connection by themselves."""
    with (
        running_server(POLICIES, "--default-store", "lending", env=AGED) as (_, port),
        fresh_channel(port) as channel,
    ):
        stub = pb_grpc.AuthorizationServiceStub(channel)
        request = build_request(
            "Employee::olivia", "Action::disburse", "Loan::loan-1005", context=BASE_CONTEXT
        )
        decisions: list[int] = []
        until = time.monotonic() + 4.5
        while time.monotonic() < until and len(decisions) < 20_000:
            decisions.append(stub.IsAuthorized(request, timeout=10).decision)
        assert len(decisions) > 100
        assert set(decisions) == {pb.DECISION_ALLOW}
