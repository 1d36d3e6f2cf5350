"""A log reader that falls behind never holds decisions: `verdict serve` with its stderr a pipe
that is full and never read starts, answers every decision promptly while it logs, and stops
cleanly; the lines it queued come out once the pipe is read (telemetry/log_writer.py)."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import threading
import time

import grpc
import pytest

from tests.cases import lending_cases
from tests.conftest import POLICIES
from tests.processes import free_port
from tests.security.serve_process import fresh_channel, serve_command
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc
from verdict.client import build_request
from verdict.telemetry.log_writer import LineWriter

F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ (Linux), absent from older Pythons' fcntl


def full_pipe() -> tuple[int, int]:
    """A pipe of one page (4 KiB), filled: every write to it blocks until it is read. The
    caller closes both ends."""
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, F_SETPIPE_SZ, 4096)
    os.set_blocking(write_end, False)
    try:
        while True:
            os.write(write_end, b"#" * 512)
    except BlockingIOError:
        pass
    os.set_blocking(write_end, True)
    return read_end, write_end


def drained(read_end: int) -> tuple[threading.Thread, list[bytes]]:
    """A thread reading ``read_end`` to its end into the list returned."""
    chunks: list[bytes] = []

    def read() -> None:
        while chunk := os.read(read_end, 65536):
            chunks.append(chunk)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread, chunks


def wait_ready(process: subprocess.Popen[bytes], port: int) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        ready = grpc.channel_ready_future(channel)
        for _ in range(80):
            try:
                ready.result(timeout=0.25)
                return
            except grpc.FutureTimeoutError:
                assert process.poll() is None, f"verdict serve exited {process.returncode}"
    raise AssertionError("verdict serve did not start within 20 s with its stderr full")


def test_a_stderr_nobody_reads_never_holds_a_decision() -> None:
    cases = lending_cases()[:10]
    refused = build_request('Borrower::"b"', 'Action::"view"', 'Loan::"l"', store="lending")
    refused.context_json = "{not json"  # each refusal is a log line (request_rejected)
    port = free_port()
    read_end, write_end = full_pipe()
    process = subprocess.Popen(
        serve_command(POLICIES, port, "--default-store", "lending", "--workers", "1"),
        stdout=subprocess.DEVNULL,
        stderr=write_end,
        env={**os.environ, "VERDICT_SHUTDOWN_GRACE_SECONDS": "1"},
    )
    os.close(write_end)  # the server holds the only writer: the reader ends when it exits
    try:
        wait_ready(process, port)
        slowest = 0.0
        with fresh_channel(port) as channel:
            stub = pb_grpc.AuthorizationServiceStub(channel)
            for round_ in range(6):  # ~30 log lines a round: the pipe stays full
                for _ in range(30):
                    with pytest.raises(grpc.RpcError) as caught:
                        stub.IsAuthorized(refused, timeout=2)
                    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                for case in cases:
                    request = build_request(
                        case.principal,
                        case.action,
                        case.resource,
                        context=case.context,
                        store="lending",
                    )
                    started = time.monotonic()
                    reply = stub.IsAuthorized(request, timeout=5)
                    slowest = max(slowest, time.monotonic() - started)
                    allowed = reply.decision == pb.DECISION_ALLOW
                    assert allowed == (case.expect == "allow"), (round_, case)
                time.sleep(0.3)
        assert slowest < 1.0, f"a decision waited {slowest:.2f} s behind the log"
        reader, chunks = drained(read_end)
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
        reader.join(10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        os.close(read_end)
    text = b"".join(chunks).decode(errors="replace")
    assert '"event": "server_started"' in text
    assert '"event": "request_rejected"' in text


def test_the_writer_writes_at_once_when_it_can_and_drops_past_its_backlog() -> None:
    """In order and at once while the pipe has room; behind a full pipe, queued up to the
    backlog, the rest dropped and counted, and the count logged once the pipe drains."""
    read_end, write_end = full_pipe()
    stream = os.fdopen(write_end, "w")
    try:
        writer = LineWriter(stream, max_backlog=5)
        for n in range(8):
            writer.write(f"line {n}\n")  # the pipe is full: queued (5), then dropped (3)
        assert writer.dropped == 3
        reader, chunks = drained(read_end)
        assert writer.flush(5)
        writer.write("after\n")
        assert writer.flush(5)
    finally:
        stream.close()
    reader.join(5)
    os.close(read_end)
    lines = b"".join(chunks).decode().lstrip("#").splitlines()  # the filling had no newline
    assert lines[:5] == [f"line {n}" for n in range(5)]
    assert '"count": 3' in lines[5]
    assert '"event": "log_lines_dropped"' in lines[5]
    assert lines[6] == "after"


def test_the_backlog_is_bounded_in_bytes_too() -> None:
    """A few long lines (a reload failure's diagnostics) fill the backlog's bytes before its
    line count: the next one is dropped."""
    read_end, write_end = full_pipe()
    stream = os.fdopen(write_end, "w")
    try:
        writer = LineWriter(stream, max_backlog=100, max_backlog_bytes=10_000)
        for _ in range(3):
            writer.write("x" * 4_000 + "\n")
        assert writer.dropped == 1
        reader, chunks = drained(read_end)
        assert writer.flush(5)
    finally:
        stream.close()
    reader.join(5)
    os.close(read_end)
    text = b"".join(chunks).decode()
    assert text.count("x" * 4_000) == 2
    assert '"count": 1' in text
