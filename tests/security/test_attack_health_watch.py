"""A health Watch that never lets the server send (an HTTP/2 receive window of zero), opened by
a caller with no identity on the plaintext health port: health must still change, and SIGTERM
must still drain and stop the server."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.processes import free_port, verdict_server
from tests.redis_support import RedisProcess
from tests.security.test_attack_drain_signals import load_lending, served_on
from verdict.transport.connection_limits import HEALTH_MAX_STREAMS
from verdict.transport.health import HealthService

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS = 0, 1, 3, 4
REFUSED = struct.pack(">I", 0x7)  # REFUSED_STREAM
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1
INITIAL_WINDOW_SIZE = 0x4
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVING = health_pb2.HealthCheckResponse.SERVING


def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    """One HTTP/2 frame."""
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes([kind, flags])
        + struct.pack(">I", stream)
        + payload
    )


def literal(name: str, value: str) -> bytes:
    """An HPACK literal header field without indexing, new name, no Huffman (short strings)."""
    raw_name, raw_value = name.encode(), value.encode()
    assert max(len(raw_name), len(raw_value)) < 127
    return b"\x00" + bytes([len(raw_name)]) + raw_name + bytes([len(raw_value)]) + raw_value


@contextmanager
def stalled_watch(port: int, service: str = "", streams: int = 1) -> Iterator[socket.socket]:
    """``streams`` Watches of ``service`` on one connection from a client whose streams may
    receive nothing (initial window 0): the server's first status write can never complete.
    Open until the block ends."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        headers = b"".join(
            literal(name, value)
            for name, value in [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", "/grpc.health.v1.Health/Watch"),
                (":authority", f"127.0.0.1:{port}"),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
            ]
        )
        request = health_pb2.HealthCheckRequest(service=service).SerializeToString()
        message = b"\x00" + struct.pack(">I", len(request)) + request
        calls = b"".join(
            frame(HEADERS, END_HEADERS, stream, headers) + frame(DATA, END_STREAM, stream, message)
            for stream in range(1, 2 * streams, 2)
        )
        sock.sendall(
            PREFACE
            + frame(SETTINGS, 0, 0, struct.pack(">HI", INITIAL_WINDOW_SIZE, 0))
            + frame(SETTINGS, ACK, 0, b"")  # for the server's settings (sent on accept)
            + calls
        )
        time.sleep(0.5)  # the server has taken the call (ordering only)
        yield sock


def check(port: int, service: str = "") -> int:
    """The status a well-behaved client reads with Check (fresh channel)."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return int(stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status)


def test_a_stalled_watch_does_not_stop_the_drain() -> None:
    """With a stalled Watch of "" open on the health port, SIGTERM still turns "" NOT_SERVING
    (the Watch held the health service's lock for "" while its write waited forever, so the
    drain waited too: health stayed SERVING, balancers kept routing) and a second SIGTERM
    still ends the process with exit 0."""
    health_port = free_port()
    with verdict_server(
        "--health-listen", f"127.0.0.1:{health_port}", "--shutdown-drain-seconds", "120"
    ) as served:
        grpc.channel_ready_future(served.client._channel).result(timeout=20)
        assert check(health_port) == SERVING
        with stalled_watch(health_port):
            served.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 10
            while check(health_port) != NOT_SERVING:
                assert time.monotonic() < deadline, "health stayed SERVING after SIGTERM"
                time.sleep(0.05)
            served.process.send_signal(signal.SIGTERM)
            assert served.process.wait(30) == 0


def test_a_stalled_watch_does_not_stop_a_plain_sigterm() -> None:
    """No drain configured: SIGTERM with a stalled Watch open still stops the server, exit 0
    (the stop turns health NOT_SERVING first, and waited forever for the Watch's lock)."""
    health_port = free_port()
    with verdict_server("--health-listen", f"127.0.0.1:{health_port}") as served:
        grpc.channel_ready_future(served.client._channel).result(timeout=20)
        with stalled_watch(health_port):
            served.process.send_signal(signal.SIGTERM)
            assert served.process.wait(30) == 0


def test_a_stalled_watch_does_not_freeze_health_when_redis_stops(
    redis: RedisProcess, tmp_path: Path
) -> None:
    """With a stalled Watch of "" open, Redis stopping still turns "" NOT_SERVING once the
    grace ran out (the health monitor's update used to wait forever for the Watch's lock,
    and every later one behind it: "" said SERVING for good) and SERVING again once it is
    back."""
    load_lending(redis)
    assert redis.process is not None
    health_port = free_port()
    env = {"VERDICT_HEALTH_LISTEN": f"127.0.0.1:{health_port}"}
    env |= {"VERDICT_HEALTH_INTERVAL_SECONDS": "0.05", "VERDICT_CACHE_GRACE_SECONDS": "0.3"}
    env |= {"VERDICT_REDIS_TIMEOUT_SECONDS": "0.2"}
    with served_on(redis, tmp_path, **env), stalled_watch(health_port):
        assert check(health_port) == SERVING
        os.kill(redis.process.pid, signal.SIGSTOP)
        try:
            assert eventually(lambda: check(health_port) == NOT_SERVING)
        finally:
            os.kill(redis.process.pid, signal.SIGCONT)
        assert eventually(lambda: check(health_port) == SERVING)


def eventually(condition: Callable[[], bool], seconds: float = 15) -> bool:
    """Whether ``condition`` holds within ``seconds`` (polled)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


async def test_watch_sends_the_current_status_then_each_change() -> None:
    """The replacement keeps grpc.health.v1's contract: Watch answers the current status at
    once (SERVICE_UNKNOWN for a name never set) and then each change, not repeats; Check of
    an unknown name is NOT_FOUND; List is not offered."""
    service = HealthService()
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        await service.set("a", SERVING)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            watch = stub.Watch(health_pb2.HealthCheckRequest(service="a"))
            unknown = stub.Watch(health_pb2.HealthCheckRequest(service="b"))
            assert (await watch.read()).status == SERVING
            assert (await unknown.read()).status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
            await service.set("a", SERVING)  # no change: nothing sent
            await service.set("a", NOT_SERVING)
            assert (await watch.read()).status == NOT_SERVING
            await service.set("b", SERVING)
            assert (await unknown.read()).status == SERVING
            watch.cancel()
            unknown.cancel()
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await stub.Check(health_pb2.HealthCheckRequest(service="c"))
            assert missing.value.code() is grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.aio.AioRpcError) as listed:
                await stub.List(health_pb2.HealthListRequest())
            assert listed.value.code() is grpc.StatusCode.UNIMPLEMENTED
    finally:
        await server.stop(0)


def server_frames(sock: socket.socket, seconds: float = 1.0) -> list[tuple[int, int, bytes]]:
    """The (type, stream, payload) HTTP/2 frames the server sends within ``seconds``."""
    sock.settimeout(seconds)
    data = b""
    with contextlib.suppress(TimeoutError):
        while chunk := sock.recv(65536):
            data += chunk
    frames = []
    while len(data) >= 9:
        length = int.from_bytes(data[:3], "big")
        stream = int.from_bytes(data[5:9], "big") & 0x7FFFFFFF
        frames.append((data[3], stream, data[9 : 9 + length]))
        data = data[9 + length :]
    return frames


def test_the_health_port_bounds_the_streams_of_one_connection() -> None:
    """20 stalled Watch streams on one health-port connection: the server keeps at most
    HEALTH_MAX_STREAMS and refuses the rest (RST_STREAM REFUSED_STREAM), and well-behaved
    probes still get their answer. Without a bound, stalled streams cost ~2 KB each without
    end (100,000 of them on 4 connections took +170 MB): an unauthenticated memory flood."""
    health_port = free_port()
    with verdict_server("--health-listen", f"127.0.0.1:{health_port}") as served:
        grpc.channel_ready_future(served.client._channel).result(timeout=20)
        with stalled_watch(health_port, streams=20) as sock:
            refused = [s for t, s, p in server_frames(sock) if t == RST_STREAM and p == REFUSED]
            assert len(refused) >= 20 - HEALTH_MAX_STREAMS
            assert check(health_port) == SERVING


def test_the_main_port_bounds_the_streams_of_one_connection() -> None:
    """The same stalled streams on the main port (health is open there too, without identity):
    one connection keeps at most max_streams_per_connection of them (10 here) and gets the rest
    refused, while other callers' decisions go on."""
    with verdict_server(env={"VERDICT_MAX_STREAMS_PER_CONNECTION": "10"}) as served:
        grpc.channel_ready_future(served.client._channel).result(timeout=20)
        with stalled_watch(served.port, streams=40) as sock:
            refused = [s for t, s, p in server_frames(sock) if t == RST_STREAM and p == REFUSED]
            assert len(refused) >= 40 - 10
            assert check(served.port) == SERVING
            reply = served.client.is_authorized(
                "Employee::olivia",
                "Action::view",
                "Loan::loan-1001",
                context={"mfa": True, "now": "2025-03-04T10:00:00Z"},
            )
            assert reply.decision == 1  # ALLOW
